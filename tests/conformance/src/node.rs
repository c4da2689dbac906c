//! The runner for the Node host (`examples/node-host`), started as a `node` subprocess that
//! prints its listening addresses, then driven over loopback like `apphost`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::real::{RealHost, send};
use crate::{DOMAIN, INSTANCE, PASSWORD, test_guest};

/// `examples/node-host` in the workspace.
pub fn node_host_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node-host")
}

/// Whether the Node host can run: `node` found and `npm ci` done.
pub fn check_ready() -> Result<()> {
    let dir = node_host_dir();
    if !dir.join("node_modules/@bytecodealliance/jco").exists() {
        bail!(
            "the Node host's packages are missing: run `npm ci --prefix examples/node-host && npm run build --prefix examples/node-host`"
        );
    }
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("`node` (20 or newer) is not on PATH");
    }
    Ok(())
}

/// A Node host serving the test guest v1 as instance `t` in `test.local`.
pub struct NodeHost {
    child: Child,
    dir: PathBuf,
    base: String,
    control: String,
}

/// The Node host's configuration file for a fresh directory.
pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "listen": "127.0.0.1:0",
        "control": "127.0.0.1:0",
        "plugins_dir": "plugins",
        "data_dir": "data",
        "master_key_file": "secrets/master.key",
        "log": "warn",
        "instances": [{
            "name": INSTANCE,
            "domain": DOMAIN,
            "plugin": "test",
            "password": PASSWORD,
            "allow_outbound": ["127.0.0.1"],
            "settings": { "greeting": "hello" }
        }]
    })
}

impl NodeHost {
    /// Starts `node host.js --config <dir>/host.json` in a fresh `dir`.
    pub fn start(dir: &Path) -> Result<NodeHost> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("plugins"))?;
        std::fs::copy(test_guest("v1")?, dir.join("plugins/test.wasm"))?;
        std::fs::write(dir.join("host.json"), config_json().to_string())?;
        let (child, http, control) = spawn(&dir.join("host.json"))?;
        Ok(NodeHost {
            child,
            dir: dir.to_path_buf(),
            base: format!("http://{http}"),
            control: format!("http://{control}"),
        })
    }

    /// Stops the host.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `node host.js --config <config>` and waits for the line
/// `listening http=<addr> control=<addr>` on its standard output.
pub fn spawn(config: &Path) -> Result<(Child, String, String)> {
    let mut child = Command::new("node")
        .arg(node_host_dir().join("host.js"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting node")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening ") {
            let mut http = None;
            let mut control = None;
            for part in rest.split_whitespace() {
                if let Some(v) = part.strip_prefix("http=") {
                    http = Some(v.to_string());
                } else if let Some(v) = part.strip_prefix("control=") {
                    control = Some(v.to_string());
                }
            }
            // Keep draining stdout so the host never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok((
                child,
                http.context("no http= address")?,
                control.context("no control= address")?,
            ));
        }
    }
    let status = child.wait()?;
    bail!("the Node host exited ({status}) before listening")
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

impl RealHost for NodeHost {
    fn base(&self) -> String {
        self.base.clone()
    }

    async fn swap(&mut self) -> Result<()> {
        let plugins = self.dir.join("plugins");
        std::fs::copy(test_guest("v2")?, plugins.join("test.wasm.new"))?;
        std::fs::rename(plugins.join("test.wasm.new"), plugins.join("test.wasm"))?;
        control(&self.control, "reload").await
    }

    async fn restart(&mut self) -> Result<()> {
        control(&self.control, "restart").await
    }
}

async fn control(base: &str, what: &str) -> Result<()> {
    let url = format!("{base}/instances/{INSTANCE}/{what}");
    let answer = send("POST".into(), url, Vec::new()).await?;
    if answer.status != 200 {
        bail!(
            "control {what} answered {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}
