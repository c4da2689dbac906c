//! One-call setup shared by the binary, the demo and in-process tests: a master (and optional
//! slaves) for one App URL, an optional realistic population, the driver and the control API.

use crate::clock::Clock;
use crate::dialer::{Handle, SystemClock, tls_config};
use crate::login::AppObject;
use crate::pbx::{NodeConfig, Pbx, default_apis};
use crate::users::{PopulateSpec, populate};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything the binary's flags can set.
#[derive(Debug, Clone)]
pub struct Options {
    /// App URL (http(s):// or ws(s)://) of the connector's App object.
    pub url: String,
    /// Instance password (stored in the App object).
    pub password: String,
    /// PBX system name.
    pub domain: String,
    /// Master PBX name.
    pub master: String,
    /// Slave PBX names (each its own connection to the same URL).
    pub slaves: Vec<String>,
    /// Dial this URL instead (e.g. a sub-path); AppLogin still uses the App URL's app name.
    pub dial_url: Option<String>,
    /// App object h323.
    pub app_sip: String,
    /// App object display name.
    pub app_dn: String,
    /// APIs enabled on the App object.
    pub apis: Vec<String>,
    /// Service licence count (`info.lics`).
    pub lics: Option<u32>,
    /// Extra CA (PEM) to trust for wss.
    pub ca_file: Option<PathBuf>,
    /// Control API address.
    pub control: SocketAddr,
    /// Users to generate.
    pub users: usize,
    /// Pseudo objects to generate.
    pub pseudo: usize,
    /// Seed for population and randomness.
    pub seed: u64,
    /// `App(innovaphone-microsoft365)` pool size (default: number of users).
    pub licences: Option<u32>,
    /// Licence test mode.
    pub testmode: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            url: String::new(),
            password: String::new(),
            domain: "example.com".into(),
            master: "master".into(),
            slaves: vec![],
            dial_url: None,
            app_sip: "m365".into(),
            app_dn: "Microsoft 365".into(),
            apis: default_apis(),
            lics: None,
            ca_file: None,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: 0,
            pseudo: 0,
            seed: 1,
            licences: None,
            testmode: false,
        }
    }
}

/// Builds the core (no IO) for `o` with the given clock.
pub fn build(o: &Options, clock: Arc<dyn Clock>) -> Pbx {
    let url = o
        .url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    let mut pbx = Pbx::new(&o.domain, clock, o.seed);
    pbx.switches.testmode = o.testmode;
    let mut locs = vec![o.master.clone()];
    locs.extend(o.slaves.iter().cloned());
    for (i, name) in locs.iter().enumerate() {
        pbx.add_node(NodeConfig {
            name: name.clone(),
            dns: format!("{name}.{}", o.domain),
            app: AppObject {
                sip: o.app_sip.clone(),
                dn: o.app_dn.clone(),
                guid: format!("{:032x}", 0xa99_0000u64 + i as u64),
                url: url.clone(),
                password: o.password.clone(),
                lics: o.lics,
                apps: vec![],
            },
            dial_url: o.dial_url.clone(),
            apis: o.apis.clone(),
            version: "14r2 sr12 [143104]".into(),
            build: "143104".into(),
        });
    }
    let spec = PopulateSpec {
        users: o.users,
        pseudo_objects: o.pseudo,
        seed: o.seed,
        locs,
        ..Default::default()
    };
    pbx.set_licence(&spec.licence, o.licences.unwrap_or(o.users as u32));
    if o.users > 0 || o.pseudo > 0 {
        pbx.add_users(populate(&spec));
        pbx.seed_presence();
    }
    pbx
}

/// Starts the fake on the current tokio runtime: driver (dialling now) plus control API.
/// Returns the handle and the control API address.
pub async fn spawn(o: &Options) -> anyhow::Result<(Handle, SocketAddr)> {
    let pbx = build(o, Arc::new(SystemClock::new()));
    let h = Handle::start(pbx, tls_config(o.ca_file.as_deref())?);
    let addr = crate::control::serve(h.clone(), o.control).await?;
    Ok((h, addr))
}
