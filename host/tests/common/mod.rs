//! Shared helpers: locate guest artifacts, start an in-process host in a fresh directory, and
//! talk HTTP/WebSocket to it over loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// Generous deadline for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `<workspace>/tests/artifacts/<name>`, or a panic that says how to build it.
pub fn artifact(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/artifacts")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test-guests` first",
        path.display()
    );
    path
}

/// A fresh, empty directory under the system temp dir.
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "apphost-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Configuration text for a host with instances `t` (and `u`) serving the test guest.
pub fn config_text(extra_server: &str) -> String {
    format!(
        r#"
plugins_dir = "plugins"
watch_interval_ms = 100
[server]
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
max_body_bytes = 65536
{extra_server}
[storage]
data_dir = "data"
master_key_file = "secrets/master.key"
[log]
filter = "info"
[[instance]]
name = "t"
domain = "test.local"
plugin = "test"
password = "pw-t"
allow_outbound = ["127.0.0.1"]
extra_ca_file = "ca.pem"
memory_limit_mb = 32
event_deadline_ms = 500
[instance.settings]
greeting = "hello"
list = [1, 2]
[[instance]]
name = "u"
domain = "test.local"
plugin = "other"
password = "pw-u"
"#
    )
}

/// Puts plugins, an (empty unless present) extra CA file and `apphost.toml` into `dir`.
pub fn prepare_dir(dir: &Path, extra_server: &str) {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    for name in ["test", "other"] {
        std::fs::copy(
            artifact("test-guest-v1.wasm"),
            dir.join(format!("plugins/{name}.wasm")),
        )
        .unwrap();
    }
    if !dir.join("ca.pem").exists() {
        std::fs::write(dir.join("ca.pem"), "").unwrap();
    }
    std::fs::write(dir.join("apphost.toml"), config_text(extra_server)).unwrap();
}

/// A host running in this process.
pub struct TestHost {
    pub host: apphost::Host,
    pub dir: PathBuf,
    pub base: String,
}

impl TestHost {
    pub async fn start() -> TestHost {
        Self::start_with(fresh_dir("host"), "").await
    }

    /// Starts in `dir` (which may already hold `ca.pem`) with extra `[server]` lines.
    pub async fn start_with(dir: PathBuf, extra_server: &str) -> TestHost {
        prepare_dir(&dir, extra_server);
        let config = apphost::HostConfig::load(&dir.join("apphost.toml")).unwrap();
        let host = apphost::Host::start(config).await.expect("host starts");
        let base = format!("http://{}", host.http_addr);
        TestHost { host, dir, base }
    }

    /// URL of a path under instance `t`.
    pub fn t(&self, path: &str) -> String {
        format!("{}/test.local/t{path}", self.base)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}/test.local/t{path}", self.host.http_addr)
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends a request and returns status and body text.
pub async fn send(method: &str, url: &str, body: Vec<u8>) -> (u16, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {url} within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(url: &str) -> (u16, String) {
    send("GET", url, Vec::new()).await
}

pub async fn post(url: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
    send("POST", url, body.into()).await
}

/// A local upstream HTTP server answering `hello-from-upstream`; counts requests.
pub async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let seen = req
                        .headers()
                        .get("x-test")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(format!("hello-from-upstream ({seen})")),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// Waits until `check` holds, polling; panics with `what` after the deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
