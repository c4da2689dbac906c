//! The runner for `apphost`, started in this process on loopback in a fresh directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::real::{RealHost, send};
use crate::{DOMAIN, INSTANCE, PASSWORD, test_guest};

/// An `apphost` serving the test guest v1 as instance `t` in `test.local`.
pub struct AppHost {
    host: Option<apphost::Host>,
    dir: PathBuf,
    base: String,
}

fn config_text() -> String {
    format!(
        r#"
plugins_dir = "plugins"
watch_interval_ms = 3600000
[server]
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
[storage]
data_dir = "data"
master_key_file = "secrets/master.key"
[log]
filter = "warn"
[[instance]]
name = "{INSTANCE}"
domain = "{DOMAIN}"
plugin = "test"
password = "{PASSWORD}"
allow_outbound = ["127.0.0.1"]
memory_limit_mb = 32
event_deadline_ms = 2000
[instance.settings]
greeting = "hello"
"#
    )
}

impl AppHost {
    /// Starts a host in `dir` (created empty).
    pub async fn start(dir: &Path) -> Result<AppHost> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("plugins"))?;
        std::fs::copy(test_guest("v1")?, dir.join("plugins/test.wasm"))?;
        std::fs::write(dir.join("apphost.toml"), config_text())?;
        let config = apphost::HostConfig::load(&dir.join("apphost.toml"))?;
        let host = apphost::Host::start(config)
            .await
            .context("apphost starts")?;
        let base = format!("http://{}", host.http_addr);
        Ok(AppHost {
            host: Some(host),
            dir: dir.to_path_buf(),
            base,
        })
    }

    /// Stops the host.
    pub async fn stop(mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RealHost for AppHost {
    fn base(&self) -> String {
        self.base.clone()
    }

    async fn swap(&mut self) -> Result<()> {
        let plugins = self.dir.join("plugins");
        std::fs::copy(test_guest("v2")?, plugins.join("test.wasm.new"))?;
        std::fs::rename(plugins.join("test.wasm.new"), plugins.join("test.wasm"))?;
        let host = self.host.as_ref().context("host stopped")?;
        host.reload(INSTANCE).await?;
        Ok(())
    }

    /// apphost restarts a guest only after a trap, as in production: the runner sends the test
    /// guest's `/poison` route, which traps on every attempt and is dead-lettered with a 500.
    async fn restart(&mut self) -> Result<()> {
        let url = format!("{}/{DOMAIN}/{INSTANCE}/poison", self.base);
        let answer = send("GET".into(), url, Vec::new()).await?;
        if answer.status != 500 {
            bail!("/poison answered {}, expected 500", answer.status);
        }
        Ok(())
    }
}
