//! Runs simulations of the connector guest: `sim --seed N --days D --users U [--rich]`, or a
//! soak over many seeds with `--seeds K` (seeds N..N+K). Prints a summary per run and, on a
//! violation, the command that replays it identically; exits 1 if any run failed.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use simhost::scenario::{Scenario, run_with};
use simhost::{Guest, engine};

const USAGE: &str = "usage: sim [--seed N] [--days D] [--users U] [--rich] [--quiet] [--sabotage] [--break-subscriptions] [--upgrade] [--leak-secret] [--pbx-to-teams] [--seeds K] [--guest PATH]";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sim: {e:#}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let mut sc = Scenario::new(1, 7, 100);
    let mut seeds = 1u64;
    let mut guest_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/microsoft365.wasm");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--seed" => sc.seed = value()?.parse()?,
            "--days" => sc.days = value()?.parse()?,
            "--users" => sc.users = value()?.parse()?,
            "--seeds" => seeds = value()?.parse()?,
            "--guest" => guest_path = PathBuf::from(value()?),
            "--rich" => sc.rich = true,
            "--quiet" => sc.quiet = true,
            "--sabotage" => sc.sabotage = true,
            "--break-subscriptions" => sc.break_subscriptions = true,
            "--upgrade" => sc.upgrade = true,
            "--leak-secret" => sc.leak_secret = true,
            "--pbx-to-teams" => sc.pbx_to_teams = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let started = Instant::now();
    let guest = Guest::load(&engine()?, &guest_path)?;
    // A seed replays identically only with the same guest: name it by content.
    let digest = {
        use sha2::Digest;
        let bytes = std::fs::read(&guest_path)?;
        let d = sha2::Sha256::digest(&bytes);
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    println!(
        "guest {} (sha256 {digest}...) compiled in {:.2} s",
        guest_path.display(),
        started.elapsed().as_secs_f64()
    );
    // Derived once, not per seed: compiling a guest costs more than a simulated day.
    let newer = if sc.upgrade {
        let (newer, version) = guest.newer()?;
        println!("upgrades go to {version}");
        Some(newer)
    } else {
        None
    };
    let first = sc.seed;
    let (mut failed, mut days) = (Vec::new(), 0.0);
    for seed in first..first + seeds {
        let run_sc = Scenario { seed, ..sc.clone() };
        let summary = run_with(&guest, newer.as_ref(), &run_sc)?;
        println!("{summary}\n");
        days += summary.simulated_days;
        if summary.violation.is_some() {
            failed.push(seed);
        }
    }
    if seeds > 1 {
        let wall = started.elapsed().as_secs_f64();
        println!(
            "soak: {seeds} seeds, {} clean, {:.1} simulated days in {wall:.1} s ({:.1} days/s); failing seeds: {failed:?}",
            seeds - failed.len() as u64,
            days,
            days / wall
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
