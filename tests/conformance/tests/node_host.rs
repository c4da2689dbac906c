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
