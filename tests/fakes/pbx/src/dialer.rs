//! The thin socket layer: drives the sans-IO [`Pbx`] with tokio, dialling the connector's App
//! URL over ws:// or wss:// (rustls, web PKI roots plus an optional extra CA), and runs myApps
//! user sessions ([`UserSession`]) over their own sockets.

use crate::client::{SessionConfig, UserSession};
use crate::clock::Clock;
use crate::pbx::{ConnId, Output, Pbx};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// Wall clock for the real binary: milliseconds since the driver started.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// Starts now.
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// rustls client config trusting the web PKI roots plus the certificates in `extra_ca` (PEM).
pub fn tls_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = extra_ca {
        for c in CertificateDer::pem_file_iter(p)? {
            roots.add(c?)?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

enum Cmd {
    Text(String),
    Close,
    Abort,
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

struct SessionEntry {
    session: UserSession,
    tx: mpsc::UnboundedSender<Cmd>,
    connected: bool,
    closed: bool,
}

/// Handle on a running fake PBX (cheap to clone). All mutations go through [`Handle::with`],
/// which wakes the driver so resulting frames are sent at once.
#[derive(Clone)]
pub struct Handle {
    /// The core. Prefer [`Handle::with`] for mutations.
    pub pbx: Arc<Mutex<Pbx>>,
    kick: Arc<Notify>,
    tls: Arc<rustls::ClientConfig>,
    sessions: Arc<Mutex<BTreeMap<u64, SessionEntry>>>,
    next_session: Arc<Mutex<u64>>,
}

impl Handle {
    /// Starts the driver task for `pbx` on the current tokio runtime.
    pub fn start(pbx: Pbx, tls: Arc<rustls::ClientConfig>) -> Self {
        let h = Self {
            pbx: Arc::new(Mutex::new(pbx)),
            kick: Arc::new(Notify::new()),
            tls,
            sessions: Arc::new(Mutex::new(BTreeMap::new())),
            next_session: Arc::new(Mutex::new(1)),
        };
        tokio::spawn(drive(h.clone()));
        h
    }

    /// Runs `f` on the core and wakes the driver.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pbx) -> R) -> R {
        let r = f(&mut self.pbx.lock().expect("pbx lock"));
        self.kick.notify_one();
        r
    }

    /// Opens a myApps user session to `url` (the app's websocket URL). Returns its id.
    pub fn open_session(&self, url: &str, cfg: SessionConfig) -> u64 {
        let id = {
            let mut n = self.next_session.lock().expect("lock");
            *n += 1;
            *n - 1
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.sessions.lock().expect("lock").insert(
            id,
            SessionEntry {
                session: UserSession::new(cfg),
                tx,
                connected: false,
                closed: false,
            },
        );
        tokio::spawn(session_task(self.clone(), id, url.to_string(), rx));
        id
    }

    /// Runs `f` on a session; frames it returns are sent.
    pub fn with_session<R>(
        &self,
        id: u64,
        f: impl FnOnce(&mut UserSession) -> (R, Vec<String>),
    ) -> Option<R> {
        let mut s = self.sessions.lock().expect("lock");
        let e = s.get_mut(&id)?;
        let (r, frames) = f(&mut e.session);
        for t in frames {
            let _ = e.tx.send(Cmd::Text(t));
        }
        Some(r)
    }

    /// Session state as JSON (state, received frames, violations, searches, config).
    pub fn session_json(&self, id: u64) -> Option<serde_json::Value> {
        let s = self.sessions.lock().expect("lock");
        let e = s.get(&id)?;
        let mut v = serde_json::to_value(&e.session).ok()?;
        v["connected"] = e.connected.into();
        v["closed"] = e.closed.into();
        Some(v)
    }

    /// Closes a session.
    pub fn close_session(&self, id: u64) {
        if let Some(e) = self.sessions.lock().expect("lock").get(&id) {
            let _ = e.tx.send(Cmd::Close);
        }
    }
}

async fn drive(h: Handle) {
    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<Cmd>> = HashMap::new();
    loop {
        let outs = {
            let mut p = h.pbx.lock().expect("pbx lock");
            p.tick();
            p.drain()
        };
        for o in outs {
            match o {
                Output::Dial { conn, url, .. } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    conns.insert(conn, tx);
                    tokio::spawn(conn_task(h.clone(), conn, url, rx));
                }
                Output::Send { conn, text } => {
                    if let Some(t) = conns.get(&conn) {
                        let _ = t.send(Cmd::Text(text));
                    }
                }
                Output::Close { conn } => {
                    if let Some(t) = conns.remove(&conn) {
                        let _ = t.send(Cmd::Close);
                    }
                }
                Output::CloseMidMessage { conn } => {
                    if let Some(t) = conns.remove(&conn) {
                        let _ = t.send(Cmd::Abort);
                    }
                }
            }
        }
        conns.retain(|_, t| !t.is_closed());
        tokio::select! {
            _ = h.kick.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

async fn connect(url: &str, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(tls.clone())),
    )
    .await?;
    Ok(ws)
}

/// Writes a frame header announcing 100 payload bytes, sends 10 and drops TCP without a
/// close handshake: the service sees a connection dying mid-message.
async fn abort_mid_message(mut ws: Ws) {
    let s = ws.get_mut();
    let mut bytes = vec![0x81u8, 0x80 | 100, 1, 2, 3, 4];
    bytes.extend_from_slice(b"{\"mt\":\"Ap");
    let _ = s.write_all(&bytes).await;
    let _ = s.flush().await;
    drop(ws);
}

async fn conn_task(h: Handle, conn: ConnId, url: String, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let Ok(mut ws) = connect(&url, &h.tls).await else {
        h.with(|p| p.on_closed(conn));
        return;
    };
    h.with(|p| p.on_connected(conn));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => h.with(|p| p.on_frame(conn, t.as_str())),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            c = rx.recv() => match c {
                Some(Cmd::Text(t)) => {
                    if ws.send(Message::text(t)).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Abort) => {
                    abort_mid_message(ws).await;
                    h.with(|p| p.on_closed(conn));
                    return;
                }
                Some(Cmd::Close) | None => {
                    let _ = ws.close(None).await;
                    break;
                }
            },
        }
    }
    h.with(|p| p.on_closed(conn));
}

async fn session_task(h: Handle, id: u64, url: String, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mark_closed = |h: &Handle| {
        if let Some(e) = h.sessions.lock().expect("lock").get_mut(&id) {
            e.closed = true;
        }
    };
    let Ok(mut ws) = connect(&url, &h.tls).await else {
        mark_closed(&h);
        return;
    };
    let first = {
        let mut s = h.sessions.lock().expect("lock");
        let Some(e) = s.get_mut(&id) else { return };
        e.connected = true;
        e.session.start()
    };
    for t in first {
        if ws.send(Message::text(t)).await.is_err() {
            mark_closed(&h);
            return;
        }
    }
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let out = h.with_session(id, |s| ((), s.on_frame(t.as_str())));
                    if out.is_none() { break; }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            c = rx.recv() => match c {
                Some(Cmd::Text(t)) => {
                    if ws.send(Message::text(t)).await.is_err() { break; }
                }
                Some(Cmd::Abort) => { abort_mid_message(ws).await; mark_closed(&h); return; }
                Some(Cmd::Close) | None => { let _ = ws.close(None).await; break; }
            },
        }
    }
    mark_closed(&h);
}
