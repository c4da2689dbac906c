//! Rough numbers for the report (not asserted anywhere): cold start with a cached artifact,
//! per-request cost through the guest versus a plain hyper handler, and the hot-swap pause.
//! Uses the test guest: run `make test-guests` first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn artifact(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/artifacts")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: run `make test-guests`",
        p.display()
    );
    p
}

fn prepare(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        artifact("test-guest-v1.wasm"),
        dir.join("plugins/test.wasm"),
    )
    .unwrap();
    let config = r#"
plugins_dir = "plugins"
[server]
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
[storage]
data_dir = "data"
master_key_file = "master.key"
[[instance]]
name = "t"
domain = "bench"
plugin = "test"
password = "pw"
"#;
    std::fs::write(dir.join("apphost.toml"), config).unwrap();
    dir.join("apphost.toml")
}

async fn get(client: &HttpClient, url: &str) -> (u16, Bytes) {
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Mean sequential latency and throughput with `concurrency` parallel clients.
async fn load(client: &HttpClient, url: &str, total: usize, concurrency: usize) -> (Duration, f64) {
    for _ in 0..200 {
        get(client, url).await;
    }
    let started = Instant::now();
    for _ in 0..total {
        get(client, url).await;
    }
    let sequential = started.elapsed() / total as u32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / concurrency {
                assert_eq!(get(&client, &url).await.0, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rps = (total / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64();
    (sequential, rps)
}

async fn plain_hyper() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        "test-guest v1",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let root = std::env::temp_dir().join(format!("apphost-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();

    // 1. First start compiles; the second start (fresh data dir, same cache) loads the artifact.
    let first_dir = root.join("first");
    let config = apphost::HostConfig::load(&prepare(&first_dir)).unwrap();
    let started = Instant::now();
    let first = apphost::Host::start(config).await.unwrap();
    let url = format!("http://{}/bench/t/hello", first.http_addr);
    assert_eq!(get(&client, &url).await.0, 200);
    println!(
        "start with compile, to first answer:    {:?}",
        started.elapsed()
    );

    let cached_dir = root.join("cached");
    let config_path = prepare(&cached_dir);
    copy_dir(
        &first_dir.join("data/compiled"),
        &cached_dir.join("data/compiled"),
    );
    let config = apphost::HostConfig::load(&config_path).unwrap();
    let started = Instant::now();
    let host = apphost::Host::start(config).await.unwrap();
    let url = format!("http://{}/bench/t/hello", host.http_addr);
    assert_eq!(get(&client, &url).await.0, 200);
    println!(
        "start with cached artifact, to first answer: {:?}",
        started.elapsed()
    );

    // 2. Per-request cost: the guest path versus a plain hyper handler.
    let (guest_latency, guest_rps) = load(&client, &url, 4000, 16).await;
    let plain = format!("http://{}/", plain_hyper().await);
    let (plain_latency, plain_rps) = load(&client, &plain, 4000, 16).await;
    println!("sequential latency: guest {guest_latency:?}, plain hyper {plain_latency:?}");
    println!(
        "  => per-event overhead (queue hop + wasm call + effect): ~{:?}",
        guest_latency.saturating_sub(plain_latency)
    );
    println!("requests/s (16 clients): guest {guest_rps:.0}, plain hyper {plain_rps:.0}");
    let ctx = host.instance("t").unwrap();
    let events = ctx.metrics.events.load(Ordering::Relaxed);
    let batches = ctx.metrics.batches.load(Ordering::Relaxed);
    println!(
        "  events {events} in {batches} batches ({:.1} events/batch)",
        events as f64 / batches as f64
    );

    // 3. Hot-swap pause: worst request latency while v2 replaces v1, next to the baseline.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (_, body) = get(&client, &url).await;
                samples.push((t, t.elapsed(), body));
            }
            samples
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::copy(
        artifact("test-guest-v2.wasm"),
        cached_dir.join("plugins/test.wasm"),
    )
    .unwrap();
    let swap_started = Instant::now();
    let control = format!("http://{}/instances/t/reload", host.control_addr);
    let req = hyper::Request::post(control).body(Empty::new()).unwrap();
    let resp = client.request(req).await.unwrap();
    println!(
        "reload (compile + swap) took {:?}, status {}",
        swap_started.elapsed(),
        resp.status()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = probe.await.unwrap();
    let before: Vec<_> = samples.iter().filter(|s| s.0 < swap_started).collect();
    let during: Vec<_> = samples.iter().filter(|s| s.0 >= swap_started).collect();
    let max = |v: &[&(Instant, Duration, Bytes)]| v.iter().map(|s| s.1).max().unwrap_or_default();
    println!(
        "worst request latency: before swap {:?}, from swap start on {:?} ({} requests, last answer {:?})",
        max(&before),
        max(&during),
        during.len(),
        String::from_utf8_lossy(&samples.last().unwrap().2)
    );
    let _ = std::fs::remove_dir_all(&root);
    std::process::exit(0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
