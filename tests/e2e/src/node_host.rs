//! The Node.js host (`examples/node-host`) in place of `apphost`: the same guest, the same
//! instance settings and the same fakes, so a test can show that a host written in another
//! language from the WIT alone runs the unmodified connector.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::binaries::workspace_root;
use crate::process::Process;

/// Which host runs the connector in a [`Stack`](crate::Stack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostKind {
    /// The Rust host, `apphost`.
    #[default]
    Apphost,
    /// The Node.js host, `node examples/node-host/host.js` (needs `make node-host` first).
    Node,
}

/// Log file name (in the stack directory) of the Node host.
pub const NODE_HOST_LOG: &str = "node-host.log";

/// What the Node host needs to know about the one instance the harness runs.
#[derive(Debug)]
pub struct NodeInstance<'a> {
    /// Public listener, `127.0.0.1:port`.
    pub listen: &'a str,
    /// Control listener, `127.0.0.1:port` (port 0 picks one).
    pub control: &'a str,
    /// The stack directory: plugins, data and master key live below it.
    pub dir: &'a Path,
    /// Instance name, domain, plugin and password.
    pub name: &'a str,
    /// Instance domain.
    pub domain: &'a str,
    /// Plugin file stem.
    pub plugin: &'a str,
    /// AppLogin password.
    pub password: &'a str,
    /// Hosts the guest may reach.
    pub allow_outbound: &'a [String],
    /// Settings as TOML value text (as the harness writes them for apphost).
    pub settings: &'a [(String, String)],
    /// A CA the outbound connections must trust besides the system's (the fake's test CA).
    pub extra_ca: Option<&'a Path>,
    /// Log level (`info`, `debug`...).
    pub log: &'a str,
}

/// The Node host's JSON configuration for `instance`.
pub fn node_config(instance: &NodeInstance) -> Value {
    let settings: Map<String, Value> = instance
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), toml_scalar(v)))
        .collect();
    json!({
        "listen": instance.listen,
        "control": instance.control,
        "plugins_dir": instance.dir.join("plugins"),
        "data_dir": instance.dir.join("data"),
        "master_key_file": instance.dir.join("master.key"),
        "watch_interval_ms": 200,
        "log": instance.log,
        "instances": [{
            "name": instance.name,
            "domain": instance.domain,
            "plugin": instance.plugin,
            "password": instance.password,
            "allow_outbound": instance.allow_outbound,
            "settings": settings,
        }],
    })
}

/// The harness writes settings as TOML value text; strings, numbers and booleans are valid JSON
/// too. Anything else is handed over as its text.
fn toml_scalar(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `examples/node-host/host.js`, checked to be ready to run.
pub fn node_host_script() -> Result<PathBuf> {
    let dir = workspace_root().join("examples/node-host");
    if !dir.join("node_modules/ws").is_dir() {
        bail!(
            "{}/node_modules is missing: run `make node-host` first (npm ci from the registry)",
            dir.display()
        );
    }
    Ok(dir.join("host.js"))
}

/// Starts the Node host on `config` (written to the stack directory); its output goes to
/// [`NODE_HOST_LOG`].
pub fn spawn_node_host(instance: &NodeInstance) -> Result<Process> {
    let script = node_host_script()?;
    let config = instance.dir.join("node-host.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&node_config(instance))?)?;
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg("--config").arg(&config);
    // Node's own way to trust one more CA, for fetch and for WebSocket dials alike.
    if let Some(ca) = instance.extra_ca {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    Process::spawn("node-host", cmd, &instance.dir.join(NODE_HOST_LOG))
}

/// Public and control addresses from the Node host's readiness line
/// (`listening http=A control=B`).
pub fn node_addresses(line: &str) -> Result<(String, String)> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    match (field("http="), field("control=")) {
        (Some(http), Some(control)) => Ok((http, control)),
        _ => bail!("unexpected Node host readiness line: {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keep_their_json_type_and_odd_toml_stays_text() {
        assert_eq!(toml_scalar("\"a b\""), json!("a b"));
        assert_eq!(toml_scalar("true"), json!(true));
        assert_eq!(toml_scalar("{ a = 1 }"), json!("{ a = 1 }"));
    }

    #[test]
    fn readiness_line_gives_both_addresses() {
        let (http, control) =
            node_addresses("listening http=127.0.0.1:8081 control=127.0.0.1:9902").unwrap();
        assert_eq!(
            (http.as_str(), control.as_str()),
            ("127.0.0.1:8081", "127.0.0.1:9902")
        );
        assert!(node_addresses("something else").is_err());
    }
}
