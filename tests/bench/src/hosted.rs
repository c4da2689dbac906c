//! An in-process `apphost` with one instance, in a private temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The plugin file stem every bench host uses.
pub const PLUGIN: &str = "guest";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh private directory under the system temp dir (removed by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `bench-<pid>-<n>-<what>`.
    pub fn new(what: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "bench-{}-{}-{what}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the built guests are (run `make guest test-guests` first).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/bench lies two levels below the workspace root")
        .to_path_buf()
}

/// A built component: `tests/artifacts/<name>` or `plugins/<name>`.
pub fn artifact(relative: &str) -> Result<PathBuf> {
    let p = workspace_root().join(relative);
    if !p.is_file() {
        bail!(
            "{} missing: run `make guest test-guests` first",
            p.display()
        );
    }
    Ok(p)
}

/// Writes `apphost.toml` and `plugins/guest.wasm` into `dir`, for one instance.
pub fn prepare(
    dir: &Path,
    wasm: &Path,
    domain: &str,
    name: &str,
    password: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("plugins"))?;
    std::fs::copy(wasm, dir.join(format!("plugins/{PLUGIN}.wasm")))
        .with_context(|| format!("copying {}", wasm.display()))?;
    // A long watch interval: swaps happen when the bench asks, not when the poller notices.
    let config = format!(
        r#"
plugins_dir = "plugins"
watch_interval_ms = 3600000
[server]
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
[storage]
data_dir = "data"
master_key_file = "master.key"
[[instance]]
name = "{name}"
domain = "{domain}"
plugin = "{PLUGIN}"
password = "{password}"
"#
    );
    let path = dir.join("apphost.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Starts a host from `config`.
pub async fn start(config: &Path) -> Result<apphost::Host> {
    let config = apphost::HostConfig::load(config)?;
    apphost::Host::start(config).await
}

/// Stops a host, bounded: a host that does not stop in 10 s is left behind (the process ends
/// soon anyway), so the bench never hangs on shutdown.
pub async fn stop(host: apphost::Host) {
    let _ = tokio::time::timeout(Duration::from_secs(10), host.shutdown()).await;
}

/// Opens an inbound WebSocket to `ctx`'s guest without a socket, as a PBX dialling in would:
/// returns its id and the channel on which the guest's frames and close arrive.
pub fn open_socketless_websocket(
    ctx: &apphost::instance::InstanceContext,
) -> (
    u64,
    tokio::sync::mpsc::UnboundedReceiver<apphost::ws_conn::WsCommand>,
) {
    use apphost::bindings::{Event, WsDirection, WsOpen};
    let id = ctx.next_id();
    let open = WsOpen {
        id,
        direction: WsDirection::Inbound,
        path: "/".into(),
        headers: vec![],
        peer: "bench".into(),
    };
    let (commands, sent) = tokio::sync::mpsc::unbounded_channel();
    ctx.websockets.lock().expect("websockets").insert(
        id,
        apphost::instance::WsHandle {
            commands,
            open: open.clone(),
        },
    );
    ctx.deliver(Event::WsOpen(open));
    (id, sent)
}
