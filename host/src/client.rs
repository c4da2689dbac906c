//! Outbound HTTP and WebSocket for one instance: allow-list first (a denied destination never
//! touches the network), rustls with webpki roots plus an optional extra CA, connection reuse,
//! per-request timeout and response size limit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::bindings::{Header, HttpError, HttpRequest, HttpResponse};
use crate::config::InstanceConfig;

/// An open outbound WebSocket, its handshake response headers and the peer address.
pub type OutboundWebSocket = (
    WebSocketStream<MaybeTlsStream<TcpStream>>,
    Vec<Header>,
    String,
);

/// Outbound client of one instance.
pub struct OutboundClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    tls: Arc<rustls::ClientConfig>,
    allow: Vec<String>,
    max_response_bytes: usize,
}

impl OutboundClient {
    /// Builds the client from the instance's allow-list and CA settings.
    pub fn new(config: &InstanceConfig) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(file) = &config.extra_ca_file {
            for cert in CertificateDer::pem_file_iter(file)
                .with_context(|| format!("reading {}", file.display()))?
            {
                roots.add(cert.with_context(|| format!("parsing {}", file.display()))?)?;
            }
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(OutboundClient {
            http,
            tls,
            allow: config
                .allow_outbound
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Whether `host:port` may be contacted.
    pub fn allowed(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        self.allow.iter().any(|a| {
            a == &host
                || a == &with_port
                || a.trim_start_matches('[').replace("]:", ":") == with_port
        })
    }

    fn check_url(&self, url: &str, schemes: [&str; 2]) -> Result<url::Url, HttpError> {
        let parsed = url::Url::parse(url).map_err(|e| HttpError::Invalid(format!("{url}: {e}")))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(HttpError::Invalid(format!("unsupported scheme in {url}")));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| HttpError::Invalid(format!("no host in {url}")))?;
        let port = parsed.port_or_known_default().unwrap_or(0);
        if !self.allowed(host, port) {
            return Err(HttpError::Denied(format!(
                "{host}:{port} is not on this instance's outbound allow-list"
            )));
        }
        Ok(parsed)
    }

    /// Performs a request; every failure is an [`HttpError`].
    pub async fn request(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = self.check_url(&req.url, ["http", "https"])?;
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(url.as_str());
        for h in &req.headers {
            builder = builder.header(h.name.as_str(), h.value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| HttpError::Invalid(e.to_string()))?;
        let timeout = Duration::from_millis(u64::from(req.timeout_ms.max(1)));
        let limit = self.max_response_bytes;
        let exchange = async {
            let response = self.http.request(request).await.map_err(classify)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| Header {
                    name: n.as_str().to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                })
                .collect();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge
                    } else {
                        HttpError::Connection(e.to_string())
                    }
                })?
                .to_bytes()
                .to_vec();
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }

    /// Dials a WebSocket; the error text becomes the `ws-closed` reason.
    pub async fn connect_websocket(
        &self,
        url: &str,
        headers: &[Header],
    ) -> Result<OutboundWebSocket, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let parsed = self.check_url(url, ["ws", "wss"]).map_err(|e| match e {
            HttpError::Denied(t) => format!("denied: {t}"),
            HttpError::Invalid(t) => format!("invalid: {t}"),
            other => format!("{other:?}"),
        })?;
        let mut request = parsed
            .as_str()
            .into_client_request()
            .map_err(|e| format!("invalid: {e}"))?;
        for h in headers {
            let name = hyper::header::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| format!("invalid header: {e}"))?;
            let value = hyper::header::HeaderValue::from_str(&h.value)
                .map_err(|e| format!("invalid header: {e}"))?;
            request.headers_mut().append(name, value);
        }
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
        );
        let (stream, response) = tokio::time::timeout(Duration::from_secs(30), connect)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect failed: {e}"))?;
        let peer = match stream.get_ref() {
            MaybeTlsStream::Plain(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            MaybeTlsStream::Rustls(s) => s
                .get_ref()
                .0
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| Header {
                name: n.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        Ok((stream, headers, peer))
    }
}

/// Tells TLS failures apart from other connection failures.
fn classify(e: hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return HttpError::Tls(s.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && inner.downcast_ref::<rustls::Error>().is_some()
        {
            return HttpError::Tls(inner.to_string());
        }
        // Some connector layers box the error so that it cannot be downcast; their text
        // still names the certificate problem.
        let text = s.to_string();
        if text.contains("peer certificate") || text.contains("TLS") {
            return HttpError::Tls(text);
        }
        source = s.source();
    }
    HttpError::Connection(format!("{e:#}: {}", error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
