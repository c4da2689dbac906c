//! `apphost.toml`: parsing, defaults, validation and resolution of paths and setting references.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole host configuration, with paths already resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Public listener.
    pub server: ServerConfig,
    /// Where state lives and where the master key comes from.
    pub storage: StorageConfig,
    /// Directory holding `<plugin>.wasm` files.
    pub plugins_dir: PathBuf,
    /// Logging settings.
    pub log: LogConfig,
    /// Every configured instance.
    pub instances: Vec<InstanceConfig>,
    /// How often the plugins directory is polled for changed components.
    pub watch_interval_ms: u64,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public HTTP(S) listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key` turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Control listener (hot swap, status, log switches); loopback by default.
    pub control: SocketAddr,
    /// Largest accepted inbound request body.
    pub max_body_bytes: usize,
    /// Inbound requests not answered by the guest within this time get a 504.
    pub response_deadline_ms: u64,
    /// Inbound requests one instance may hold unanswered; more get a 503 with `Retry-After`
    /// (so a flood cannot grow the queue without bound: at most this many bodies wait).
    pub max_pending_requests: usize,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// sled database and compiled-artifact cache.
    pub data_dir: PathBuf,
    /// File with the 32-byte master key (base64); ignored when `APPHOST_MASTER_KEY` is set.
    pub master_key_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `human` or `json`.
    pub json: bool,
    /// Initial filter, e.g. `info,guest.app=debug`.
    pub filter: String,
}

/// One `[[instance]]`.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Instance name, second path segment.
    pub name: String,
    /// Domain, first path segment.
    pub domain: String,
    /// Component file stem in `plugins_dir`.
    pub plugin: String,
    /// Instance password, handed to the guest as `instance.password`.
    pub password: String,
    /// Outbound destinations: `host` (any port) or `host:port`.
    pub allow_outbound: Vec<String>,
    /// Extra PEM CA certificates trusted for this instance's outbound TLS.
    pub extra_ca_file: Option<PathBuf>,
    /// Linear-memory cap of one guest instance.
    pub memory_limit_mb: u64,
    /// Epoch deadline of one `handle` call.
    pub event_deadline_ms: u64,
    /// Largest outbound response body.
    pub max_response_bytes: usize,
    /// Resolved settings as the guest sees them (sorted, including `instance.*`).
    pub settings: BTreeMap<String, String>,
}

impl InstanceConfig {
    /// The URL path prefix routed to this instance.
    pub fn prefix(&self) -> String {
        format!("/{}/{}", self.domain, self.name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    plugins_dir: Option<String>,
    #[serde(default)]
    log: RawLog,
    #[serde(default, rename = "instance")]
    instances: Vec<RawInstance>,
    watch_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    control: Option<String>,
    max_body_bytes: Option<usize>,
    response_deadline_ms: Option<u64>,
    max_pending_requests: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    data_dir: String,
    master_key_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    domain: String,
    plugin: String,
    password: String,
    #[serde(default)]
    allow_outbound: Vec<String>,
    extra_ca_file: Option<String>,
    memory_limit_mb: Option<u64>,
    event_deadline_ms: Option<u64>,
    max_response_bytes: Option<usize>,
    #[serde(default)]
    settings: toml::Table,
}

impl HostConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses configuration text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let server = ServerConfig {
            listen: raw.server.listen.parse().context("server.listen")?,
            tls_cert: raw.server.tls_cert.as_deref().map(resolve),
            tls_key: raw.server.tls_key.as_deref().map(resolve),
            control: raw
                .server
                .control
                .as_deref()
                .unwrap_or("127.0.0.1:9901")
                .parse()
                .context("server.control")?,
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(4 << 20),
            response_deadline_ms: raw.server.response_deadline_ms.unwrap_or(30_000),
            max_pending_requests: raw.server.max_pending_requests.unwrap_or(4_096),
        };
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            bail!("server.tls_cert and server.tls_key must be given together");
        }
        let storage = StorageConfig {
            data_dir: resolve(&raw.storage.data_dir),
            master_key_file: raw.storage.master_key_file.as_deref().map(resolve),
        };
        if let Some(key_file) = &storage.master_key_file
            && is_inside(key_file, &storage.data_dir)
        {
            bail!("storage.master_key_file must be outside storage.data_dir");
        }
        let json = match raw.log.format.as_deref().unwrap_or("human") {
            "human" => false,
            "json" => true,
            other => bail!("log.format must be \"human\" or \"json\", not {other:?}"),
        };
        let mut instances = Vec::new();
        for r in raw.instances {
            let ctx = format!("instance {:?}", r.name);
            instances.push(resolve_instance(r, &resolve).context(ctx)?);
        }
        let mut seen = std::collections::HashSet::new();
        for i in &instances {
            if !seen.insert((i.domain.clone(), i.name.clone())) {
                bail!("instance {}/{} is configured twice", i.domain, i.name);
            }
            if !seen.insert((String::new(), i.name.clone())) {
                bail!("instance name {:?} is used twice", i.name);
            }
        }
        Ok(HostConfig {
            server,
            storage,
            plugins_dir: resolve(raw.plugins_dir.as_deref().unwrap_or("plugins")),
            log: LogConfig {
                json,
                filter: raw.log.filter.unwrap_or_else(|| "info".into()),
            },
            instances,
            watch_interval_ms: raw.watch_interval_ms.unwrap_or(500),
        })
    }
}

fn resolve_instance(r: RawInstance, resolve: &dyn Fn(&str) -> PathBuf) -> Result<InstanceConfig> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !segment_ok(&r.name) || !segment_ok(&r.domain) || !segment_ok(&r.plugin) {
        bail!("name, domain and plugin must be non-empty [A-Za-z0-9._-]");
    }
    let mut settings = BTreeMap::new();
    for (name, value) in &r.settings {
        settings.insert(
            name.clone(),
            setting_text(value, resolve).with_context(|| format!("setting {name:?}"))?,
        );
    }
    settings.insert("instance.name".into(), r.name.clone());
    settings.insert("instance.domain".into(), r.domain.clone());
    settings.insert("instance.password".into(), r.password.clone());
    Ok(InstanceConfig {
        name: r.name,
        domain: r.domain,
        plugin: r.plugin,
        password: r.password,
        allow_outbound: r.allow_outbound,
        extra_ca_file: r.extra_ca_file.as_deref().map(resolve),
        memory_limit_mb: r.memory_limit_mb.unwrap_or(64),
        event_deadline_ms: r.event_deadline_ms.unwrap_or(2_000),
        max_response_bytes: r.max_response_bytes.unwrap_or(16 << 20),
        settings,
    })
}

/// Scalars as text, tables and arrays as JSON, `env:`/`file:` references resolved.
fn setting_text(value: &toml::Value, resolve: &dyn Fn(&str) -> PathBuf) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => {
            if let Some(var) = s.strip_prefix("env:") {
                std::env::var(var).with_context(|| format!("environment variable {var} not set"))?
            } else if let Some(file) = s.strip_prefix("file:") {
                let path = resolve(file);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            } else {
                s.clone()
            }
        }
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => serde_json::to_string(other)?,
    })
}

/// Whether `path` lies under `dir`, compared on normalised absolute paths (neither needs to exist).
fn is_inside(path: &Path, dir: &Path) -> bool {
    fn normalise(p: &Path) -> PathBuf {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    }
    normalise(path).starts_with(normalise(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings_and_rejects_key_inside_data_dir() {
        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("APPHOST_TEST_SETTING", "from-env") };
        let text = r#"
            plugins_dir = "p"
            [server]
            listen = "127.0.0.1:0"
            [storage]
            data_dir = "data"
            master_key_file = "master.key"
            [[instance]]
            name = "a"
            domain = "example.com"
            plugin = "x"
            password = "pw"
            [instance.settings]
            plain = "abc"
            number = 42
            table = { k = [1, 2] }
            secret = "env:APPHOST_TEST_SETTING"
        "#;
        let cfg = HostConfig::parse(text, Path::new("/etc/app")).unwrap();
        let s = &cfg.instances[0].settings;
        assert_eq!(s["plain"], "abc");
        assert_eq!(s["number"], "42");
        assert_eq!(s["table"], r#"{"k":[1,2]}"#);
        assert_eq!(s["secret"], "from-env");
        assert_eq!(s["instance.password"], "pw");
        assert_eq!(cfg.plugins_dir, Path::new("/etc/app/p"));
        let bad = text.replace("\"master.key\"", "\"data/master.key\"");
        assert!(HostConfig::parse(&bad, Path::new("/etc/app")).is_err());
    }
}
