//! `fake-m365`: serve the fake Microsoft 365 over HTTPS on loopback.
//!
//! ```text
//! fake-m365 [--listen 127.0.0.1:8443] [--control 127.0.0.1:8444] [--ca-out fake-m365-ca.pem]
//!           [--trust-ca extra.pem]... [--populate N] [--seed S] [--cloud global|usgovl4|usgovl5|china]
//!           [--allow-http-loopback] [--config config.json]
//! ```
//! Prints one JSON line `{"url", "controlUrl", "caFile", "tenantId"}` when ready.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fake_m365::server::{ServerOptions, SystemClock, start};
use fake_m365::{Cloud, Config, Fake};

#[tokio::main]
async fn main() -> Result<()> {
    let mut opts = ServerOptions {
        ca_out: Some("fake-m365-ca.pem".into()),
        ..Default::default()
    };
    let mut cfg = Config::default();
    let mut populate = 0usize;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => opts.listen = val()?.parse()?,
            "--control" => opts.control_listen = val()?.parse()?,
            "--ca-out" => opts.ca_out = Some(val()?.into()),
            "--trust-ca" => opts.trust_ca.push(val()?.into()),
            "--name" => opts.names.push(val()?),
            "--populate" => populate = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--allow-http-loopback" => cfg.allow_http_loopback = true,
            "--config" => cfg = serde_json::from_slice(&std::fs::read(val()?)?)?,
            "--cloud" => {
                cfg.cloud = match val()?.to_lowercase().as_str() {
                    "global" => Cloud::Global,
                    "usgovl4" => Cloud::UsGovL4,
                    "usgovl5" => Cloud::UsGovL5,
                    "china" => Cloud::China,
                    c => bail!("unknown cloud {c}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "fake-m365 [--listen ADDR] [--control ADDR] [--ca-out FILE] [--trust-ca FILE]... [--name DNS]... [--populate N] [--seed S] [--cloud C] [--allow-http-loopback] [--config FILE]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    cfg.seed = seed;
    let mut fake = Fake::new(cfg, Arc::new(SystemClock));
    if populate > 0 {
        fake.populate(populate, seed);
    }
    let tenant = fake.tenant_id().to_string();
    let ca = opts.ca_out.clone();
    let srv = start(fake, opts).await?;
    println!(
        "{}",
        serde_json::json!({"url": srv.url, "controlUrl": srv.control_url, "caFile": ca, "tenantId": tenant})
    );
    tokio::signal::ctrl_c().await?;
    srv.shutdown();
    Ok(())
}
