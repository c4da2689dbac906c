//! The fault plan of a run, drawn from its seed (BUGGIFY-style): which faults happen, when, and
//! for how long. Every fault is repaired by `faults_end`, so the rest of the run shows whether
//! the guest converges.

use fake_m365::{Fault, FaultKind};
use fake_pbx::Rng;

use crate::fakes_world::{NetFaults, WorldAction};

/// Something done to the guest itself rather than to its world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimAction {
    /// The guest instance dies; a fresh one starts from KV (`init(restart)`).
    Crash,
    /// Hot swap to the same guest (`init(upgrade)` with the old instance's snapshot).
    Swap,
    /// The guest's wall clock reads this many milliseconds off the true time.
    Skew(i64),
    /// Hot swap to a newer version of the guest (never drawn by the plan: the scenario places
    /// it when asked to, see `Scenario::upgrade`).
    Upgrade,
}

impl SimAction {
    /// Short name for the fault counters.
    pub fn kind(&self) -> &'static str {
        match self {
            SimAction::Crash => "guest-crash",
            SimAction::Swap => "guest-swap",
            SimAction::Skew(0) => "clock-skew-end",
            SimAction::Skew(_) => "clock-skew",
            SimAction::Upgrade => "guest-upgrade",
        }
    }
}

/// What the plan needs to know about the run.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// Seed of the run.
    pub seed: u64,
    /// Virtual start time (ms).
    pub start_ms: u64,
    /// Virtual end time (ms).
    pub end_ms: u64,
    /// PBX node names (the first is the master).
    pub nodes: Vec<String>,
    /// Teams communication accounts (UPNs) whose refresh tokens may be revoked.
    pub accounts: Vec<String>,
    /// Default access-token lifetime (s) to restore.
    pub token_lifetime_s: i64,
    /// No faults at all (a quiet baseline run).
    pub quiet: bool,
}

/// Faults of a run, in time order per list.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Faults of the world, with their repairs.
    pub world: Vec<(u64, WorldAction)>,
    /// Faults of the guest and its clock.
    pub sim: Vec<(u64, SimAction)>,
    /// From here on nothing breaks any more.
    pub faults_end: u64,
}

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

impl FaultPlan {
    /// Draws the plan from the seed. Faults fill the first three quarters of the run (at least
    /// the last day stays quiet when the run is long enough).
    pub fn draw(input: &PlanInput) -> Self {
        let mut rng = Rng::new(input.seed ^ 0x0062_7567_6769_6679);
        let span = input.end_ms - input.start_ms;
        let faults_end = input.start_ms + span * 3 / 4;
        let mut plan = FaultPlan {
            faults_end,
            ..Default::default()
        };
        if input.quiet || span < 2 * HOUR {
            plan.faults_end = input.start_ms;
            return plan;
        }
        // Leave the first ten minutes alone: the guest logs in and syncs first.
        let from = input.start_ms + 10 * MIN;
        let window = faults_end - from;
        let days = (window / (24 * HOUR)).max(1);
        let at = |rng: &mut Rng| from + rng.below(window);
        // How often each kind happens differs per seed: some runs are calm, some are storms.
        let episodes = |rng: &mut Rng, per_day: u64| -> u64 {
            if rng.percent(15) {
                0
            } else {
                rng.below(per_day * days + 1)
            }
        };

        for _ in 0..episodes(&mut rng, 6) {
            let t = at(&mut rng);
            let path = [
                None,
                Some("/oauth2/"),
                Some("/subscriptions"),
                Some("/communications"),
            ][rng.below(4) as usize];
            let fault = match rng.below(4) {
                0 => FaultKind::Throttle {
                    retry_after_s: 1 + rng.below(120) as u32,
                },
                1 => FaultKind::Unavailable {
                    retry_after_s: rng.percent(50).then(|| 1 + rng.below(60) as u32),
                },
                2 => FaultKind::ServerError {
                    status: [500, 502, 504][rng.below(3) as usize],
                },
                _ => FaultKind::Timeout,
            };
            plan.world.push((
                t,
                WorldAction::GraphFault(Fault {
                    path_contains: path.map(String::from),
                    method: None,
                    fault,
                    remaining: Some(1 + rng.below(20) as u32),
                }),
            ));
        }
        for _ in 0..episodes(&mut rng, 3) {
            let t = at(&mut rng);
            let net = NetFaults {
                http_reset_percent: rng.below(30),
                notify_slow_ms: [0, 2_000, 5_000, 15_000][rng.below(4) as usize],
                notify_drop_percent: rng.below(40),
                notify_dup_percent: rng.below(30),
                notify_reorder_ms: [0, 500, 3_000][rng.below(3) as usize],
            };
            let end = (t + MIN + rng.below(2 * HOUR)).min(faults_end);
            plan.world.push((t, WorldAction::Net(net)));
            plan.world
                .push((end, WorldAction::Net(NetFaults::default())));
        }
        for _ in 0..episodes(&mut rng, 4) {
            let t = at(&mut rng);
            let node = input.nodes[rng.below(input.nodes.len() as u64) as usize].clone();
            if rng.percent(50) {
                plan.world.push((t, WorldAction::DropPbx(node)));
            } else {
                let end = (t + 1_000 + rng.below(30 * MIN)).min(faults_end);
                plan.world.push((t, WorldAction::KillPbx(node.clone())));
                plan.world.push((end, WorldAction::RestorePbx(node)));
            }
        }
        for _ in 0..episodes(&mut rng, 1) {
            let t = at(&mut rng);
            let end = (t + HOUR + rng.below(12 * HOUR)).min(faults_end);
            let short = (5 * MIN + rng.below(25 * MIN)) / 1_000;
            plan.world
                .push((t, WorldAction::TokenLifetime(short as i64)));
            plan.world
                .push((end, WorldAction::TokenLifetime(input.token_lifetime_s)));
        }
        if !input.accounts.is_empty() {
            for _ in 0..episodes(&mut rng, 1) {
                let t = at(&mut rng);
                let acc = input.accounts[rng.below(input.accounts.len() as u64) as usize].clone();
                plan.world.push((t, WorldAction::RevokeRefreshTokens(acc)));
            }
        }
        for _ in 0..episodes(&mut rng, 1) {
            let t = at(&mut rng);
            let end = (t + 10 * MIN + rng.below(6 * HOUR)).min(faults_end);
            plan.world.push((t, WorldAction::SubscriptionOutage));
            plan.world.push((end, WorldAction::EndOutages));
        }
        for _ in 0..episodes(&mut rng, 2) {
            plan.sim.push((at(&mut rng), SimAction::Crash));
        }
        for _ in 0..episodes(&mut rng, 1) {
            plan.sim.push((at(&mut rng), SimAction::Swap));
        }
        for _ in 0..episodes(&mut rng, 1) {
            let t = at(&mut rng);
            let minutes = 1 + rng.below(10) as i64;
            let skew = if rng.percent(50) { minutes } else { -minutes } * MIN as i64;
            let end = (t + HOUR + rng.below(24 * HOUR)).min(faults_end);
            plan.sim.push((t, SimAction::Skew(skew)));
            plan.sim.push((end, SimAction::Skew(0)));
        }

        // Everything is repaired at `faults_end`, whatever the episodes above did.
        let end = faults_end;
        plan.world.push((end, WorldAction::ClearGraphFaults));
        plan.world
            .push((end, WorldAction::Net(NetFaults::default())));
        plan.world.push((end, WorldAction::EndOutages));
        plan.world
            .push((end, WorldAction::TokenLifetime(input.token_lifetime_s)));
        for node in &input.nodes {
            plan.world
                .push((end, WorldAction::RestorePbx(node.clone())));
        }
        plan.sim.push((end, SimAction::Skew(0)));
        // Stable sorts: equal times keep the order above (a fault before its repair).
        plan.world.sort_by_key(|(t, _)| *t);
        plan.sim.sort_by_key(|(t, _)| *t);
        plan
    }
}
