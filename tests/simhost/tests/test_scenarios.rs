//! The connector guest in simulated weeks: a fixed set of seeds with faults, the replay check,
//! and proof that the checker catches a broken world.
//!
//! Each seed is its own test so they run in parallel. A failure prints the summary with the
//! seed and the command that replays it (`make sim SEED=...`).

use std::path::PathBuf;
use std::sync::OnceLock;

use simhost::Guest;
use simhost::scenario::{Scenario, Summary, run};

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

fn clean(sc: Scenario) -> Summary {
    let summary = run(guest(), &sc).expect("the run starts");
    println!("{summary}");
    assert!(summary.violation.is_none(), "{summary}");
    assert!(summary.simulated_days >= sc.days as f64, "{summary}");
    // These hold for every run, whatever the guest implements: the checker is never idle.
    for name in ["pbx-protocol", "secrets-not-logged", "kv-bounded"] {
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
    summary
}

macro_rules! seeds {
    ($($name:ident: $seed:expr, $days:expr, $users:expr, $rich:expr;)*) => {$(
        #[test]
        fn $name() {
            let mut sc = Scenario::new($seed, $days, $users);
            sc.rich = $rich;
            clean(sc);
        }
    )*};
}

// Small tenants, mostly plain notifications, two rich; a week each.
seeds! {
    seed_11: 11, 7, 50, false;
    seed_12: 12, 7, 80, false;
    seed_13: 13, 7, 120, false;
    seed_14: 14, 7, 200, false;
    seed_15: 15, 7, 60, false;
    seed_16: 16, 7, 100, false;
    seed_17: 17, 7, 150, false;
    seed_18: 18, 7, 50, false;
    seed_22: 22, 7, 50, true;
    seed_20: 20, 7, 60, true;
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
    let sc = Scenario::new(5, 3, 60);
    let a = run(guest(), &sc).unwrap();
    let b = run(guest(), &sc).unwrap();
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
