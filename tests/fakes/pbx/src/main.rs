//! `fake-pbx`: dials the connector's App URL as an innovaphone PBX (master and optional slaves)
//! and serves the control API on loopback. Prints `{"control":"http://..."}` once ready.
//!
//! Flags:
//! `--url <app url>` (required; http(s):// or ws(s)://), `--password <pw>` (required),
//! `--domain <system name>` (example.com), `--master <name>` (master), `--slave <name>`
//! (repeatable; same URL), `--dial-url <url>` (dial this URL, e.g. a sub-path, but log in with
//! the App URL's app name), `--app-sip <h323>` (m365), `--app-dn <dn>` (Microsoft 365),
//! `--apis <comma list>` (PbxApi,PbxTableUsers,PbxAdminApi,PbxImpersonation), `--lics <n>`,
//! `--ca-file <pem>` (extra CA to trust for wss), `--control <addr:port>` (127.0.0.1:0),
//! `--users <n>` and `--pseudo <n>` (populate), `--seed <n>` (1), `--licences <n>`
//! (App(innovaphone-microsoft365) pool size, default: number of users), `--testmode`.

use fake_pbx::setup::{Options, spawn};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut o = Options::default();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--url" => o.url = val()?,
            "--password" => o.password = val()?,
            "--domain" => o.domain = val()?,
            "--master" => o.master = val()?,
            "--slave" => o.slaves.push(val()?),
            "--dial-url" => o.dial_url = Some(val()?),
            "--app-sip" => o.app_sip = val()?,
            "--app-dn" => o.app_dn = val()?,
            "--apis" => o.apis = val()?.split(',').map(String::from).collect(),
            "--lics" => o.lics = Some(val()?.parse()?),
            "--ca-file" => o.ca_file = Some(val()?.into()),
            "--control" => o.control = val()?.parse()?,
            "--users" => o.users = val()?.parse()?,
            "--pseudo" => o.pseudo = val()?.parse()?,
            "--seed" => o.seed = val()?.parse()?,
            "--licences" => o.licences = Some(val()?.parse()?),
            "--testmode" => o.testmode = true,
            "--help" | "-h" => {
                println!("see the crate docs of fake-pbx (src/main.rs) for flags");
                return Ok(());
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(!o.url.is_empty(), "--url is required");
    anyhow::ensure!(!o.password.is_empty(), "--password is required");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (_h, addr) = spawn(&o).await?;
        println!(
            "{}",
            serde_json::json!({"control": format!("http://{addr}")})
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
