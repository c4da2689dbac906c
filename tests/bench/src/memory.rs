//! Memory: resident size (`VmRSS` of the apphost *process*) once the connector holds N synced
//! users: the same people in the fake tenant and the fake PBX (half on a slave), replicated from
//! the PBX, read from Entra, matched, and watched by presence subscriptions of 650 users per
//! Teams account. Bytes per user = the RSS difference between the two sizes divided by the user
//! difference, which removes the fixed cost of the host and the engine.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::Stack;
use e2e::people::{people, synced_stack};

use crate::table::{Row, thousands};

/// The apphost process of `stack`, found by its `--config` path inside the stack directory.
fn host_pid(stack: &Stack) -> Result<u32> {
    let dir = stack.dir().to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let is_host = args.first().is_some_and(|a| a.ends_with("apphost"));
        if is_host && args.iter().any(|a| a.starts_with(&dir)) {
            return Ok(pid);
        }
    }
    bail!("no apphost process for {dir}")
}

/// `VmRSS` of `pid`, in bytes.
pub fn vm_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// RSS of the host holding `users` synced users, and how long syncing took.
fn rss_with_users(users: usize) -> Result<(u64, Duration)> {
    let persons = people(users, 77);
    let accounts = users.div_ceil(crate::restart_recovery::PER_ACCOUNT);
    let mut options = synced_stack(
        &persons,
        (1..=accounts)
            .map(crate::restart_recovery::account)
            .collect(),
    );
    options.log_filter = "warn".into();
    let stack = Stack::start(options)?;
    let result = measure_synced(&stack, users);
    stack.note(result)
}

fn measure_synced(stack: &Stack, users: usize) -> Result<(u64, Duration)> {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    loop {
        let st = stack.connector().status_json()?;
        let watched: u64 = st["presence"]["subscriptions"]
            .as_array()
            .map(|subs| subs.iter().filter_map(|s| s["users"].as_u64()).sum())
            .unwrap_or(0);
        if watched == users as u64 {
            break;
        }
        stack.check_running()?;
        if Instant::now() > deadline {
            bail!("{users} users not synced within 300 s ({watched} watched)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    // Let the host finish committing and freeing the replication's transient buffers.
    std::thread::sleep(Duration::from_secs(1));
    let rss = vm_rss(host_pid(stack)?)?;
    Ok((rss, took))
}

/// The memory rows for `(small, large)` user counts.
pub fn measure((small, large): (usize, usize)) -> Result<Vec<Row>> {
    let (rss_small, t_small) = rss_with_users(small)?;
    let (rss_large, t_large) = rss_with_users(large)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let per_user = rss_large.saturating_sub(rss_small) as f64 / (large - small) as f64;
    let how = "apphost process VmRSS once every user is synced: replicated from the fake PBX (master and slave), read from the fake Entra, matched, and watched by presence subscriptions (650 per Teams account); 1 s later";
    Ok(vec![
        Row::info(
            &format!(
                "memory: apphost RSS, {} synced users",
                thousands(small as f64)
            ),
            mib(rss_small),
            "—",
            &format!("{how}; syncing took {:.1} s", t_small.as_secs_f64()),
        ),
        Row::info(
            &format!(
                "memory: apphost RSS, {} synced users",
                thousands(large as f64)
            ),
            mib(rss_large),
            "—",
            &format!("{how}; syncing took {:.1} s", t_large.as_secs_f64()),
        ),
        Row::check(
            "memory: bytes per synced user",
            format!("{} B", thousands(per_user)),
            "<= 2 KiB",
            per_user <= 2048.0,
            &format!(
                "(RSS at {} - RSS at {}) / {} users",
                thousands(large as f64),
                thousands(small as f64),
                thousands((large - small) as f64)
            ),
        ),
    ])
}
