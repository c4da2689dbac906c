//! `fake-pbx`: dials the connector's App URL as an innovaphone PBX (master and optional slave)
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

use fake_pbx::dialer::{Handle, SystemClock, tls_config};
use fake_pbx::login::AppObject;
use fake_pbx::pbx::{NodeConfig, default_apis};
use fake_pbx::{Pbx, PopulateSpec};
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut password = None;
    let mut domain = "example.com".to_string();
    let mut master = "master".to_string();
    let mut slaves: Vec<String> = vec![];
    let mut dial_url = None;
    let mut app_sip = "m365".to_string();
    let mut app_dn = "Microsoft 365".to_string();
    let mut apis = default_apis();
    let mut lics = None;
    let mut ca: Option<PathBuf> = None;
    let mut control = "127.0.0.1:0".to_string();
    let mut users = 0usize;
    let mut pseudo = 0usize;
    let mut seed = 1u64;
    let mut licences: Option<u32> = None;
    let mut testmode = false;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--url" => url = Some(val()?),
            "--password" => password = Some(val()?),
            "--domain" => domain = val()?,
            "--master" => master = val()?,
            "--slave" => slaves.push(val()?),
            "--dial-url" => dial_url = Some(val()?),
            "--app-sip" => app_sip = val()?,
            "--app-dn" => app_dn = val()?,
            "--apis" => apis = val()?.split(',').map(String::from).collect(),
            "--lics" => lics = Some(val()?.parse()?),
            "--ca-file" => ca = Some(val()?.into()),
            "--control" => control = val()?,
            "--users" => users = val()?.parse()?,
            "--pseudo" => pseudo = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--licences" => licences = Some(val()?.parse()?),
            "--testmode" => testmode = true,
            "--help" | "-h" => {
                println!("see the crate docs of fake-pbx (src/main.rs) for flags");
                return Ok(());
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let url = url.ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let url = url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    let password = password.ok_or_else(|| anyhow::anyhow!("--password is required"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut pbx = Pbx::new(&domain, Arc::new(SystemClock::new()), seed);
        pbx.switches.testmode = testmode;
        let mut locs = vec![master.clone()];
        locs.extend(slaves.iter().cloned());
        for (i, name) in locs.iter().enumerate() {
            pbx.add_node(NodeConfig {
                name: name.clone(),
                dns: format!("{name}.{domain}"),
                app: AppObject {
                    sip: app_sip.clone(),
                    dn: app_dn.clone(),
                    guid: format!("{:032x}", 0xa99_0000u64 + i as u64),
                    url: url.clone(),
                    password: password.clone(),
                    lics,
                    apps: vec![],
                },
                dial_url: dial_url.clone(),
                apis: apis.clone(),
                version: "14r2 sr12 [143104]".into(),
                build: "143104".into(),
            });
        }
        if users > 0 || pseudo > 0 {
            let spec = PopulateSpec {
                users,
                pseudo_objects: pseudo,
                seed,
                locs,
                ..Default::default()
            };
            pbx.set_licence(&spec.licence, licences.unwrap_or(users as u32));
            pbx.add_users(fake_pbx::users::populate(&spec));
        } else if let Some(n) = licences {
            pbx.set_licence("App(innovaphone-microsoft365)", n);
        }
        let h = Handle::start(pbx, tls_config(ca.as_deref())?);
        let addr = fake_pbx::control::serve(h, control.parse()?).await?;
        println!(
            "{}",
            serde_json::json!({"control": format!("http://{addr}")})
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
