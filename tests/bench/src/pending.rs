//! Rows a plan skips (the smoke test does not start the whole stack): printed as "not run in
//! this plan" with their targets, never estimated.

use crate::table::{Row, thousands};

/// Teams -> PBX rows (issue 10, items 1 and 2) when the plan skips them (the smoke test); they
/// are measured by `teams_to_pbx`. The rich target is relative to the RSA bound measured in
/// this run, so it is printed next to it.
pub fn teams_to_pbx(rsa_bound: Option<f64>) -> Vec<Row> {
    let rich_target = match rsa_bound {
        Some(b) => format!(">= 80% of RSA bound (>= {} /s)", thousands(0.8 * b)),
        None => ">= 80% of RSA bound".into(),
    };
    let note = "not run in this plan (`teams_to_pbx` is `None`): `make bench` measures it with `teams_to_pbx`";
    vec![
        Row::not_yet(
            "Teams -> PBX, rich notifications (100 items/POST): presence changes/s",
            &rich_target,
            note,
        ),
        Row::not_yet(
            "Teams -> PBX, plain notifications: presence changes/s",
            ">= 50,000 /s",
            note,
        ),
        Row::not_yet(
            "latency notification -> SetPresence at 500/s: p50 / p99 / max",
            "p99 <= 3 ms",
            note,
        ),
    ]
}
