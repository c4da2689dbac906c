//! `apphost --check`: a plugin the host could not run fails the check, not the start.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_apphost"))
        .args(["--check", "--config"])
        .arg(dir.join("apphost.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_compiles_every_plugin_and_writes_no_data() {
    let dir = fresh_dir("check");
    prepare_dir(&dir, "");
    let (ok, text) = check(&dir);
    assert!(ok, "{text}");
    assert!(text.contains("ok (2 instances)"), "{text}");
    assert!(
        !dir.join("data").exists(),
        "a check created the data directory"
    );

    // Not a component at all.
    std::fs::write(dir.join("plugins/other.wasm"), b"not wasm").unwrap();
    let (ok, text) = check(&dir);
    assert!(!ok, "a broken plugin passed the check: {text}");
    assert!(
        text.contains("instance u") && text.contains("other.wasm"),
        "{text}"
    );

    // A valid component that is not a guest of this host.
    std::fs::write(dir.join("plugins/other.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let (ok, text) = check(&dir);
    assert!(
        !ok,
        "a component without the guest interface passed: {text}"
    );

    // Missing.
    std::fs::remove_file(dir.join("plugins/other.wasm")).unwrap();
    let (ok, text) = check(&dir);
    assert!(!ok && text.contains("other.wasm"), "{text}");
}
