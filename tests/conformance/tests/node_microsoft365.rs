//! The Node host runs the unmodified connector component `plugins/microsoft365.wasm` and
//! answers its status page.

use std::path::Path;

use conformance::node::{check_ready, spawn};

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
