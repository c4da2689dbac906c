//! Figures that need connector features that have not landed. Each is printed as "not
//! measurable yet" with what it needs, never estimated. When a feature lands, replace its
//! entry here by a module that measures it (the e2e `Stack` with fake Microsoft 365 posting
//! notifications and the fake PBX observing `SetPresence` is the intended driver), keeping the
//! row's place and target.

use crate::table::{Row, thousands};

/// Teams -> PBX rows (issue 10, items 1 and 2). The rich target is relative to the RSA bound
/// measured in this run, so it is printed next to it.
pub fn teams_to_pbx(rsa_bound: Option<f64>) -> Vec<Row> {
    let rich_target = match rsa_bound {
        Some(b) => format!(">= 80% of RSA bound (>= {} /s)", thousands(0.8 * b)),
        None => ">= 80% of RSA bound".into(),
    };
    let feature = "Teams -> PBX presence sync (Graph subscriptions, rich notification decryption via `keys`, SetPresence to the PBX)";
    vec![
        Row::missing(
            "Teams -> PBX, rich notifications (100 items/POST): presence changes/s",
            &rich_target,
            feature,
        ),
        Row::missing(
            "Teams -> PBX, plain notifications: presence changes/s",
            ">= 50,000 /s",
            feature,
        ),
        Row::missing(
            "latency notification -> SetPresence at 500/s: p50 / p99 / max",
            "p99 <= 3 ms",
            feature,
        ),
        Row::missing(
            "PBX -> Teams: presence changes/s; Graph requests per 1,000 changes",
            "— ($batch + coalescing)",
            "PBX -> Teams presence sync ($batch, coalescing)",
        ),
    ]
}

/// Rows after memory (issue 10, items 9 and 10).
pub fn after_memory() -> Vec<Row> {
    vec![
        Row::missing(
            "restart recovery: host start -> every PBX presence correct; Graph calls",
            "<= 5 s, ceil(N/650) presence reads",
            "Teams -> PBX presence sync",
        ),
        Row::missing(
            "scale: users per instance, instances per host before a figure degrades 2x",
            "—",
            "the presence rows above (scale is measured against them)",
        ),
    ]
}
