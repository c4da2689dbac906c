//! Thin socket driver around the sans-IO core: HTTPS (rustls + hyper 1) for login and Graph on
//! one loopback listener, plain HTTP/JSON control API on another, a real HTTP(S) client for the
//! validation handshakes and notification POSTs, and a generated test CA.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::clock::Clock;
use crate::core::{Fake, Handled, Outbound, OutboundResult};
use crate::http::{Request, Response};

/// Wall clock for the socket binary (the core itself never reads it).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A generated test certificate authority.
pub struct TestCa {
    key: KeyPair,
    params: CertificateParams,
    /// CA certificate, PEM.
    pub pem: String,
    /// CA certificate, DER.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// Generate a fresh CA.
    pub fn generate(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            key,
            params,
        })
    }

    /// Issue a server certificate for `names` (DNS names or IP addresses): (chain, key).
    pub fn issue(
        &self,
        names: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut p =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((
            vec![cert.der().clone(), self.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// A rustls server config presenting a certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> Result<Arc<rustls::ServerConfig>> {
        let (chain, key) = self.issue(names)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Options of [`start`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address for login + Graph (HTTPS). Port 0 = any free port.
    pub listen: SocketAddr,
    /// Address for the control API (HTTP). Port 0 = any free port.
    pub control_listen: SocketAddr,
    /// Write the test CA certificate (PEM) here.
    pub ca_out: Option<PathBuf>,
    /// Extra CA certificates (PEM files) to trust for notification URLs.
    pub trust_ca: Vec<PathBuf>,
    /// Extra DNS names for the server certificate.
    pub names: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("addr"),
            control_listen: "127.0.0.1:0".parse().expect("addr"),
            ca_out: None,
            trust_ca: vec![],
            names: vec![],
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A running server.
pub struct RunningServer {
    /// `https://127.0.0.1:port` — base for both login and Graph paths.
    pub url: String,
    /// `http://127.0.0.1:port` of the control API.
    pub control_url: String,
    /// The test CA (PEM) clients must trust.
    pub ca_pem: String,
    /// The shared core, for in-process access.
    pub fake: Arc<Mutex<Fake>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stop accepting and driving.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn resp_to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

async fn to_request(req: hyper::Request<Incoming>) -> Request {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Request {
        method,
        target,
        headers,
        body,
    }
}

/// Start serving `fake` (its `graph_base` is set to the listening URL).
pub async fn start(mut fake: Fake, opts: ServerOptions) -> Result<RunningServer> {
    let ca = TestCa::generate("fake-m365 test CA")?;
    if let Some(p) = &opts.ca_out {
        std::fs::write(p, &ca.pem).with_context(|| format!("writing CA to {}", p.display()))?;
    }
    let mut names: Vec<&str> = vec![
        "localhost",
        "127.0.0.1",
        "::1",
        "login.microsoftonline.com",
        "graph.microsoft.com",
    ];
    names.extend(opts.names.iter().map(String::as_str));
    let tls = tokio_rustls::TlsAcceptor::from(ca.server_config(&names)?);
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("https://{addr}");
    if fake.config().graph_base.is_none() {
        fake.config_mut().graph_base = Some(url.clone());
    }
    if fake.config().login_base.is_none() {
        fake.config_mut().login_base = Some(url.clone());
    }
    let control = TcpListener::bind(opts.control_listen).await?;
    let control_url = format!("http://{}", control.local_addr()?);

    // Roots for outbound POSTs: our own CA plus any given.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone())?;
    for p in &opts.trust_ca {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        for c in rustls_pemfile_certs(&pem) {
            roots.add(c)?;
        }
    }
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let fake = Arc::new(Mutex::new(fake));
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let wake = Arc::new(Notify::new());
    let mut tasks = vec![];

    // Graph + login listener.
    {
        let (fake, waiters, wake) = (fake.clone(), waiters.clone(), wake.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (fake, waiters, wake, tls) =
                    (fake.clone(), waiters.clone(), wake.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let (fake, waiters, wake) = (fake.clone(), waiters.clone(), wake.clone());
                        async move {
                            let r = to_request(req).await;
                            // Register the waiter while still holding the core: its answer can
                            // only be produced under the same lock, so it cannot be missed.
                            let (handled, rx) = {
                                let mut f = fake.lock().unwrap_or_else(|e| e.into_inner());
                                let h = f.handle(r);
                                let rx = if let Handled::Pending(t) = &h {
                                    let (tx, rx) = oneshot::channel();
                                    waiters
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .insert(*t, tx);
                                    Some(rx)
                                } else {
                                    None
                                };
                                (h, rx)
                            };
                            wake.notify_one();
                            let resp = match (handled, rx) {
                                (Handled::Response(r), _) => r,
                                (Handled::Pending(_), Some(rx)) => {
                                    rx.await.unwrap_or_else(|_| Response::empty(500))
                                }
                                _ => std::future::pending().await,
                            };
                            Ok::<_, std::convert::Infallible>(resp_to_hyper(resp))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    // Control listener.
    {
        let (fake, wake) = (fake.clone(), wake.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = control.accept().await else {
                    continue;
                };
                let (fake, wake) = (fake.clone(), wake.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (fake, wake) = (fake.clone(), wake.clone());
                        async move {
                            let r = to_request(req).await;
                            let body: serde_json::Value =
                                serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
                            let (status, v) =
                                fake.lock()
                                    .expect("lock")
                                    .control(&r.method, r.path(), body);
                            wake.notify_one();
                            // 204 carries no body.
                            let resp = if status == 204 {
                                Response::empty(204)
                            } else {
                                Response::json(status, &v)
                            };
                            Ok::<_, std::convert::Infallible>(resp_to_hyper(resp))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        }));
    }

    // Driver: effects out, completions back, time-driven work.
    {
        let (fake, waiters, wake) = (fake.clone(), waiters.clone(), wake.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let (effects, completed) = {
                    let mut f = fake.lock().unwrap_or_else(|e| e.into_inner());
                    (f.take_effects(), f.take_completed())
                };
                for (t, r) in completed {
                    if let Some(tx) = waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&t) {
                        let _ = tx.send(r);
                    }
                }
                for e in effects {
                    let (fake, wake, cfg) = (fake.clone(), wake.clone(), client_cfg.clone());
                    tokio::spawn(async move {
                        let id = e.id;
                        let res = perform(e, cfg).await;
                        fake.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .outbound_result(id, res);
                        wake.notify_one();
                    });
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
            }
        }));
    }

    Ok(RunningServer {
        url,
        control_url,
        ca_pem: ca.pem,
        fake,
        tasks,
    })
}

/// Parse PEM certificates.
pub fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = vec![];
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if l == "-----END CERTIFICATE-----" {
            if let Some(b) = cur
                .take()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            {
                out.push(CertificateDer::from(b));
            }
        } else if let Some(c) = cur.as_mut() {
            c.push_str(l);
        }
    }
    out
}

/// Perform one outbound POST with its timeout.
pub async fn perform(e: Outbound, cfg: Arc<rustls::ClientConfig>) -> OutboundResult {
    let start = Instant::now();
    let fut = async {
        let uri: hyper::Uri = e
            .url
            .parse()
            .map_err(|x: hyper::http::uri::InvalidUri| (false, x.to_string()))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|x| (false, x.to_string()))?;
        let mut b = hyper::Request::builder()
            .method(e.method.as_str())
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header("Host", uri.authority().map(|a| a.as_str()).unwrap_or(""));
        for (k, v) in &e.headers {
            b = b.header(k, v);
        }
        let req = b
            .body(Full::new(Bytes::from(e.body.clone())))
            .map_err(|x| (false, x.to_string()))?;
        let resp = if https {
            let name = ServerName::try_from(host.clone()).map_err(|x| (true, x.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|x| (true, x.to_string()))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|x| (false, x.to_string()))?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|x| (false, x.to_string()))?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|x| (false, x.to_string()))?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|x| (false, x.to_string()))?
        };
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Ok::<_, (bool, String)>((status, ct, body))
    };
    match tokio::time::timeout(Duration::from_millis(e.timeout_ms.max(1) as u64), fut).await {
        Err(_) => OutboundResult::Timeout,
        Ok(Err((tls, message))) => OutboundResult::Failed { tls, message },
        Ok(Ok((status, content_type, body))) => OutboundResult::Status {
            status,
            content_type,
            body,
            elapsed_ms: start.elapsed().as_millis() as i64,
        },
    }
}
