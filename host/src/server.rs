//! The public listener: HTTP/1.1 (optionally TLS), routing `/<domain>/<instance>/...` to the
//! instance, WebSocket upgrades on the same port, health and metrics endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::bindings::{Event, Header, InboundRequest, WsDirection, WsOpen};
use crate::instance::InstanceContext;

/// What request handling needs, shared by all connections.
pub struct Routes {
    /// Instances by `(domain, name)`.
    pub instances: HashMap<(String, String), Arc<InstanceContext>>,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Deadline for the guest's answer.
    pub response_deadline: Duration,
    /// Unanswered inbound requests per instance beyond which new ones get a 503.
    pub max_pending_requests: usize,
}

/// Loads a rustls server config from PEM files.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(config)
}

/// Accepts connections until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: Arc<Routes>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(handle(routes, req, peer).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        builder
                            .serve_connection(TokioIo::new(tls), service)
                            .with_upgrades()
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())))
        .expect("static response parts")
}

async fn handle(
    routes: Arc<Routes>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/readyz" => return text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut list: Vec<_> = routes
                .instances
                .values()
                .map(|c| (c.config.name.clone(), &c.metrics))
                .collect();
            list.sort_by(|a, b| a.0.cmp(&b.0));
            return text(StatusCode::OK, crate::metrics::render(&list));
        }
        _ => {}
    }
    let mut segments = path.splitn(4, '/').skip(1);
    let (domain, name) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    let Some(ctx) = routes
        .instances
        .get(&(domain.to_string(), name.to_string()))
        .cloned()
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no instance serves {path}; paths look like /<domain>/<instance>/...\n"),
        );
    };
    let below = match segments.next() {
        Some(rest) => format!("/{rest}"),
        None => "/".to_string(),
    };
    ctx.metrics
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let headers: Vec<Header> = req
        .headers()
        .iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    if is_websocket_upgrade(&req) {
        return upgrade(ctx, req, below, headers, peer);
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > routes.max_body_bytes) {
        return too_large(routes.max_body_bytes);
    }
    let method = req.method().as_str().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match Limited::new(req.into_body(), routes.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return too_large(routes.max_body_bytes);
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}\n"),
            );
        }
    };
    let id = ctx.next_id();
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = ctx.pending_inbound.lock().expect("inbound");
        if pending.len() >= routes.max_pending_requests {
            // Webhook senders retry a 503 after Retry-After; nothing is lost, and the queue
            // (and the bodies it holds) stays bounded while the guest catches up.
            drop(pending);
            return busy();
        }
        pending.insert(id, tx);
    }
    ctx.deliver(Event::HttpRequest((
        id,
        InboundRequest {
            method,
            path: below,
            query,
            headers,
            body,
            peer: peer.to_string(),
        },
    )));
    match tokio::time::timeout(routes.response_deadline, rx).await {
        Ok(Ok(resp)) => to_hyper(resp),
        Ok(Err(_)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the instance dropped the request\n",
        ),
        Err(_) => {
            ctx.pending_inbound.lock().expect("inbound").remove(&id);
            text(
                StatusCode::GATEWAY_TIMEOUT,
                "the instance did not answer in time\n",
            )
        }
    }
}

fn busy() -> Response<Full<Bytes>> {
    let mut resp = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the instance has too many requests waiting; retry later\n".to_string(),
    );
    resp.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    resp
}

fn too_large(limit: usize) -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds {limit} bytes\n"),
    )
}

fn to_hyper(resp: crate::bindings::HttpResponse) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(resp.status);
    for h in &resp.headers {
        builder = builder.header(h.name.as_str(), h.value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|e| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the instance gave an invalid response: {e}\n"),
            )
        })
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

fn upgrade(
    ctx: Arc<InstanceContext>,
    mut req: Request<Incoming>,
    path: String,
    headers: Vec<Header>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing sec-websocket-key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = ctx.next_id();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut config = WebSocketConfig::default();
                config.max_message_size = Some(16 << 20);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let open = WsOpen {
                    id,
                    direction: WsDirection::Inbound,
                    path,
                    headers,
                    peer: peer.to_string(),
                };
                crate::ws_conn::run(ctx, open, ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))
        .expect("static response parts")
}
