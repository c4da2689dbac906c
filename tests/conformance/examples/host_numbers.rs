//! Start-up time and per-event overhead of `apphost` and the Node host, side by side, from one
//! run on this machine. Both run as subprocesses on loopback with the test guest v1:
//!
//! ```text
//! cargo build --release -p apphost
//! cargo run --release -p conformance --example host_numbers
//! ```
//!
//! Start-up: from spawning the process to the first `200` from the guest's `/hello`, cold
//! (empty compile/transpile cache) and warm (cache filled by the cold run). Per event: sequential
//! `GET /hello` round trips over one keep-alive connection (each is one event through the guest),
//! then throughput with 8 concurrent clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const SEQUENTIAL: usize = 3000;
const CONCURRENT: usize = 8;
const THROUGHPUT_FOR: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A host to measure: how to lay out its directory and start it.
struct Subject {
    name: &'static str,
    start: fn(&Path, u16) -> Child,
}

fn apphost_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("APPHOST_BIN") {
        return bin.into();
    }
    let release = workspace().join("target/release/apphost");
    assert!(
        release.exists(),
        "{} missing: cargo build --release -p apphost",
        release.display()
    );
    release
}

fn start_apphost(dir: &Path, port: u16) -> Child {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        workspace().join("tests/artifacts/test-guest-v1.wasm"),
        dir.join("plugins/test.wasm"),
    )
    .unwrap();
    let config = format!(
        r#"
plugins_dir = "plugins"
[server]
listen = "127.0.0.1:{port}"
control = "127.0.0.1:{}"
[storage]
data_dir = "data"
master_key_file = "master.key"
[log]
filter = "warn"
[[instance]]
name = "t"
domain = "test.local"
plugin = "test"
password = "pw"
"#,
        free_port()
    );
    std::fs::write(dir.join("apphost.toml"), config).unwrap();
    Command::new(apphost_bin())
        .arg("--config")
        .arg(dir.join("apphost.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apphost starts")
}

fn start_node(dir: &Path, port: u16) -> Child {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        workspace().join("tests/artifacts/test-guest-v1.wasm"),
        dir.join("plugins/test.wasm"),
    )
    .unwrap();
    let mut config = conformance::node::config_json();
    config["listen"] = format!("127.0.0.1:{port}").into();
    std::fs::write(dir.join("host.json"), config.to_string()).unwrap();
    Command::new("node")
        .arg(conformance::node::node_host_dir().join("host.js"))
        .arg("--config")
        .arg(dir.join("host.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts")
}

async fn hello(client: &HttpClient, url: &str) -> Option<u16> {
    let resp = client.get(url.parse().unwrap()).await.ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// Spawns the host and returns (process, time until the guest answered, or `None` if it never
/// did within a minute, URL of `/hello`).
async fn start_and_time(
    subject: &Subject,
    dir: &Path,
    client: &HttpClient,
) -> (Child, Option<Duration>, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/test.local/t/hello");
    let started = Instant::now();
    let child = (subject.start)(dir, port);
    let mut ready = None;
    while started.elapsed() < Duration::from_secs(60) {
        if hello(client, &url).await == Some(200) {
            ready = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (child, ready, url)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let subjects = [
        Subject {
            name: "apphost",
            start: start_apphost,
        },
        Subject {
            name: "node-host",
            start: start_node,
        },
    ];
    // The Node host's transpile cache for the test guest; removed for its cold start.
    let v1 = std::fs::read(workspace().join("tests/artifacts/test-guest-v1.wasm")).unwrap();
    let sha = sha2_hex(&v1);
    println!(
        "{:<10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>14}",
        "host", "cold ms", "warm ms", "mean µs/ev", "p50 µs", "p99 µs", "events/s (8)"
    );
    for subject in &subjects {
        let dir = std::env::temp_dir().join(format!(
            "host-numbers-{}-{}",
            subject.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if subject.name == "node-host" {
            let _ =
                std::fs::remove_dir_all(conformance::node::node_host_dir().join("gen").join(&sha));
        }
        let (mut child, cold, _) = start_and_time(subject, &dir, &client).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let cold = cold.unwrap_or_else(|| panic!("{} did not start", subject.name));
        let (mut child, warm, url) = start_and_time(subject, &dir, &client).await;
        let Some(warm) = warm else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not start", subject.name);
        };

        let mut samples = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..200 {
            hello(&client, &url).await; // warm-up (JIT, connection pool)
        }
        for _ in 0..SEQUENTIAL {
            let t = Instant::now();
            assert_eq!(hello(&client, &url).await, Some(200));
            samples.push(t.elapsed());
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];

        let until = Instant::now() + THROUGHPUT_FOR;
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENT {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    if hello(&client, &url).await == Some(200) {
                        n += 1;
                    }
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        println!(
            "{:<10} {:>10.1} {:>10.1} {:>12.1} {:>10.1} {:>10.1} {:>14.0}",
            subject.name,
            ms(cold),
            ms(warm),
            mean.as_secs_f64() * 1e6,
            p(0.5).as_secs_f64() * 1e6,
            p(0.99).as_secs_f64() * 1e6,
            total as f64 / THROUGHPUT_FOR.as_secs_f64()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    conformance::hex(&sha2::Sha256::digest(bytes))
}
