//! The runner for hosts reached over loopback (`apphost`, the Node host): real HTTP requests,
//! real WebSocket clients, a real local upstream, wall-clock time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{Answer, Script, Step, Vars, upstream_body, upstream_delay_ms};

/// How long any one answer or frame may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A host under test, reachable over loopback.
pub trait RealHost {
    /// `http://<addr>` of the public listener.
    fn base(&self) -> String;
    /// Replaces the guest by the test guest v2 between two events.
    fn swap(&mut self) -> impl Future<Output = Result<()>>;
    /// Makes the host restart the guest instance from KV.
    fn restart(&mut self) -> impl Future<Output = Result<()>>;
}

/// What the local upstream saw.
#[derive(Default)]
pub struct Seen {
    /// `METHOD path x-test` per HTTP request.
    pub requests: Mutex<Vec<String>>,
    /// Text frames received by the WebSocket upstream.
    pub frames: Mutex<Vec<String>>,
}

/// A local HTTP upstream and a WebSocket upstream, both on 127.0.0.1.
pub struct Upstream {
    /// Addresses for scripts.
    pub vars: Vars,
    /// What they saw.
    pub seen: Arc<Seen>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Upstream {
    /// Starts both servers.
    pub async fn start() -> Result<Upstream> {
        let seen = Arc::new(Seen::default());
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let ws = TcpListener::bind("127.0.0.1:0").await?;
        // A port that was free a moment ago: connecting to it is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let (hp, wp) = (http.local_addr()?.port(), ws.local_addr()?.port());
        let vars = Vars {
            upstream: format!("http://127.0.0.1:{hp}"),
            denied: format!("http://localhost:{hp}"),
            closed: format!("http://{closed}"),
            upstream_ws: format!("ws://127.0.0.1:{wp}"),
            denied_ws: format!("ws://localhost:{wp}"),
        };
        let tasks = vec![
            tokio::spawn(serve_http(http, seen.clone())),
            tokio::spawn(serve_ws(ws, seen.clone())),
        ];
        Ok(Upstream { vars, seen, tasks })
    }
}

async fn serve_http(listener: TcpListener, seen: Arc<Seen>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let path = req.uri().path().to_string();
                let method = req.method().to_string();
                let x_test = req
                    .headers()
                    .get("x-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.requests
                    .lock()
                    .expect("seen")
                    .push(format!("{method} {path} {x_test}"));
                async move {
                    tokio::time::sleep(Duration::from_millis(upstream_delay_ms(&path))).await;
                    let body = upstream_body(&method, &path, &x_test);
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_ws(listener: TcpListener, seen: Arc<Seen>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    seen.frames.lock().expect("seen").push(t.to_string());
                }
            }
        });
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs one script against a host.
pub async fn run_script<H: RealHost>(host: &mut H, script: &Script) -> Result<()> {
    let upstream = Upstream::start().await?;
    let vars = &upstream.vars;
    let prefix = format!("{}/{}/{}", host.base(), crate::DOMAIN, crate::INSTANCE);
    let ws_prefix = prefix.replacen("http://", "ws://", 1);
    let mut pending: HashMap<String, JoinHandle<Result<Answer>>> = HashMap::new();
    let mut sockets: HashMap<String, Ws> = HashMap::new();
    for (i, step) in script.steps.iter().enumerate() {
        let at = || format!("step {} ({step:?})", i + 1);
        match step {
            Step::Http {
                method,
                path,
                body,
                name,
                expect,
            } => {
                let url = format!("{prefix}{}", vars.apply(path));
                let request = send(method.clone(), url, vars.apply(body).into_bytes());
                match (name, expect) {
                    (Some(name), None) => {
                        pending.insert(name.clone(), tokio::spawn(request));
                        // Give the host the moment it needs to take the request in, so that
                        // the next step really happens after it.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    (None, Some(expect)) => expect.check(&request.await?).with_context(at)?,
                    _ => bail!("{}: give either `as` or `expect`", at()),
                }
            }
            Step::Await { name, expect } => {
                let task = pending
                    .remove(name)
                    .ok_or_else(|| anyhow!("{}: no request named {name}", at()))?;
                expect.check(&task.await??).with_context(at)?;
            }
            Step::WsOpen { name, path } => {
                let url = format!("{ws_prefix}{}", vars.apply(path));
                let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
                    .await
                    .context("WebSocket handshake timed out")?
                    .with_context(at)?;
                sockets.insert(name.clone(), ws);
            }
            Step::WsSend {
                name,
                text,
                binary_hex,
            } => {
                let ws = socket(&mut sockets, name)?;
                let msg = match (text, binary_hex) {
                    (Some(t), None) => Message::text(t.clone()),
                    (None, Some(hex)) => Message::binary(crate::unhex(hex)),
                    _ => bail!("{}: give `text` or `binary_hex`", at()),
                };
                ws.send(msg).await.with_context(at)?;
            }
            Step::WsExpect {
                name,
                text,
                binary_hex,
                close,
            } => {
                let ws = socket(&mut sockets, name)?;
                let got = next_frame(ws).await.with_context(at)?;
                let ok = match (&got, text, binary_hex, close) {
                    (Message::Text(t), Some(want), _, _) => t.as_str() == want,
                    (Message::Binary(b), _, Some(hex), _) => b[..] == crate::unhex(hex)[..],
                    (Message::Close(Some(f)), _, _, Some(code)) => u16::from(f.code) == *code,
                    _ => false,
                };
                if !ok {
                    bail!(
                        "{}: expected text={text:?} binary={binary_hex:?} close={close:?}, got {got:?}",
                        at()
                    );
                }
            }
            Step::WsClose { name } => {
                let mut ws = sockets
                    .remove(name)
                    .ok_or_else(|| anyhow!("no socket {name}"))?;
                ws.close(None).await.with_context(at)?;
                // Read until the host's close answer, so that the close has been taken in.
                let _ =
                    tokio::time::timeout(PATIENCE, async { while ws.next().await.is_some() {} })
                        .await;
            }
            Step::UpstreamSeen { requests } => {
                let want: Vec<String> = requests.iter().map(|r| vars.apply(r)).collect();
                let got = upstream.seen.requests.lock().expect("seen").clone();
                if got != want {
                    bail!("{}: upstream saw {got:?}", at());
                }
            }
            Step::UpstreamWsSeen { frames } => {
                // Frames travel on their own connection: give them a moment to arrive.
                let deadline = Instant::now() + PATIENCE;
                loop {
                    let got = upstream.seen.frames.lock().expect("seen").clone();
                    if &got == frames {
                        break;
                    }
                    if Instant::now() > deadline || got.len() > frames.len() {
                        bail!("{}: upstream WebSocket saw {got:?}", at());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Step::OaepDecrypt {
                key,
                hash,
                plaintexts,
            } => {
                let public = send(
                    "GET".into(),
                    format!("{prefix}/keys/public?name={key}"),
                    vec![],
                )
                .await?;
                if public.status != 200 {
                    bail!("{}: /keys/public answered {}", at(), public.status);
                }
                let (body, want) = crate::oaep_batch(&public.body, hash, plaintexts)?;
                let url = format!("{prefix}/keys/decrypt?name={key}&hash={hash}");
                let answer = send("POST".into(), url, body.into_bytes()).await?;
                let expect = crate::Expect::exact(200, &want);
                expect.check(&answer).with_context(at)?;
            }
            Step::Restart => host.restart().await.with_context(at)?,
            Step::Swap => host.swap().await.with_context(at)?,
            Step::Sleep { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }
    if let Some(name) = pending.keys().next() {
        bail!("request {name} was never awaited");
    }
    Ok(())
}

fn socket<'a>(sockets: &'a mut HashMap<String, Ws>, name: &str) -> Result<&'a mut Ws> {
    sockets
        .get_mut(name)
        .ok_or_else(|| anyhow!("no socket named {name}"))
}

async fn next_frame(ws: &mut Ws) -> Result<Message> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .context("no frame in time")?
            .ok_or_else(|| anyhow!("connection ended without a frame"))??;
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Ok(other),
        }
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends one request and collects the answer.
pub async fn send(method: String, url: String, body: Vec<u8>) -> Result<Answer> {
    let started = Instant::now();
    let req = hyper::Request::builder()
        .method(method.as_str())
        .uri(&url)
        .body(Full::new(Bytes::from(body)))?;
    let resp = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .with_context(|| format!("no answer to {method} {url} within {PATIENCE:?}"))?
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok(Answer {
        status,
        body,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
