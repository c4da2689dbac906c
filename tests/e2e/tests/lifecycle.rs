//! The harness and the demo clean up after themselves: no process outlives its stack.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use e2e::process::{is_running, processes_mentioning};
use e2e::{Binaries, PbxOptions, Stack, StackOptions};

/// Every process of a stack (fakes and host) is gone once the stack is dropped, and so is its
/// directory.
#[test]
fn dropping_a_stack_leaves_no_process_behind() -> Result<()> {
    let stack = Stack::start(StackOptions {
        pbx: Some(PbxOptions::default()),
        m365: Some(Default::default()),
        ..Default::default()
    })?;
    let dir = stack.dir().display().to_string();
    let pids = stack.pids();
    assert_eq!(pids.len(), 3, "fake-m365, apphost and fake-pbx run");
    assert!(pids.iter().all(|&p| is_running(p)));
    drop(stack);
    let left: Vec<u32> = pids.into_iter().filter(|&p| is_running(p)).collect();
    assert_eq!(left, Vec::<u32>::new());
    assert!(!std::path::Path::new(&dir).exists());
    Ok(())
}

/// `make run`'s demo starts, labels itself as a demo, drives Teams presence, and stops
/// everything on Ctrl-C (SIGINT) with a clean exit.
#[test]
fn demo_runs_and_stops_cleanly_on_ctrl_c() -> Result<()> {
    Binaries::get()?; // builds the binaries once, so the demo need not run cargo again
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--users", "30", "--every-ms", "200"])
        .env("E2E_SKIP_BUILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = demo.stdout.take().context("demo stdout")?;
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut dir = None;
    let mut connector = None;
    let mut saw_banner = false;
    let outcome = (|| -> Result<()> {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .context("the demo went quiet")?;
            saw_banner |= line.contains("DEMO against FAKES");
            if let Some(d) = line.trim().strip_prefix("logs and config") {
                dir = Some(d.trim().to_string());
            }
            // The PBX's command line holds the App URL, which starts like the status URL.
            if let Some(u) = line.trim().strip_prefix("connector status") {
                connector = Some(u.trim().trim_end_matches("/status").to_string());
            }
            if line.starts_with("DEMO | Teams change:") {
                return Ok(());
            }
        }
    })();
    // SAFETY: kill(2) on our own, not yet reaped child.
    unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGINT) };
    let status = demo.wait()?;
    outcome?;
    assert!(saw_banner, "the demo must say it is a demo");
    if !status.success() {
        bail!("demo exited with {status}");
    }
    let dir = dir.context("the demo did not print its directory")?;
    let connector = connector.context("the demo did not print the connector's URL")?;
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<u32>::new(),
        "host or fake M365 left"
    );
    assert_eq!(
        processes_mentioning(&connector),
        Vec::<u32>::new(),
        "fake PBX left"
    );
    assert!(!std::path::Path::new(&dir).exists());
    Ok(())
}
