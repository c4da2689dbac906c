//! The real binary: KV written before a hard kill is there after a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

fn start_binary(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apphost"))
        .arg("--config")
        .arg(dir.join("apphost.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("apphost binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("apphost printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("instance t at ") {
            break rest.trim_end_matches('/').to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_survives_a_host_restart() {
    let dir = fresh_dir("restart");
    prepare_dir(&dir, "");

    let check = Command::new(env!("CARGO_BIN_EXE_apphost"))
        .args(["--check", "--config"])
        .arg(dir.join("apphost.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let (mut first, url) = start_binary(&dir);
    assert_eq!(get(&format!("{url}/count")).await, (200, "1".into()));
    assert_eq!(get(&format!("{url}/count")).await, (200, "2".into()));
    // A hard kill: only what was flushed before the answer can survive.
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, url) = start_binary(&dir);
    assert_eq!(get(&format!("{url}/count")).await, (200, "3".into()));
    assert!(get(&format!("{url}/init")).await.1.starts_with("start"));
    second.kill().unwrap();
    second.wait().unwrap();
}
