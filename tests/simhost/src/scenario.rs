//! A whole simulation run from a few numbers: build the tenant (fake PBX with its users, fake
//! Microsoft 365 with the same users in Teams and the communication accounts), draw the fault
//! plan from the seed, run the real guest for the given simulated days with every invariant
//! checked after every event, and summarise.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use fake_m365::{AppReg, Config, Fake, UserSpec};
use fake_pbx::Rng;
use fake_pbx::setup::{Options, build};

use crate::clock::VirtualClock;
use crate::fakes_world::{FakeClock, FakesWorld, Matched, WorldAction};
use crate::faults::{FaultPlan, PlanInput, SimAction};
use crate::invariants::{Bounds, Checker, Record};
use crate::sim::{Guest, Sim, SimConfig};

const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;
const DOMAIN: &str = "example.com";
const INSTANCE: &str = "m365";
const LICENCE: &str = "App(innovaphone-microsoft365)";
const CLIENT_ID: &str = "f1-presence-client";
const F2_CLIENT_ID: &str = "f2-presence-out-client";

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed: same seed, same guest, same code -> same run.
    pub seed: u64,
    /// Simulated days.
    pub days: u64,
    /// PBX users (most of them also Teams users).
    pub users: usize,
    /// Ask the guest for rich (encrypted) presence notifications.
    pub rich: bool,
    /// Run without any faults.
    pub quiet: bool,
    /// Deliberately break the world: the master PBX goes down for good once the faults stop,
    /// so `pbx-logged-in-after-faults` must fire (proves the checker is not vacuous).
    pub sabotage: bool,
    /// Deliberately break Microsoft's side: once the faults stop, every subscription call
    /// fails with 503 for good, so the presence subscription expires and
    /// `no-subscription-lapse` must fire.
    pub break_subscriptions: bool,
    /// Hot-swap to a newer guest version ([`Guest::newer`]) once, at a seed-drawn time after
    /// the faults, and check the state carried over: the new version runs and an hour later
    /// the presence subscriptions are still the same ones (adopted, not recreated).
    pub upgrade: bool,
    /// Deliberately misconfigure: the instance password is also typed into a numeric setting
    /// (`presence.renew-interval-s`), whose error message quotes the value, so
    /// `secrets-not-logged` must fire.
    pub leak_secret: bool,
    /// Also run PBX -> Teams presence (F2): its app registration is configured and PBX users
    /// change their own presence, so `teams-shows-pbx-presence` has work.
    pub pbx_to_teams: bool,
}

impl Scenario {
    /// A scenario with the usual defaults.
    pub fn new(seed: u64, days: u64, users: usize) -> Self {
        Self {
            seed,
            days,
            users,
            rich: false,
            quiet: false,
            sabotage: false,
            break_subscriptions: false,
            upgrade: false,
            leak_secret: false,
            pbx_to_teams: false,
        }
    }

    /// The command that replays this run.
    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo run -p simhost --bin sim -- --seed {} --days {} --users {}",
            self.seed, self.days, self.users
        );
        if self.rich {
            c.push_str(" --rich");
        }
        if self.quiet {
            c.push_str(" --quiet");
        }
        if self.sabotage {
            c.push_str(" --sabotage");
        }
        if self.break_subscriptions {
            c.push_str(" --break-subscriptions");
        }
        if self.upgrade {
            c.push_str(" --upgrade");
        }
        if self.leak_secret {
            c.push_str(" --leak-secret");
        }
        if self.pbx_to_teams {
            c.push_str(" --pbx-to-teams");
        }
        c
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// Simulated days actually covered (less than asked when a violation stopped the run).
    pub simulated_days: f64,
    /// Events committed.
    pub events: u64,
    /// Trapped calls.
    pub traps: u64,
    /// Guest restarts (crashes and traps).
    pub restarts: u64,
    /// Hot swaps.
    pub swaps: u64,
    /// The guest's version at the start and at the end (they differ after an upgrade).
    pub versions: (String, String),
    /// Events given up on.
    pub dead_letters: usize,
    /// Faults applied, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// When the faults stopped, hours after the start.
    pub faults_end_h: f64,
    /// Invariants.
    pub invariants: Vec<Record>,
    /// The first violation.
    pub violation: Option<String>,
    /// Digest of the event trace (same seed -> same digest).
    pub trace: u64,
    /// Guest requests to Microsoft.
    pub http_requests: u64,
    /// Fake POSTs to the guest.
    pub fake_posts: u64,
    /// Guest requests by kind.
    pub requests_by_kind: BTreeMap<String, u64>,
    /// PBX dials.
    pub pbx_dials: u64,
    /// Teams presence changes.
    pub teams_changes: u64,
    /// PBX presence changes (PBX -> Teams runs).
    pub pbx_changes: u64,
    /// Final KV entries.
    pub kv_entries: usize,
    /// Final KV bytes (keys + values).
    pub kv_bytes: usize,
    /// Most linear memory a guest instance held, bytes.
    pub peak_memory: usize,
    /// Longest presence-subscription lapse counted against the tolerance (after the faults), ms.
    pub longest_lapse_ms: u64,
    /// Longest lapse while faults were on (not bounded; for the record), ms.
    pub longest_lapse_in_faults_ms: u64,
    /// Guest timers pending at the end.
    pub pending_timers: usize,
    /// Guest log lines.
    pub log_lines: usize,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

impl Summary {
    /// Simulated days per wall-clock second.
    pub fn days_per_second(&self) -> f64 {
        self.simulated_days / self.wall_s.max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scenario;
        writeln!(
            f,
            "seed {} | {} users{} | {:.2} simulated days in {:.2} s wall ({:.1} days/s)",
            s.seed,
            s.users,
            if s.rich { ", rich" } else { "" },
            self.simulated_days,
            self.wall_s,
            self.days_per_second()
        )?;
        writeln!(
            f,
            "events {} | traps {} | restarts {} | swaps {} | dead letters {} | trace {:016x}",
            self.events, self.traps, self.restarts, self.swaps, self.dead_letters, self.trace
        )?;
        if self.versions.0 != self.versions.1 {
            writeln!(f, "upgraded: {} -> {}", self.versions.0, self.versions.1)?;
        }
        writeln!(
            f,
            "world: {} requests to Microsoft, {} posts from Microsoft, {} PBX dials, {} Teams and {} PBX presence changes; KV {} entries, {} timers pending, {} log lines",
            self.http_requests,
            self.fake_posts,
            self.pbx_dials,
            self.teams_changes,
            self.pbx_changes,
            self.kv_entries,
            self.pending_timers,
            self.log_lines
        )?;
        let users = self.scenario.users.max(1);
        writeln!(
            f,
            "bounded: KV {} B ({} B/user), guest memory peak {} KiB, longest subscription lapse {} s after faults ({} s during faults)",
            self.kv_bytes,
            self.kv_bytes / users,
            self.peak_memory / 1024,
            self.longest_lapse_ms / 1_000,
            self.longest_lapse_in_faults_ms / 1_000
        )?;
        let kinds: Vec<String> = self
            .requests_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "requests: {}", kinds.join(", "))?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "faults (stopped at t+{:.1} h): {}",
            self.faults_end_h,
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        )?;
        for r in &self.invariants {
            let state = match (&r.violation, r.active()) {
                (Some(_), _) => "VIOLATED",
                (None, true) => "active, held",
                (None, false) => "INACTIVE (nothing to check yet)",
            };
            writeln!(f, "  {:<40} {state} ({} checks)", r.name, r.checks)?;
        }
        match &self.violation {
            Some(v) => {
                writeln!(f, "VIOLATION: {v}")?;
                write!(f, "replay: {}", s.command())
            }
            None => write!(f, "no violation"),
        }
    }
}

/// What the run does between stretches of simulation.
enum Step {
    /// Something done to the guest (crash, swap, clock skew, upgrade).
    Fault(SimAction),
    /// An hour after an upgrade: the subscriptions from before it must still be live.
    UpgradeCheck,
    /// Daily: drop the fake's request log.
    Housekeeping,
}

/// Hot-swaps to `newer` and checks it is what now runs.
fn upgrade(sim: &mut Sim<FakesWorld>, newer: &Guest) -> Result<()> {
    let want = newer.version()?;
    sim.swap(newer)?;
    let have = sim.guest_version()?;
    anyhow::ensure!(
        have == want,
        "after the upgrade the guest reports `{have}`, not `{want}`"
    );
    Ok(())
}

/// Ids of the live presence subscriptions in the fake.
fn live_presence_subscriptions(world: &FakesWorld) -> BTreeSet<String> {
    let now = world.fake.now();
    world
        .fake
        .subscriptions()
        .iter()
        .filter(|s| {
            matches!(s.kind, fake_m365::subscriptions::SubKind::Presence(_))
                && s.expiration_ms > now
        })
        .map(|s| s.id.clone())
        .collect()
}

fn secret(rng: &mut Rng, prefix: &str) -> String {
    // Characters that need escaping in forms and JSON, as real passwords have.
    format!("{prefix}-{:012x}&+%!", rng.next_u64() >> 16)
}

/// Runs a scenario against a compiled guest.
pub fn run(guest: &Guest, sc: &Scenario) -> Result<Summary> {
    run_with(guest, None, sc)
}

/// Like [`run`], with the newer guest an upgrade swaps to (derived from `guest` with
/// [`Guest::newer`] when `None` and the scenario asks for an upgrade).
pub fn run_with(guest: &Guest, newer: Option<&Guest>, sc: &Scenario) -> Result<Summary> {
    let wall = Instant::now();
    let newer = match (sc.upgrade, newer) {
        (false, _) => None,
        (true, Some(g)) => Some(g.clone()),
        (true, None) => Some(guest.newer()?.0),
    };
    let config = SimConfig {
        seed: sc.seed,
        ..SimConfig::default()
    };
    let start = config.start_ms;
    let end = start + sc.days * DAY;
    let clock = VirtualClock::new(start);
    let mut rng = Rng::new(sc.seed ^ 0x7465_6e61_6e74);

    // Microsoft 365: the presence app and its communication accounts.
    let mut fake = Fake::new(
        Config {
            seed: sc.seed,
            ..Config::default()
        },
        Arc::new(FakeClock(clock.clone())),
    );
    fake.add_app(AppReg {
        client_id: CLIENT_ID.into(),
        display_name: "Connector presence".into(),
        public_client: true,
        delegated: vec!["Presence.Read.All".into(), "User.Read.All".into()],
        ..Default::default()
    });
    let instance_password = secret(&mut rng, "inst");
    let mut secrets = vec![instance_password.clone()];
    let mut accounts = Vec::new();
    let mut account_upns = Vec::new();
    // One account per 650 users (getPresencesByUserId's page), plus a spare.
    for i in 1..=sc.users.div_ceil(650) + 1 {
        let upn = format!("presence{i}@contoso.onmicrosoft.com");
        let password = secret(&mut rng, "acct");
        fake.add_user(UserSpec {
            display_name: format!("PBX Presence {i}"),
            user_principal_name: Some(upn.clone()),
            password: Some(password.clone()),
            teams: Some(true),
            ..Default::default()
        });
        accounts.push(serde_json::json!({
            "name": format!("f1-{i}"), "username": upn, "password": password
        }));
        account_upns.push(upn);
        secrets.push(password);
    }

    // The PBX: master and slave, a realistic population.
    let app_url =
        format!("https://connector.example.net/{DOMAIN}/{INSTANCE}/innovaphone-microsoft365");
    let mut pbx = build(
        &Options {
            url: app_url,
            password: instance_password.clone(),
            domain: DOMAIN.into(),
            slaves: vec!["slave".into()],
            users: sc.users,
            pseudo: 3,
            seed: sc.seed,
            ..Options::default()
        },
        Arc::new(FakeClock(clock.clone())),
    );
    pbx.switches.log_outgoing = false;

    // The same people in Teams (those with an address), under the same display name: the
    // guest matches PBX `cn` to Entra `displayName` by default. A name that occurs twice on
    // either side matches nobody, so such users are left out of the presence invariant.
    let mut matched = Vec::new();
    let mut seen = BTreeSet::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for u in pbx.users() {
        *names.entry(u.cn.to_lowercase()).or_default() += 1;
    }
    let people: Vec<(String, String, String)> = pbx
        .users()
        .filter(|u| u.pseudo.is_none() && !u.email().is_empty())
        .map(|u| (u.guid.clone(), u.cn.clone(), u.email().to_string()))
        .collect();
    for (guid, cn, email) in people {
        if !seen.insert(email.to_ascii_lowercase()) {
            continue;
        }
        let unique = names.get(&cn.to_lowercase()) == Some(&1);
        let user = fake.add_user(UserSpec {
            display_name: cn,
            user_principal_name: Some(email.clone()),
            mail: Some(email.clone()),
            teams: Some(true),
            ..Default::default()
        });
        let licensed = pbx.is_licensed(&guid, LICENCE);
        if !unique {
            continue;
        }
        matched.push(Matched {
            pbx_guid: guid,
            upn: email,
            uid: user.id,
            licensed,
        });
    }

    let mut settings = BTreeMap::new();
    let mut world_setup: Vec<AppReg> = Vec::new();
    for (k, v) in [
        ("instance.name", INSTANCE.to_string()),
        ("instance.domain", DOMAIN.to_string()),
        ("instance.password", instance_password.clone()),
        ("pbx.master", "master".into()),
        (
            "graph.login-url",
            "https://login.microsoftonline.com".into(),
        ),
        ("graph.url", "https://graph.microsoft.com".into()),
        ("presence.tenant", fake.tenant_id().to_string()),
        ("presence.client-id", CLIENT_ID.into()),
        (
            "presence.accounts",
            serde_json::Value::from(accounts).to_string(),
        ),
        // The guest appends `/<domain>/<instance>/...` to the public base itself.
        (
            "presence.public-url",
            "https://connector.example.net/".into(),
        ),
        (
            "presence.notifications",
            if sc.rich { "rich" } else { "plain" }.into(),
        ),
    ] {
        settings.insert(k.to_string(), v);
    }

    if sc.leak_secret {
        settings.insert("presence.renew-interval-s".into(), instance_password);
    }
    if sc.pbx_to_teams {
        // F2's own app registration (application permission, client secret).
        let client_secret = secret(&mut rng, "f2");
        world_setup.push(AppReg {
            client_id: F2_CLIENT_ID.into(),
            display_name: "Connector PBX presence".into(),
            secret: Some(client_secret.clone()),
            roles: vec!["Presence.ReadWrite.All".into()],
            ..Default::default()
        });
        settings.insert("presence-out.tenant".into(), fake.tenant_id().to_string());
        settings.insert("presence-out.client-id".into(), F2_CLIENT_ID.into());
        settings.insert("presence-out.client-secret".into(), client_secret.clone());
        secrets.push(client_secret);
    }
    for app in world_setup {
        fake.add_app(app);
    }

    let plan = FaultPlan::draw(&PlanInput {
        seed: sc.seed,
        start_ms: start,
        end_ms: end,
        nodes: vec!["master".into(), "slave".into()],
        accounts: account_upns,
        token_lifetime_s: fake.config().access_token_lifetime_s,
        quiet: sc.quiet,
    });
    // About three Teams presence changes per user and day (each one costs the fake a pass over
    // all users, so more would only slow the run down).
    let workload_mean = DAY / (3 * sc.users.max(1) as u64);
    let users = sc.users;
    let mut world = FakesWorld::new(
        fake,
        pbx,
        matched,
        &format!("/{DOMAIN}/{INSTANCE}"),
        sc.seed,
        workload_mean,
    );
    for (at, action) in &plan.world {
        world.plan(*at, action.clone());
    }
    if sc.pbx_to_teams {
        // As often as Teams changes: about three PBX changes per user and day.
        world.start_pbx_workload(sc.seed, workload_mean);
    }
    if sc.sabotage {
        world.plan(plan.faults_end + 1, WorldAction::KillPbx("master".into()));
    }
    if sc.break_subscriptions {
        world.plan(
            plan.faults_end + 1,
            WorldAction::GraphFault(fake_m365::Fault {
                path_contains: Some("/subscriptions".into()),
                method: None,
                fault: fake_m365::FaultKind::Unavailable {
                    retry_after_s: None,
                },
                remaining: None,
            }),
        );
    }

    let mut sim = Sim::start_with_clock(
        guest,
        world,
        SimConfig { settings, ..config },
        clock.clone(),
    )?;
    let mut checker = Checker::new(Bounds::for_users(users), start, plan.faults_end, secrets);

    // Guest-level faults, the upgrade and daily housekeeping, in time order.
    let mut steps: Vec<(u64, Step)> = plan
        .sim
        .iter()
        .map(|(t, a)| (*t, Step::Fault(a.clone())))
        .collect();
    steps.extend((1..=sc.days).map(|d| (start + d * DAY, Step::Housekeeping)));
    if sc.upgrade {
        // Its own stream, so asking for an upgrade leaves the seed's fault plan as it was.
        let mut rng = Rng::new(sc.seed ^ 0x7570_6772_6164_6521);
        let (lo, hi) = (plan.faults_end + HOUR, end.saturating_sub(2 * HOUR));
        let at = if hi > lo {
            lo + rng.below(hi - lo)
        } else {
            (start + end) / 2
        };
        steps.push((at, Step::Fault(SimAction::Upgrade)));
        steps.push((at + HOUR, Step::UpgradeCheck));
    }
    steps.sort_by_key(|(t, _)| *t);
    let first_version = sim.guest_version()?;
    let mut before_upgrade: Option<BTreeSet<String>> = None;
    let mut sim_faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failure = None;
    for (at, action) in steps {
        if let Err(e) = sim.run_until(at, |s| checker.check(s)) {
            failure = Some(e);
            break;
        }
        match action {
            Step::Fault(a) => {
                *sim_faults.entry(a.kind()).or_default() += 1;
                let outcome = match a {
                    SimAction::Crash => sim.crash(),
                    SimAction::Swap => {
                        let same = sim.guest().clone();
                        sim.swap(&same)
                    }
                    SimAction::Upgrade => {
                        before_upgrade = Some(live_presence_subscriptions(sim.world()));
                        let newer = newer.as_ref().expect("an upgrade has a newer guest");
                        upgrade(&mut sim, newer)
                    }
                    SimAction::Skew(ms) => {
                        sim.clock().set_guest_skew(ms);
                        Ok(())
                    }
                };
                if let Err(e) = outcome {
                    failure = Some(e);
                    break;
                }
            }
            Step::UpgradeCheck => {
                let before = before_upgrade.take().unwrap_or_default();
                let now = live_presence_subscriptions(sim.world());
                if !before.is_subset(&now) {
                    failure = Some(anyhow::anyhow!(
                        "state lost in the upgrade: presence subscriptions {before:?} before it, {now:?} an hour later (recreated instead of adopted)"
                    ));
                    break;
                }
            }
            // The fake keeps every request for read-back; a week of them is only ballast.
            Step::Housekeeping => {
                sim.world_mut().fake.control(
                    "DELETE",
                    "/control/requests",
                    serde_json::Value::Null,
                );
            }
        }
    }
    let violation = match (checker.violation(), failure) {
        (Some(v), _) => Some(v),
        (None, Some(e)) => Some(format!("run failed: {e:#}")),
        (None, None) => None,
    };

    // `SIMHOST_LOG_GREP=<text>` prints the guest's log lines containing it (replaying a seed
    // to see what the guest did about one user).
    if let Some(needle) = std::env::var_os("SIMHOST_LOG_GREP") {
        let needle = needle.to_string_lossy().to_string();
        for line in sim
            .durable()
            .logs
            .iter()
            .filter(|l| l.message.contains(&needle))
        {
            eprintln!(
                "t+{} s {} {}: {}",
                (line.at_ms - start) / 1_000,
                line.level,
                line.target,
                line.message
            );
        }
    }
    // `SIMHOST_KV_GREP=<text>` prints the KV entries whose key or value contains it.
    if let Some(needle) = std::env::var_os("SIMHOST_KV_GREP") {
        let needle = needle.to_string_lossy().to_string();
        for (k, v) in &sim.durable().kv {
            let value = String::from_utf8_lossy(v);
            if k.contains(&needle) || value.contains(&needle) {
                eprintln!("kv {k} = {value}");
            }
        }
    }
    let stats = sim.stats().clone();
    let last_version = sim.guest_version()?;
    let world = sim.world();
    let mut faults = world.stats.faults.clone();
    for (k, n) in sim_faults {
        *faults.entry(k).or_default() += n;
    }
    Ok(Summary {
        scenario: sc.clone(),
        simulated_days: (sim.now_ms() - start) as f64 / DAY as f64,
        events: stats.events,
        traps: stats.traps,
        restarts: stats.restarts,
        swaps: stats.swaps,
        versions: (first_version, last_version),
        dead_letters: sim.dead_letters().len(),
        faults,
        faults_end_h: (plan.faults_end - start) as f64 / 3_600_000.0,
        invariants: checker.records(),
        violation,
        trace: stats.trace,
        http_requests: world.stats.http_requests,
        fake_posts: world.stats.fake_posts,
        requests_by_kind: world.stats.requests_by_kind.clone(),
        pbx_dials: world.stats.pbx_dials,
        teams_changes: world.stats.teams_changes,
        pbx_changes: world.stats.pbx_changes,
        kv_entries: sim.durable().kv.len(),
        kv_bytes: sim
            .durable()
            .kv
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum(),
        peak_memory: stats.peak_memory,
        longest_lapse_ms: checker.longest_lapse_ms,
        longest_lapse_in_faults_ms: checker.longest_lapse_in_faults_ms,
        pending_timers: sim.pending_timers(),
        log_lines: sim.durable().logs.len(),
        wall_s: wall.elapsed().as_secs_f64(),
    })
}
