//! Child processes with their output in a log file, stopped for sure when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a process gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// One running child process. Its stdout and stderr go to one log file; dropping it stops it.
#[derive(Debug)]
pub struct Process {
    name: String,
    // A mutex so that liveness checks work through `&self` while clients borrow the stack.
    child: Mutex<Option<Child>>,
    log: PathBuf,
    // Where this run's output starts in a log shared by several runs (host restarts).
    log_start: usize,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `log` (created if missing, so a
    /// restarted process keeps one log with every run in it).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_start = out.metadata()?.len() as usize;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Process {
            name: name.to_string(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
            log_start,
        })
    }

    /// The process's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log file (every run).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What this run has written so far.
    pub fn run_log(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(all.get(self.log_start..).unwrap_or_default()).into_owned()
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operating-system process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Fails if the process has exited (with its exit status and log tail).
    pub fn check_running(&self) -> Result<()> {
        let mut guard = self.child();
        let Some(child) = guard.as_mut() else {
            bail!("{} was stopped", self.name);
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                tail(&self.run_log(), 30)
            );
        }
        Ok(())
    }

    /// Waits until a log line contains `marker`; returns that line. Fails early if the process
    /// exits, and after `deadline`.
    pub fn wait_for_line(&self, marker: &str, deadline: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self.run_log().lines().find(|l| l.contains(marker)) {
                return Ok(line.to_string());
            }
            self.check_running()?;
            if start.elapsed() > deadline {
                bail!(
                    "{} did not print {marker:?} within {deadline:?}; log:\n{}",
                    self.name,
                    tail(&self.run_log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the process to stop (SIGTERM, so the host can flush its store), kills it if it has
    /// not exited within a grace period, and reaps it.
    pub fn stop(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < GRACE {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the process at once (SIGKILL), like a crash or a pulled plug.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes the child receive SIGKILL when the thread that started it ends, so even a test
/// process killed with SIGKILL (no destructors) leaves no fakes or hosts behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Pids of running processes whose command line mentions `needle` (e.g. a stack directory):
/// lets tests prove that nothing was left behind. Linux only (`/proc`); zombies are skipped.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the ")" that ends the command name; Z = zombie.
            let zombie = status
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}
