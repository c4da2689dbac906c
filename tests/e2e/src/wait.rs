//! Polling with deadlines. Deadlines are generous on purpose: they only bound how long a broken
//! build takes to fail, they never assert speed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Deadline for a process to print its readiness line (includes the host compiling the guest).
pub const START_DEADLINE: Duration = Duration::from_secs(120);

/// Deadline for an observable state change (login, replication, sign-in...).
pub const STATE_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between probes.
const POLL: Duration = Duration::from_millis(100);

/// Calls `probe` until it returns `Some`, or fails after `deadline` naming `what` and the last
/// thing `describe_last` saw. Probe errors (a listener not up yet) count as "not yet".
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last_error = match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if start.elapsed() > deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {deadline:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {deadline:?} waiting for {what}"),
            }
        }
        std::thread::sleep(POLL);
    }
}
