//! The Node host beyond the shared scripts: it runs the unmodified connector component
//! `plugins/microsoft365.wasm`, and its file-backed KV survives the process being killed.

use std::path::Path;

use conformance::node::{check_ready, config_json, spawn};
use conformance::real::send;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_host_serves_the_connector_status_page() {
    check_ready().unwrap();
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/microsoft365.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run `make guest`",
        wasm.display()
    );
    let dir = std::env::temp_dir().join(format!("conformance-node-m365-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(&wasm, dir.join("plugins/microsoft365.wasm")).unwrap();
    let config = serde_json::json!({
        "listen": "127.0.0.1:0", "control": "127.0.0.1:0", "log": "warn",
        "instances": [{ "name": "demo", "domain": "example.com", "plugin": "microsoft365",
                        "password": "pw", "allow_outbound": [] }]
    });
    std::fs::write(dir.join("host.json"), config.to_string()).unwrap();
    let (mut child, http, _) = spawn(&dir.join("host.json")).unwrap();
    let url = format!("http://{http}/example.com/demo/status");
    let answer = conformance::real::send("GET".into(), url, Vec::new()).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let answer = answer.unwrap();
    assert_eq!(answer.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status["version"], "microsoft365 0.1.0", "{status}");
    assert_eq!(status["api_version"], "0.1.0", "{status}");
    assert_eq!(status["events"]["init"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_host_kv_survives_a_killed_process_and_timers_do_not() {
    check_ready().unwrap();
    let dir = std::env::temp_dir().join(format!("conformance-node-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        conformance::test_guest("v1").unwrap(),
        dir.join("plugins/test.wasm"),
    )
    .unwrap();
    std::fs::write(dir.join("host.json"), config_json().to_string()).unwrap();
    let t = |http: &str, path: &str| format!("http://{http}/test.local/t{path}");

    let (mut child, http, _) = spawn(&dir.join("host.json")).unwrap();
    for expected in ["1", "2", "3"] {
        let answer = send("GET".into(), t(&http, "/count"), vec![])
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&answer.body), expected);
    }
    // A timer that would answer later: the process dies before it fires.
    let pending = tokio::spawn(send("GET".into(), t(&http, "/timer?ms=60000"), vec![]));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the connection died with the host"
    );

    let (mut child, http, _) = spawn(&dir.join("host.json")).unwrap();
    let count = send("GET".into(), t(&http, "/count"), vec![]).await;
    let init = send("GET".into(), t(&http, "/init"), vec![]).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(String::from_utf8_lossy(&count.unwrap().body), "4");
    // A host restart is a fresh start (timers are gone); the waiter the timer left in KV stays.
    assert_eq!(
        String::from_utf8_lossy(&init.unwrap().body),
        "start from= snapshot= open_ws=0"
    );
}

/// A host with two instances of the test guest: `t` with a short event deadline and a small
/// memory cap, and `u` with the defaults.
fn sandbox_config() -> serde_json::Value {
    let mut config = config_json();
    let t = config["instances"][0].clone();
    let mut strict = t.clone();
    strict["event_deadline_ms"] = 1000.into();
    strict["memory_limit_mb"] = 32.into();
    let mut other = t;
    other["name"] = "u".into();
    config["instances"] = serde_json::json!([strict, other]);
    config
}

/// The Node host's sandbox: a guest that loops forever is interrupted (its worker ended at the
/// deadline, retried on fresh workers, then dead-lettered with a 500) while the other instance
/// keeps serving, and the instance comes back from KV; a guest that allocates without end hits
/// its memory cap and traps the same way instead of taking the host down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_host_interrupts_a_runaway_guest_and_caps_its_memory() {
    check_ready().unwrap();
    let dir = std::env::temp_dir().join(format!("conformance-node-sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        conformance::test_guest("v1").unwrap(),
        dir.join("plugins/test.wasm"),
    )
    .unwrap();
    std::fs::write(dir.join("host.json"), sandbox_config().to_string()).unwrap();
    let (mut child, http, _) = spawn(&dir.join("host.json")).unwrap();
    let at = |instance: &str, path: &str| format!("http://{http}/test.local/{instance}{path}");
    let get = |url: String| send("GET".into(), url, vec![]);

    assert_eq!(get(at("t", "/count")).await.unwrap().body, b"1");
    let looping = tokio::spawn(get(at("t", "/loop")));
    // While `t` is stuck in its loop, `u` answers: the host's own thread is free.
    for _ in 0..5 {
        let answer = get(at("u", "/hello")).await.unwrap();
        assert_eq!(answer.status, 200);
    }
    let looped = looping.await.unwrap().unwrap();
    assert_eq!(
        looped.status,
        500,
        "{}",
        String::from_utf8_lossy(&looped.body)
    );
    // A fresh guest from KV: the count goes on.
    assert_eq!(get(at("t", "/count")).await.unwrap().body, b"2");

    let grown = get(at("t", "/grow")).await.unwrap();
    assert_eq!(
        grown.status,
        500,
        "{}",
        String::from_utf8_lossy(&grown.body)
    );
    assert_eq!(get(at("t", "/count")).await.unwrap().body, b"3");
    assert_eq!(get(at("t", "/hello")).await.unwrap().status, 200);

    let metrics = get(format!("http://{http}/metrics")).await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    // Three attempts at /loop, each ended at the deadline; /grow trapped, not interrupted.
    assert!(
        metrics.contains("nodehost_interruptions_total{instance=\"t\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodehost_dead_letters_total{instance=\"t\"} 2"),
        "{metrics}"
    );
}
