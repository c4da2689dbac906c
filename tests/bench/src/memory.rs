//! Memory: resident size (`VmRSS` of the apphost *process*) once the connector holds N synced
//! users. Today the guest holds users replicated from the PBX (the fake PBX, over its real
//! AppWebsocket, through the e2e harness); Teams-side user state is not synced yet, so the
//! figure covers PBX users only. Bytes per user = the RSS difference between the two sizes
//! divided by the user difference, which removes the fixed cost of the host and the engine.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::{PbxOptions, Stack, StackOptions};

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

/// RSS of the host holding `users` replicated users, and how long replication took.
fn rss_with_users(users: usize) -> Result<(u64, Duration)> {
    let stack = Stack::start(StackOptions {
        pbx: Some(PbxOptions {
            users,
            ..Default::default()
        }),
        log_filter: "warn".into(),
        ..Default::default()
    })?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    loop {
        let st = stack.connector().status()?;
        if st
            .logged_in("master")
            .is_some_and(|c| c.users == users as u64)
        {
            break;
        }
        stack.check_running()?;
        if Instant::now() > deadline {
            bail!("{users} users not replicated within 300 s: {st:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    // Let the host finish committing and freeing the replication's transient buffers.
    std::thread::sleep(Duration::from_secs(1));
    let rss = vm_rss(host_pid(&stack)?)?;
    Ok((rss, took))
}

/// The memory rows for `(small, large)` user counts.
pub fn measure((small, large): (usize, usize)) -> Result<Vec<Row>> {
    let (rss_small, t_small) = rss_with_users(small)?;
    let (rss_large, t_large) = rss_with_users(large)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let per_user = rss_large.saturating_sub(rss_small) as f64 / (large - small) as f64;
    let how = "apphost process VmRSS after the fake PBX's user table is fully replicated (PBX users only: Teams user sync not landed)";
    Ok(vec![
        Row::info(
            &format!(
                "memory: apphost RSS, {} synced users",
                thousands(small as f64)
            ),
            mib(rss_small),
            "—",
            &format!("{how}; replication took {:.1} s", t_small.as_secs_f64()),
        ),
        Row::info(
            &format!(
                "memory: apphost RSS, {} synced users",
                thousands(large as f64)
            ),
            mib(rss_large),
            "—",
            &format!("{how}; replication took {:.1} s", t_large.as_secs_f64()),
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
