//! `make bench`: the figures of issue 10, measured side by side in one run on one machine and
//! printed as one markdown table (figure, target, pass/miss).
//!
//! Each module measures one group of rows and returns [`table::Row`]s; [`run`] calls them in
//! order. A figure that needs a feature the connector does not have yet is printed as "not
//! measurable yet" by [`pending`], never estimated: when the feature lands, replace its entry
//! there with a module that measures it.
//!
//! Everything runs on loopback. Each measurement warms up first and then measures a bounded
//! amount of work, so no loop depends on the machine being fast to terminate.

#![deny(missing_docs)]

pub mod core_ratio;
pub mod hosted;
pub mod http;
pub mod machine;
pub mod memory;
pub mod overhead;
pub mod pbx_to_teams;
pub mod pending;
pub mod plan;
pub mod restart_recovery;
pub mod rsa;
pub mod scale;
pub mod startup;
pub mod swap;
pub mod table;
pub mod teams_to_pbx;

use std::time::Instant;

pub use plan::Plan;
pub use table::Row;

/// Runs every measurement of `plan` in order and returns the rows. A measurement that fails
/// becomes a row saying so (the table is still printed).
pub async fn run(plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    let step = |name: &str| {
        eprintln!("bench: {name} ...");
        Instant::now()
    };

    let t = step("native RSA bound");
    let rsa = rsa::measure(plan).await;
    eprintln!("  {:?}", t.elapsed());
    let rsa_bound = rsa.bound;
    rows.extend(rsa.rows);

    match plan.teams_to_pbx {
        Some(sizes) => {
            let t = step("Teams -> PBX");
            let result =
                tokio::task::spawn_blocking(move || teams_to_pbx::measure(sizes, rsa_bound))
                    .await
                    .map_err(anyhow::Error::from);
            rows.extend(or_failed("Teams -> PBX", result));
            eprintln!("  {:?}", t.elapsed());
        }
        // Not run in this plan: the rows keep their place in the order.
        None => rows.extend(pending::teams_to_pbx(rsa_bound)),
    }

    if let Some(sizes) = plan.pbx_to_teams {
        let t = step("PBX -> Teams");
        let result = tokio::task::spawn_blocking(move || pbx_to_teams::measure(sizes))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        rows.extend(or_failed("PBX -> Teams", result));
        eprintln!("  {:?}", t.elapsed());
    }

    let t = step("wasm/native ratio");
    rows.extend(or_failed(
        "wasm/native ratio",
        core_ratio::measure(plan).await,
    ));
    eprintln!("  {:?}", t.elapsed());

    let t = step("host overhead");
    rows.extend(or_failed("host overhead", overhead::measure(plan).await));
    eprintln!("  {:?}", t.elapsed());

    let t = step("hot swap");
    rows.extend(or_failed("hot swap", swap::measure(plan).await));
    eprintln!("  {:?}", t.elapsed());

    let t = step("start-up");
    rows.extend(or_failed("start-up", startup::measure(plan).await));
    eprintln!("  {:?}", t.elapsed());

    if let Some(users) = plan.memory_users {
        let t = step("memory");
        let result = tokio::task::spawn_blocking(move || memory::measure(users))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        rows.extend(or_failed("memory", result));
        eprintln!("  {:?}", t.elapsed());
    }

    if let Some(users) = plan.restart_users {
        let t = step("restart recovery");
        let result = tokio::task::spawn_blocking(move || restart_recovery::measure(users))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        rows.extend(or_failed("restart recovery", result));
        eprintln!("  {:?}", t.elapsed());
    }

    match &plan.scale {
        Some(sizes) => {
            let t = step("scale");
            rows.extend(or_failed("scale", scale::measure(sizes).await));
            eprintln!("  {:?}", t.elapsed());
        }
        None => rows.push(Row::not_yet(
            "scale: users per instance, instances per host before a figure degrades 2x",
            "—",
            "not run in this plan (`scale` is `None`)",
        )),
    }
    rows
}

fn or_failed(what: &str, result: anyhow::Result<Vec<Row>>) -> Vec<Row> {
    result.unwrap_or_else(|e| vec![Row::failed(what, &format!("{e:#}"))])
}
