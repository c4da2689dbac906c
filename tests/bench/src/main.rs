//! `make bench`: measures every figure of issue 10 side by side in one run and prints one
//! markdown table. Needs `make guest test-guests` (the Makefile's `bench` target does it).
//!
//! One group of rows on its own, with chosen sizes, for working on it:
//! `cargo run --release -p bench -- --only pbx-to-teams 200 2000`, `--only restart 200` or
//! `--only teams-to-pbx 600 10 5000 [rich|plain]` (users, rounds, latency posts, one kind only)
//! or `--only scale 10000 8` (the full plan's points up to 10,000 users and 8 instances).
//! `BENCH_LOG=info` keeps the host's log at info in the stack directory of a failed row.

use std::time::Instant;

use bench::machine::Machine;
use bench::{Plan, Row, table};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let started = Instant::now();
    let machine = Machine::detect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows = match args.first().map(String::as_str) {
        None => bench::run(&Plan::full()).await,
        Some("--only") => only(&args[1..]).await,
        Some(other) => {
            eprintln!(
                "unknown argument {other}; usage: bench [--only pbx-to-teams|restart|teams-to-pbx|scale [sizes]]"
            );
            std::process::exit(2);
        }
    };
    println!("{}", table::render(&machine, &rows, started.elapsed()));
    // Hosts that did not stop in time must not keep the process alive.
    std::process::exit(0);
}

/// The rows of one measurement; sizes from the arguments or small defaults.
async fn only(args: &[String]) -> Vec<Row> {
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let what = args.first().cloned().unwrap_or_default();
    let kind = args.get(4).cloned().unwrap_or_default();
    let (users, changes) = (num(1, 200), num(2, 2_000));
    let (rounds, latency_posts) = (num(2, 10), num(3, 5_000));
    if what == "scale" {
        // The full plan's points up to the given largest users per instance and instances.
        let mut sizes = bench::scale::Sizes::full();
        sizes.users.retain(|&n| n <= num(1, usize::MAX));
        sizes.instances.retain(|&k| k <= num(2, usize::MAX));
        if sizes.users.is_empty() || sizes.instances.is_empty() {
            return vec![Row::failed(
                "--only scale",
                "no points left below those sizes",
            )];
        }
        return bench::scale::measure(&sizes)
            .await
            .unwrap_or_else(|e| vec![Row::failed("--only scale", &format!("{e:#}"))]);
    }
    // The in-process rows (wasm/native, hot swap) are async and use the full plan's sizes
    // unless given: `--only wasm [rows] [rounds]`, `--only swap [events/s]`.
    let mut plan = Plan::full();
    match what.as_str() {
        "wasm" => {
            plan.core_rows = num(1, 10_000) as u32;
            plan.core_rounds = num(2, 3);
            let r = bench::core_ratio::measure(&plan).await;
            return r.unwrap_or_else(|e| vec![Row::failed("--only", &format!("{e:#}"))]);
        }
        "swap" => {
            plan.swap_rate = num(1, 5_000) as u32;
            let r = bench::swap::measure(&plan).await;
            return r.unwrap_or_else(|e| vec![Row::failed("--only", &format!("{e:#}"))]);
        }
        _ => {}
    }
    let result = tokio::task::spawn_blocking(move || match what.as_str() {
        "pbx-to-teams" => bench::pbx_to_teams::measure((users, changes)),
        "restart" => bench::restart_recovery::measure(users),
        "memory" => bench::memory::measure((users, changes)),
        "teams-to-pbx" => Ok(bench::teams_to_pbx::measure(
            bench::teams_to_pbx::Sizes {
                users,
                rounds,
                latency_posts,
                latency_rate: 500,
                rich: kind != "plain",
                plain: kind != "rich",
            },
            None,
        )),
        _ => Err(anyhow::anyhow!(
            "--only pbx-to-teams [users] [changes] | restart [users] | teams-to-pbx [users] [rounds] [latency posts] [rich|plain] | wasm [rows] [rounds] | swap [events/s]"
        )),
    })
    .await
    .expect("measurement thread");
    result.unwrap_or_else(|e| vec![Row::failed("--only", &format!("{e:#}"))])
}
