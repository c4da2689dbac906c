//! [`Stack`]: the real `apphost` running the connector guest, wired to the fake Microsoft 365 and
//! the fake PBX, all as processes on loopback in a private temporary directory.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::binaries::Binaries;
use crate::clients::{Connector, ConnectorStatus, FakeM365, FakePbx, HostControl};
use crate::node_host::{HostKind, NODE_HOST_LOG, NodeInstance, node_addresses, spawn_node_host};
use crate::process::{Process, tail};
use crate::wait::{START_DEADLINE, STATE_DEADLINE, wait_until};

/// Instance name in the generated `apphost.toml`.
pub const INSTANCE: &str = "e2e";
/// Instance domain (first path segment).
pub const DOMAIN: &str = "example.com";
/// The app name at the end of the App URL the PBX is given.
pub const APP_NAME: &str = "innovaphone-microsoft365";
/// Client id of the app registration the harness creates in the fake.
pub const CLIENT_ID: &str = "e2e-presence-app";
/// Plugin name (component file stem).
pub const PLUGIN: &str = "microsoft365";

/// What to start. `Default` is a host with the connector and nothing else.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The instance password (AppLogin shared secret).
    pub instance_password: String,
    /// The fake PBX, started after the host (it dials the host).
    pub pbx: Option<PbxOptions>,
    /// The fake Microsoft 365, started before the host (the guest signs in at start).
    pub m365: Option<M365Options>,
    /// Extra instance settings: key and TOML value text (e.g. `("pbx.licence", "\"X\"")`).
    pub settings: Vec<(String, String)>,
    /// Host log filter.
    pub log_filter: String,
    /// Colours in the host log (for the demo's terminal); off for test logs, which are grepped.
    pub ansi_logs: bool,
    /// Which host runs the connector (apphost unless a test asks for the Node host).
    pub host: HostKind,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            instance_password: "e2e-secret".into(),
            pbx: None,
            m365: None,
            settings: Vec::new(),
            log_filter: "info".into(),
            ansi_logs: false,
            host: HostKind::Apphost,
        }
    }
}

/// The fake PBX's population and nodes.
#[derive(Debug, Clone)]
pub struct PbxOptions {
    /// Master PBX name.
    pub master: String,
    /// Slave PBX names (each its own connection).
    pub slaves: Vec<String>,
    /// Users to generate (plain users, no pseudo objects).
    pub users: usize,
    /// Size of the connector licence pool (default: one per user).
    pub licences: Option<u32>,
    /// Password the PBX's App object uses; `None` means the instance password.
    pub password: Option<String>,
    /// Explicit user objects (fake-pbx `User` JSON) added right after start, on top of the
    /// generated ones; e.g. the same people as in the fake tenant.
    pub extra_users: Vec<Value>,
    /// Population seed.
    pub seed: u64,
}

impl Default for PbxOptions {
    fn default() -> Self {
        PbxOptions {
            master: "master".into(),
            slaves: Vec::new(),
            users: 20,
            licences: None,
            password: None,
            extra_users: Vec::new(),
            seed: 1,
        }
    }
}

/// A Teams communication user configured in `presence.accounts`, created in the fake.
#[derive(Debug, Clone)]
pub enum TeamsAccount {
    /// Signs in with username and password (ROPC).
    Password {
        /// Account name in the connector.
        name: String,
        /// UPN in the fake tenant.
        username: String,
        /// Password (any characters).
        password: String,
    },
    /// Signs in by device code; the harness creates `username` as an MFA user.
    DeviceCode {
        /// Account name in the connector.
        name: String,
        /// UPN that approves the code in the fake.
        username: String,
    },
}

/// The fake Microsoft 365 tenant.
#[derive(Debug, Clone, Default)]
pub struct M365Options {
    /// Generated users (`--populate`).
    pub populate: usize,
    /// Communication users, configured in the connector and created in the fake.
    pub accounts: Vec<TeamsAccount>,
    /// Switches merged into the fake's config before the host starts (snake_case fields).
    pub config: Option<Value>,
    /// Explicit users (`UserSpec` JSON), created before the host starts.
    pub users: Vec<Value>,
    /// Further app registrations (`AppReg` JSON, e.g. a confidential client with application
    /// roles), created before the host starts.
    pub apps: Vec<Value>,
}

/// Ports and URLs of a running host.
#[derive(Debug, Clone)]
struct HostAddrs {
    http: String,
    control: String,
}

/// A running end-to-end stack. Dropping it stops every process; if the thread is panicking
/// (a failed test) it prints every log and keeps the directory.
///
/// Keep a `Stack` on the thread that started it: children are also set to die with that
/// thread, so a killed test process leaves nothing behind.
pub struct Stack {
    dir: PathBuf,
    binaries: Binaries,
    options: StackOptions,
    m365: Option<(Process, FakeM365)>,
    host: Option<Process>,
    addrs: HostAddrs,
    pbx: Option<(Process, FakePbx)>,
    // Set by any failed wait or start-up: `Drop` then reports like for a panic.
    failed: Cell<bool>,
}

static STACK_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Stack {
    /// Starts fake Microsoft 365 (if configured), the host, then the fake PBX (if configured),
    /// and waits until each is ready (not until the PBX has logged in).
    pub fn start(options: StackOptions) -> Result<Stack> {
        let binaries = Binaries::get()?;
        let dir = std::env::temp_dir().join(format!(
            "e2e-{}-{}",
            std::process::id(),
            STACK_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plugins"))?;
        std::fs::copy(
            &binaries.guest_wasm,
            dir.join("plugins").join(format!("{PLUGIN}.wasm")),
        )
        .context("copying the guest into the stack's plugins directory")?;
        let mut stack = Stack {
            dir,
            binaries,
            options: options.clone(),
            m365: None,
            host: None,
            addrs: HostAddrs {
                http: "127.0.0.1:0".into(),
                control: "127.0.0.1:0".into(),
            },
            pbx: None,
            failed: Cell::new(false),
        };
        let started = (|| {
            if let Some(m) = &options.m365 {
                stack.start_m365(m)?;
            }
            stack.start_host()?;
            if let Some(p) = &options.pbx {
                stack.start_pbx(p)?;
            }
            Ok(())
        })();
        stack.note(started)?;
        Ok(stack)
    }

    /// Starts a stack, runs `test` on it and stops it. If `test` fails (or panics) every log
    /// is printed and the directory kept, which a plain `?` out of a test would not do.
    pub fn run(options: StackOptions, test: impl FnOnce(&mut Stack) -> Result<()>) -> Result<()> {
        let mut stack = Stack::start(options)?;
        let result = test(&mut stack);
        stack.note(result)
    }

    /// Marks the stack failed (logs printed, directory kept on drop) if `result` is an error.
    pub fn note<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.set(true);
        }
        result
    }

    /// The stack's private directory (config, data, plugins, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host's control API.
    pub fn host(&self) -> HostControl {
        HostControl {
            url: format!("http://{}", self.addrs.control),
        }
    }

    /// The connector instance through the host's public listener.
    pub fn connector(&self) -> Connector {
        Connector {
            url: format!("http://{}/{DOMAIN}/{INSTANCE}", self.addrs.http),
        }
    }

    /// `http://host:port` of the host's public listener (`/metrics`, `/healthz`).
    pub fn host_url(&self) -> String {
        format!("http://{}", self.addrs.http)
    }

    /// The App URL a PBX's App object is configured with.
    pub fn app_url(&self) -> String {
        format!("http://{}/{DOMAIN}/{INSTANCE}/{APP_NAME}", self.addrs.http)
    }

    /// The fake PBX's control API. Panics if the stack has no PBX (a test bug).
    pub fn pbx(&self) -> &FakePbx {
        &self
            .pbx
            .as_ref()
            .expect("this stack was started without a PBX")
            .1
    }

    /// The fake Microsoft 365. Panics if the stack has none (a test bug).
    pub fn m365(&self) -> &FakeM365 {
        &self
            .m365
            .as_ref()
            .expect("this stack was started without fake M365")
            .1
    }

    /// Operating-system pids of the running processes (fakes and host).
    pub fn pids(&self) -> Vec<u32> {
        let m365 = self.m365.as_ref().map(|(p, _)| p);
        let pbx = self.pbx.as_ref().map(|(p, _)| p);
        [m365, self.host.as_ref(), pbx]
            .into_iter()
            .flatten()
            .filter_map(Process::pid)
            .collect()
    }

    /// Everything the host has logged, over all its runs.
    pub fn host_log(&self) -> String {
        let log = match self.options.host {
            HostKind::Apphost => "apphost.log",
            HostKind::Node => NODE_HOST_LOG,
        };
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Waits until `probe` returns `Some`, failing early with the logs if a process died.
    pub fn wait_until<T>(
        &self,
        what: &str,
        mut probe: impl FnMut(&Stack) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut dead = None;
        let result = self.note(wait_until(what, STATE_DEADLINE, || {
            if let Err(e) = self.check_running() {
                // A dead process makes waiting pointless: stop at once and say why.
                dead = Some(e);
                return Ok(Some(None));
            }
            Ok(probe(self)?.map(Some))
        }))?;
        match (result, dead) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => self.note(Err(e.context(format!("while waiting for {what}")))),
            (None, None) => unreachable!("no value without a dead process"),
        }
    }

    /// Waits for the connector's `/status` to satisfy `check`; returns that status.
    pub fn wait_for_status(
        &self,
        what: &str,
        mut check: impl FnMut(&ConnectorStatus) -> bool,
    ) -> Result<ConnectorStatus> {
        let mut last = None;
        self.wait_until(what, |s| {
            let st = s.connector().status()?;
            let ok = check(&st);
            last = Some(st.clone());
            Ok(ok.then_some(st))
        })
        .with_context(|| format!("last /status: {last:?}"))
    }

    /// Waits until every PBX node shows `logged-in` in the fake and in the connector's /status.
    pub fn wait_for_pbx_logins(&self) -> Result<ConnectorStatus> {
        let names = self.pbx_names();
        self.wait_until("every PBX node logged in (fake PBX)", |s| {
            let nodes = s.pbx().nodes()?;
            Ok(names
                .iter()
                .all(|n| nodes.iter().any(|x| &x.name == n && x.state == "logged-in"))
                .then_some(()))
        })?;
        self.wait_for_status("every PBX logged in (connector /status)", |st| {
            names.iter().all(|n| st.logged_in(n).is_some())
        })
    }

    /// Waits until the connector has no Teams presence read due, queued or in flight (its
    /// `presence.reads.idle` in /status), e.g. the reconciliation it runs a settle time after
    /// creating a subscription. Until then a read may write a Teams change into the PBX before
    /// its notification arrives, so a test counting one `SetPresence` per change waits first.
    pub fn wait_for_presence_reads(&self) -> Result<()> {
        self.wait_until(
            "no presence read due or in flight (connector /status)",
            |s| {
                let st = s.connector().status_json()?;
                Ok((st["presence"]["reads"]["idle"] == true).then_some(()))
            },
        )
    }

    /// Master and slave names of the configured PBX.
    pub fn pbx_names(&self) -> Vec<String> {
        let p = self.options.pbx.as_ref().expect("no PBX configured");
        std::iter::once(p.master.clone())
            .chain(p.slaves.iter().cloned())
            .collect()
    }

    /// Fails if any started process has exited.
    pub fn check_running(&self) -> Result<()> {
        if let Some((p, _)) = &self.m365 {
            p.check_running()?;
        }
        if let Some(p) = &self.host {
            p.check_running()?;
        }
        if let Some((p, _)) = &self.pbx {
            p.check_running()?;
        }
        Ok(())
    }

    /// Stops the host gracefully (SIGTERM) and starts it again on the same data directory and
    /// ports; the PBX reconnects by itself.
    pub fn restart_host(&mut self) -> Result<()> {
        if let Some(h) = self.host.take() {
            h.stop();
        }
        let started = self.start_host();
        self.note(started)
    }

    /// Sets an instance setting (TOML value text) for the next host start, as an
    /// administrator's edit of `apphost.toml` before a restart would.
    pub fn set_setting(&mut self, key: &str, toml_value: &str) {
        self.options.settings.retain(|(k, _)| k != key);
        self.options
            .settings
            .push((key.to_string(), toml_value.to_string()));
    }

    /// Stops the host gracefully (SIGTERM) and leaves it down until [`Stack::start_host_again`]
    /// (e.g. to change the world while it is away).
    pub fn stop_host(&mut self) {
        if let Some(h) = self.host.take() {
            h.stop();
        }
    }

    /// Starts a host stopped by [`Stack::stop_host`] on the same data directory and ports.
    pub fn start_host_again(&mut self) -> Result<()> {
        let started = self.start_host();
        self.note(started)
    }

    /// Kills the host (SIGKILL, like a crash) and starts it again on the same data directory.
    pub fn crash_and_restart_host(&mut self) -> Result<()> {
        if let Some(h) = self.host.take() {
            h.kill();
        }
        let started = self.start_host();
        self.note(started)
    }

    /// Hot-swaps the guest: copies `wasm` over the plugin file (atomically, by rename) and
    /// waits until the host reports one more completed swap.
    pub fn swap_guest(&self, wasm: &Path) -> Result<()> {
        let before = self.host().instance(INSTANCE)?.swaps;
        let plugins = self.dir.join("plugins");
        // Not `.wasm`, so the watcher never sees a half-written component.
        let staging = plugins.join(format!(".{PLUGIN}.staging"));
        std::fs::copy(wasm, &staging).with_context(|| format!("copying {}", wasm.display()))?;
        std::fs::rename(&staging, plugins.join(format!("{PLUGIN}.wasm")))?;
        self.wait_until("the host to report the hot swap", |s| {
            Ok((s.host().instance(INSTANCE)?.swaps > before).then_some(()))
        })
    }

    /// Writes a copy of the guest that differs only by a custom section naming `tag`: a new
    /// component file (new hash, so the host swaps) with exactly the same behaviour. Lets tests
    /// hot-swap without a second build of the guest.
    pub fn guest_variant(&self, tag: &str) -> Result<PathBuf> {
        let mut wasm = std::fs::read(&self.binaries.guest_wasm)?;
        wasm.extend(custom_section("e2e-variant", tag.as_bytes()));
        let path = self.dir.join(format!("{PLUGIN}-{tag}.wasm"));
        std::fs::write(&path, wasm)?;
        Ok(path)
    }

    /// Drops a PBX node's connection and keeps it down until [`Stack::restore_pbx_connection`].
    pub fn kill_pbx_connection(&self, node: &str) -> Result<()> {
        self.pbx().kill(node)
    }

    /// Lets a killed PBX node dial again.
    pub fn restore_pbx_connection(&self, node: &str) -> Result<()> {
        self.pbx().restore(node)
    }

    /// Every process log, each with a header, for failure reports.
    pub fn all_logs(&self, last_lines: usize) -> String {
        let mut out = String::new();
        for name in ["fake-m365", "apphost", "node-host", "fake-pbx"] {
            let path = self.dir.join(format!("{name}.log"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                let _ = writeln!(
                    out,
                    "===== {} (last {last_lines} lines) =====\n{}",
                    path.display(),
                    tail(&text, last_lines)
                );
            }
        }
        out
    }

    fn start_m365(&mut self, m: &M365Options) -> Result<()> {
        let ca = self.dir.join("fake-m365-ca.pem");
        let mut cmd = Command::new(&self.binaries.fake_m365);
        cmd.args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .arg("--ca-out")
            .arg(&ca)
            .args(["--populate", &m.populate.to_string()]);
        let proc = Process::spawn("fake-m365", cmd, &self.dir.join("fake-m365.log"))?;
        let line = proc.wait_for_line("\"controlUrl\"", START_DEADLINE)?;
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("fake-m365 readiness line: {line}"))?;
        let text = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
        let client = FakeM365 {
            url: text("url"),
            control_url: text("controlUrl"),
            ca_file: ca,
            tenant_id: text("tenantId"),
        };
        // Graph must be able to post notifications to the host's plain-HTTP loopback listener;
        // the real Graph insists on HTTPS, so the fake allows this only when told.
        client.patch_config(json!({"allow_http_loopback": true}))?;
        if let Some(cfg) = &m.config {
            client.patch_config(cfg.clone())?;
        }
        client.add_app(json!({
            "clientId": CLIENT_ID,
            "displayName": "Connector presence (e2e)",
            "publicClient": true,
            "delegated": ["Presence.Read.All", "Presence.ReadWrite.All", "User.Read.All",
                          "Calendars.Read", "Contacts.Read", "offline_access"],
        }))?;
        for a in &m.accounts {
            let (username, password, mfa) = match a {
                TeamsAccount::Password {
                    username, password, ..
                } => (username, password.as_str(), false),
                TeamsAccount::DeviceCode { username, .. } => (username, "Passw0rd!", true),
            };
            client.add_user(json!({
                "displayName": username.split('@').next().unwrap_or(username),
                "userPrincipalName": username,
                "password": password,
                "teams": true,
                "mfaRequired": mfa,
            }))?;
        }
        for u in &m.users {
            client.add_user(u.clone())?;
        }
        for a in &m.apps {
            client.add_app(a.clone())?;
        }
        self.m365 = Some((proc, client));
        Ok(())
    }

    fn write_config(&self) -> Result<PathBuf> {
        let q = |s: &str| serde_json::to_string(s).expect("string"); // JSON strings are TOML strings
        let path = |p: &Path| q(&p.display().to_string());
        let (allow, ca_file, settings) = self.instance_settings();
        let allow: Vec<String> = allow.iter().map(|a| q(a)).collect();
        let extra_ca = ca_file
            .map(|ca| format!("extra_ca_file = {}\n", path(&ca)))
            .unwrap_or_default();
        let settings: String = settings
            .iter()
            .map(|(k, v)| format!("{} = {v}\n", q(k)))
            .collect();
        let config = format!(
            r#"# Generated by the e2e harness.
plugins_dir = {plugins}
watch_interval_ms = 200

[server]
listen = {listen}
control = {control}

[storage]
data_dir = {data}
master_key_file = {key}

[log]
format = "human"
filter = {filter}

[[instance]]
name = {INSTANCE:?}
domain = {DOMAIN:?}
plugin = {PLUGIN:?}
password = {password}
allow_outbound = [{allow}]
{extra_ca}
[instance.settings]
{settings}"#,
            plugins = path(&self.dir.join("plugins")),
            listen = q(&self.addrs.http),
            control = q(&self.addrs.control),
            data = path(&self.dir.join("data")),
            key = path(&self.dir.join("master.key")),
            filter = q(&self.options.log_filter),
            password = q(&self.options.instance_password),
            allow = allow.join(", "),
        );
        let file = self.dir.join("apphost.toml");
        std::fs::write(&file, config)?;
        Ok(file)
    }

    /// The instance's outbound allow-list, the extra CA file to trust and its settings (TOML
    /// value text), the same for whichever host runs it.
    fn instance_settings(&self) -> (Vec<String>, Option<PathBuf>, BTreeMap<String, String>) {
        let q = |s: &str| serde_json::to_string(s).expect("string"); // JSON strings are TOML strings
        let mut allow = Vec::new();
        let mut extra_ca = None;
        // Harness defaults first; the test's own settings replace them key by key.
        let mut settings: BTreeMap<String, String> = BTreeMap::new();
        settings.insert("pbx.master".into(), q(&self.master_name()));
        if let Some((_, m)) = &self.m365 {
            let authority = m.url.trim_start_matches("https://").to_string();
            allow.push(authority);
            extra_ca = Some(m.ca_file.clone());
            let accounts: Vec<Value> = self
                .options
                .m365
                .iter()
                .flat_map(|o| o.accounts.iter())
                .map(|a| match a {
                    TeamsAccount::Password {
                        name,
                        username,
                        password,
                    } => json!({"name": name, "username": username, "password": password}),
                    TeamsAccount::DeviceCode { name, .. } => {
                        json!({"name": name, "device-code": true})
                    }
                })
                .collect();
            // Graph calls go to the fake, but tokens are still requested for the real Graph
            // resource: the fake, like Entra ID, knows no other. Notifications come back to the
            // host's public listener.
            for (k, v) in [
                ("graph.login-url", m.url.clone()),
                ("graph.url", m.url.clone()),
                ("graph.resource", "https://graph.microsoft.com".to_string()),
                ("presence.public-url", format!("http://{}", self.addrs.http)),
                ("presence.tenant", m.tenant_id.clone()),
                ("presence.client-id", CLIENT_ID.to_string()),
                ("presence.accounts", Value::Array(accounts).to_string()),
            ] {
                settings.insert(k.into(), q(&v));
            }
        }
        for (k, v) in &self.options.settings {
            settings.insert(k.clone(), v.clone());
        }
        (allow, extra_ca, settings)
    }

    fn master_name(&self) -> String {
        self.options
            .pbx
            .as_ref()
            .map(|p| p.master.clone())
            .unwrap_or_else(|| "master".into())
    }

    fn start_host(&mut self) -> Result<()> {
        if self.addrs.http.ends_with(":0") {
            // The guest's public URL (where Graph posts notifications) goes into its settings
            // before the host starts, so the port is reserved here instead of chosen by the host.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            self.addrs.http = format!("127.0.0.1:{port}");
        }
        if self.options.host == HostKind::Node {
            return self.start_node_host();
        }
        let config = self.write_config()?;
        let mut cmd = Command::new(&self.binaries.apphost);
        cmd.arg("--config").arg(&config);
        if !self.options.ansi_logs {
            cmd.env("NO_COLOR", "1");
        }
        let proc = Process::spawn("apphost", cmd, &self.dir.join("apphost.log"))?;
        let line = proc.wait_for_line("control at http://", START_DEADLINE)?;
        // "metrics at http://A/metrics, control at http://B/instances"
        let between = |from: &str, to: &str| -> Result<String> {
            let rest = &line[line.find(from).context("unexpected host banner")? + from.len()..];
            Ok(rest[..rest.find(to).context("unexpected host banner")?].to_string())
        };
        let http = between("://", "/metrics")?;
        let control = between("control at http://", "/instances")?;
        // Later runs reuse the ports, so the PBX finds the restarted host at the same URL.
        self.addrs = HostAddrs { http, control };
        self.host = Some(proc);
        Ok(())
    }

    /// The Node host (examples/node-host) on the same instance, settings and ports.
    fn start_node_host(&mut self) -> Result<()> {
        let (allow, extra_ca, settings) = self.instance_settings();
        let settings: Vec<(String, String)> = settings.into_iter().collect();
        let proc = spawn_node_host(&NodeInstance {
            listen: &self.addrs.http,
            control: &self.addrs.control,
            dir: &self.dir,
            name: INSTANCE,
            domain: DOMAIN,
            plugin: PLUGIN,
            password: &self.options.instance_password,
            allow_outbound: &allow,
            settings: &settings,
            extra_ca: extra_ca.as_deref(),
            log: &self.options.log_filter,
        })?;
        let line = proc.wait_for_line("listening http=", START_DEADLINE)?;
        let (http, control) = node_addresses(&line)?;
        self.addrs = HostAddrs { http, control };
        self.host = Some(proc);
        Ok(())
    }

    fn start_pbx(&mut self, p: &PbxOptions) -> Result<()> {
        let password = p
            .password
            .clone()
            .unwrap_or_else(|| self.options.instance_password.clone());
        let mut cmd = Command::new(&self.binaries.fake_pbx);
        cmd.args(["--url", &self.app_url(), "--password", &password])
            .args(["--domain", DOMAIN, "--master", &p.master])
            .args([
                "--users",
                &p.users.to_string(),
                "--seed",
                &p.seed.to_string(),
            ])
            .args(["--control", "127.0.0.1:0"]);
        for s in &p.slaves {
            cmd.args(["--slave", s]);
        }
        if let Some(l) = p.licences {
            cmd.args(["--licences", &l.to_string()]);
        }
        let proc = Process::spawn("fake-pbx", cmd, &self.dir.join("fake-pbx.log"))?;
        let line = proc.wait_for_line("{\"control\"", START_DEADLINE)?;
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("fake-pbx readiness line: {line}"))?;
        let client = FakePbx {
            url: ready["control"]
                .as_str()
                .context("fake-pbx readiness line without control")?
                .to_string(),
        };
        // Short reconnect delays: a host restart or a refused login must not park the PBX for
        // the default 30 s maximum. This changes timing only, never behaviour.
        client.set_switches(json!({
            "backoff_base_ms": 100, "backoff_max_ms": 1000, "backoff_jitter_ms": 100
        }))?;
        if !p.extra_users.is_empty() {
            client.call("POST", "/users", Some(Value::Array(p.extra_users.clone())))?;
        }
        self.pbx = Some((proc, client));
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The PBX first, so the host does not log a burst of reconnect noise while stopping.
        if let Some((p, _)) = &self.pbx {
            p.kill();
        }
        if let Some(h) = &self.host {
            h.stop();
        }
        if let Some((p, _)) = &self.m365 {
            p.kill();
        }
        if std::thread::panicking() || self.failed.get() {
            eprintln!(
                "\n{}\nstack directory kept: {}",
                self.all_logs(200),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A custom section (id 0): valid at the end of a core module or a component.
fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut section = vec![0u8];
    leb128(body.len(), &mut section);
    section.extend(body);
    section
}

/// Fails unless `cond`, with a message; a readable `assert!` for `Result`-returning helpers.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if !cond {
        bail!(msg());
    }
    Ok(())
}

/// Waits for a fixed, short time. Only for letting something *not* happen (e.g. a refused PBX
/// staying refused over several retries); never a substitute for waiting on a condition.
pub fn settle(d: Duration) {
    std::thread::sleep(d);
}

/// The connector's own item (`teams:`) of a PBX user as the PBX stores it: (activity, note).
pub fn teams_item(stack: &Stack, guid: &str) -> Result<Option<(String, String)>> {
    let p = stack.pbx().presence(guid)?;
    Ok(p["stored"].as_array().and_then(|items| {
        items.iter().find(|i| i["contact"] == "teams:").map(|i| {
            (
                i["activity"].as_str().unwrap_or("").to_string(),
                i["note"].as_str().unwrap_or("").to_string(),
            )
        })
    }))
}

/// The activity of the connector's own item (`teams:`) of a PBX user; "" when unset.
pub fn teams_activity(stack: &Stack, guid: &str) -> Result<String> {
    Ok(teams_item(stack, guid)?
        .map(|(activity, _)| activity)
        .unwrap_or_default())
}

/// The fake Microsoft 365's subscriptions whose resource satisfies `resource`.
pub fn subscriptions_where(stack: &Stack, resource: impl Fn(&str) -> bool) -> Result<Vec<Value>> {
    let all = stack.m365().call("GET", "/subscriptions", None)?;
    Ok(all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["resource"].as_str().is_some_and(&resource))
        .collect())
}

/// The fake Microsoft 365's presence subscriptions (not the user-change or event ones).
pub fn presence_subscriptions(stack: &Stack) -> Result<Vec<Value>> {
    subscriptions_where(stack, |r| r.contains("communications/presences"))
}

/// The user ids a presence subscription watches (`id in ('a','b',...)`).
pub fn watched_ids(sub: &Value) -> std::collections::BTreeSet<String> {
    let r = sub["resource"].as_str().unwrap_or("");
    r.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
