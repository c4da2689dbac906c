//! The connector guest in simulated weeks: a fixed set of seeds with faults, the replay check,
//! and proof that the checker catches a broken world.
//!
//! Each seed is its own test so they run in parallel. A failure prints the summary with the
//! seed and the command that replays it (`make sim SEED=...`).

use std::path::PathBuf;
use std::sync::OnceLock;

use simhost::Guest;
use simhost::scenario::{Scenario, Summary, run, run_with};

fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/microsoft365.wasm");
        assert!(
            path.exists(),
            "{} is missing: run `make guest` first",
            path.display()
        );
        Guest::load(&simhost::engine().unwrap(), &path).unwrap()
    })
}

/// The same guest one patch version newer, for upgrades (compiled once per test binary).
fn newer() -> &'static Guest {
    static NEWER: OnceLock<Guest> = OnceLock::new();
    NEWER.get_or_init(|| guest().newer().expect("a newer guest").0)
}

fn simulate(sc: &Scenario) -> Summary {
    let newer = sc.upgrade.then(newer);
    run_with(guest(), newer, sc).expect("the run starts")
}

fn clean(sc: Scenario) -> Summary {
    let summary = simulate(&sc);
    println!("{summary}");
    assert!(summary.violation.is_none(), "{summary}");
    assert!(summary.simulated_days >= sc.days as f64, "{summary}");
    // These hold for every run, whatever the guest implements: the checker is never idle.
    for name in [
        "pbx-protocol",
        "secrets-not-logged",
        "kv-bounded",
        "memory-bounded",
        "no-subscription-lapse",
    ] {
        let r = summary.invariants.iter().find(|r| r.name == name).unwrap();
        assert!(r.active(), "{name} never checked anything\n{summary}");
    }
    if !sc.quiet {
        let r = summary
            .invariants
            .iter()
            .find(|r| r.name == "pbx-logged-in-after-faults")
            .unwrap();
        assert!(r.active(), "{summary}");
    }
    // The guest really holds memory (the limiter sees it), so the memory bound is measured.
    assert!(summary.peak_memory >= 1 << 20, "{summary}");
    if sc.upgrade {
        let (from, to) = &summary.versions;
        assert_ne!(
            from, to,
            "the upgrade did not change the version\n{summary}"
        );
        assert!(summary.swaps >= 1, "{summary}");
    }
    summary
}

macro_rules! seeds {
    ($($name:ident: $seed:expr, $days:expr, $users:expr, $rich:expr, $upgrade:expr;)*) => {$(
        #[test]
        fn $name() {
            let mut sc = Scenario::new($seed, $days, $users);
            sc.rich = $rich;
            sc.upgrade = $upgrade;
            clean(sc);
        }
    )*};
}

// Small tenants, mostly plain notifications, two rich; a week each; three hot-swap to a newer
// guest after the faults.
seeds! {
    seed_11: 11, 7, 50, false, false;
    seed_12: 12, 7, 80, false, false;
    seed_13: 13, 7, 120, false, true;
    seed_14: 14, 7, 200, false, false;
    seed_15: 15, 7, 60, false, false;
    seed_16: 16, 7, 100, false, true;
    seed_17: 17, 7, 150, false, false;
    seed_18: 18, 7, 50, false, false;
    seed_22: 22, 7, 50, true, false;
    seed_20: 20, 7, 60, true, true;
}

/// Found by the simulator on its first day: after a week with PBX drops, lost notifications and
/// a revoked refresh token, user7474's `teams:` item stayed `busy` while Teams said
/// Offline/OffWork: the password account never signed in again, so nothing was read any more.
/// Kept as a regression test.
#[test]
fn revoked_refresh_token_seed_19_converges() {
    let mut sc = Scenario::new(19, 7, 90);
    sc.rich = true;
    clean(sc);
}

#[test]
fn a_quiet_week_is_clean() {
    let mut sc = Scenario::new(21, 7, 50);
    sc.quiet = true;
    let s = clean(sc);
    assert!(s.faults.is_empty(), "{s}");
}

#[test]
fn a_seed_replays_identically() {
    // With an upgrade to a newer guest in it: that replays too.
    let mut sc = Scenario::new(5, 3, 60);
    sc.upgrade = true;
    let a = simulate(&sc);
    let b = simulate(&sc);
    assert_ne!(a.versions.0, a.versions.1, "{a}");
    assert_eq!(a.trace, b.trace, "\n{a}\n{b}");
    assert_eq!(a.events, b.events);
    assert_eq!(a.faults, b.faults);
    assert!(a.events > 100, "{a}");
    let other = run(guest(), &Scenario::new(6, 3, 60)).unwrap();
    assert_ne!(
        a.trace, other.trace,
        "two seeds, one trace: the seed does not matter?"
    );
}

#[test]
fn a_broken_world_is_caught() {
    // The master PBX goes down for good when the faults stop: the login invariant must fire,
    // naming the seed and the replay command.
    let mut sc = Scenario::new(7, 2, 50);
    sc.sabotage = true;
    let s = run(guest(), &sc).unwrap();
    let v = s.violation.clone().expect("the sabotage is detected");
    assert!(v.contains("pbx-logged-in-after-faults"), "{s}");
    assert!(v.contains("master"), "{s}");
    let text = s.to_string();
    assert!(
        text.contains("--seed 7") && text.contains("--sabotage"),
        "{text}"
    );
    // The run stopped at the violation, within the login bound after the faults ended.
    assert!(s.simulated_days < 2.0, "{s}");
}

#[test]
fn a_lapsed_subscription_is_caught_and_replays_identically() {
    // Once the faults stop, Microsoft fails every subscription call for good: the presence
    // subscription expires and stays gone, so the lapse invariant must fire within its
    // tolerance, and the failing seed must replay to the same violation.
    let mut sc = Scenario::new(7, 2, 50);
    sc.break_subscriptions = true;
    let a = run(guest(), &sc).unwrap();
    let v = a.violation.clone().expect("the lapse is detected");
    assert!(v.contains("no-subscription-lapse"), "{a}");
    assert!(
        a.to_string().contains("--break-subscriptions"),
        "the replay command names the sabotage\n{a}"
    );
    // Caught within a subscription lifetime (60 min) plus the tolerance after the faults.
    let caught_h = a.simulated_days * 24.0 - a.faults_end_h;
    assert!(caught_h > 0.0 && caught_h < 1.0 + 20.0 / 60.0 + 0.1, "{a}");
    let b = run(guest(), &sc).unwrap();
    assert_eq!(a.trace, b.trace, "\n{a}\n{b}");
    assert_eq!(a.violation, b.violation);
}

#[test]
fn a_secret_in_a_log_line_is_caught_without_repeating_it() {
    // The instance password typed into a numeric setting: the guest's error message quotes
    // the value, so the secret scan must fire, and its report must not print the secret.
    let mut sc = Scenario::new(8, 1, 50);
    sc.leak_secret = true;
    let s = run(guest(), &sc).unwrap();
    let v = s.violation.clone().expect("the leak is detected");
    assert!(v.contains("secrets-not-logged"), "{s}");
    assert!(v.contains("presence.renew-interval-s"), "{s}");
    assert!(v.contains("<secret>") && !v.contains("&+%!"), "{s}");
    assert!(s.to_string().contains("--leak-secret"), "{s}");
}

/// PBX -> Teams (F2) in the simulator: PBX users change their own presence;
/// `teams-shows-pbx-presence` compares Teams' preferred presence with the mapped PBX state
/// (which is also the no-echo check) and `presence-converged` the other direction.
#[test]
fn pbx_to_teams_quiet_days_are_clean() {
    let mut sc = Scenario::new(41, 2, 50);
    sc.quiet = true;
    sc.pbx_to_teams = true;
    let s = clean(sc);
    for name in ["teams-shows-pbx-presence", "presence-converged"] {
        let r = s.invariants.iter().find(|r| r.name == name).unwrap();
        assert!(r.active(), "{name} never checked anything\n{s}");
    }
    assert!(s.pbx_changes > 50, "{s}");
}

/// Regression (F2, `guest/src/presence_out/echo.rs`, fixed): the connector's preferred
/// presence lives one day in Teams (product decision), but its echo record
/// (`presence-out/own/<id>` current) did not expire with it. Seed 35: Søren Kowalczyk's PBX `busy` became Teams Busy/Busy at
/// t+445761 s; a day later Teams dropped the preferred presence, his own Teams client shows
/// Busy/Busy, and F1 took that for its own echo: the PBX `teams:` item stayed `dnd` for good. Replay: `cargo run -p simhost --bin sim -- --seed 35 --days 7 --users 60 --pbx-to-teams`
/// (`SIMHOST_KV_GREP=fc005afe-9381-4b99-958d-c1736882c0fd` shows the records).
#[test]
fn pbx_to_teams_seed_35_echo_record_expires_with_the_preferred_presence() {
    let mut sc = Scenario::new(35, 7, 60);
    sc.pbx_to_teams = true;
    clean(sc);
}

/// PBX -> Teams (F2) through faults and a hot-swap to a newer guest: the echo records
/// (`presence-out/own/<id>`) written by one guest version must be honoured and expire under the
/// next, so Teams keeps showing the PBX presence and F1 keeps syncing the user's own Teams
/// state. Replay: `cargo run -p simhost --bin sim -- --seed 207 --days 4 --users 40 --pbx-to-teams --upgrade`
#[test]
fn pbx_to_teams_seed_207_survives_faults_and_an_upgrade() {
    let mut sc = Scenario::new(207, 4, 40);
    sc.pbx_to_teams = true;
    sc.upgrade = true;
    let s = clean(sc);
    for name in ["teams-shows-pbx-presence", "presence-converged"] {
        let r = s.invariants.iter().find(|r| r.name == name).unwrap();
        assert!(r.active(), "{name} never checked anything\n{s}");
    }
    assert!(s.pbx_changes > 100, "{s}");
    assert!(!s.faults.is_empty(), "{s}");
}
