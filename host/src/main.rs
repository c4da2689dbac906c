//! `apphost --config FILE` runs the host; `--check` validates the configuration and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apphost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut config_path = None;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                config_path = Some(PathBuf::from(args.next().context("--config needs a file")?))
            }
            "--check" => check = true,
            "--help" | "-h" => {
                println!("usage: apphost [--check] --config apphost.toml");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let path = config_path.unwrap_or_else(|| PathBuf::from("apphost.toml"));
    let config = apphost::config::HostConfig::load(&path)?;
    if check {
        check_plugins(&config)?;
        println!(
            "{}: ok ({} instances)",
            path.display(),
            config.instances.len()
        );
        return Ok(());
    }
    apphost::logging::init(config.log.json, &config.log.filter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let host = apphost::host::Host::start(config.clone()).await?;
        let scheme = if host.tls { "https" } else { "http" };
        for i in &config.instances {
            println!(
                "instance {} at {scheme}://{}{}/",
                i.name,
                host.http_addr,
                i.prefix()
            );
        }
        println!(
            "metrics at {scheme}://{}/metrics, control at http://{}/instances",
            host.http_addr, host.control_addr
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        host.shutdown().await;
        Ok(())
    })
}

/// Compiles and type-checks every instance's plugin as the host would at start (imports it needs
/// and the guest interface it exports), so a plugin this host cannot run fails the check rather
/// than the start. Compiled artifacts go to a temporary directory: a check writes nothing into
/// the data directory.
fn check_plugins(config: &apphost::config::HostConfig) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("apphost-check-{}", std::process::id()));
    let result = (|| {
        let runtime = apphost::engine::Runtime::for_config(&scratch, config)?;
        let mut checked = std::collections::HashSet::new();
        for i in &config.instances {
            let plugin = config.plugins_dir.join(format!("{}.wasm", i.plugin));
            if !checked.insert(plugin.clone()) {
                continue;
            }
            let wasm = std::fs::read(&plugin)
                .with_context(|| format!("instance {}: reading {}", i.name, plugin.display()))?;
            runtime
                .load(&wasm)
                .with_context(|| format!("instance {}: {}", i.name, plugin.display()))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
