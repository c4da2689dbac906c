//! Real TLS on both sides (listener from PEM files, outbound with an extra CA) and the host's
//! deadlines (504 for unanswered requests, `timeout` for slow upstreams).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// An HTTPS upstream answering `secure-upstream`.
async fn tls_upstream(cert_pem: &str, key_pem: &str) -> std::net::SocketAddr {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        "secure-upstream",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_and_outbound_tls_with_an_extra_ca() {
    let dir = fresh_dir("tls");
    let (cert, key) = self_signed();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), &key).unwrap();
    std::fs::write(dir.join("ca.pem"), &cert).unwrap();
    let h = TestHost::start_with(dir, "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"").await;
    assert!(h.host.tls);

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(https);
    let get_tls = |path: &str| {
        let url = format!("https://{}/test.local/t{path}", h.host.http_addr);
        let client = client.clone();
        async move {
            let resp = tokio::time::timeout(PATIENCE, client.get(url.parse().unwrap()))
                .await
                .unwrap()
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get_tls("/hello").await, (200, "test-guest v1".into()));

    // Outbound TLS to an upstream signed by the instance's extra CA.
    let trusted = tls_upstream(&cert, &key).await;
    let (_, text) = get_tls(&format!("/fetch?url=https://127.0.0.1:{}/", trusted.port())).await;
    assert_eq!(text, "fetched 200 secure-upstream");

    // An upstream whose certificate nobody vouches for fails with a TLS error.
    let (other_cert, other_key) = self_signed();
    let untrusted = tls_upstream(&other_cert, &other_key).await;
    let (_, text) = get_tls(&format!(
        "/fetch?url=https://127.0.0.1:{}/",
        untrusted.port()
    ))
    .await;
    assert!(text.starts_with("error tls"), "{text}");
}

/// Accepts connections and never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            held.push(tcp);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_get_504_and_slow_upstreams_time_out() {
    let h = TestHost::start_with(fresh_dir("deadline"), "response_deadline_ms = 1500").await;
    let silent = silent_upstream().await;
    let (_, text) = get(&h.t(&format!("/fetch?url=http://{silent}/&timeout=200"))).await;
    assert_eq!(text, "error timeout");
    let started = Instant::now();
    let (status, text) = get(&h.t(&format!("/fetch?url=http://{silent}/&timeout=60000"))).await;
    assert_eq!(status, 504, "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The late completion of the abandoned request does not disturb the instance.
    assert_eq!(get(&h.t("/hello")).await.0, 200);
}

/// More unanswered requests than `max_pending_requests` get a 503 with `Retry-After` at once
/// (the queue and the bodies it holds stay bounded); the waiting ones are answered normally and
/// the instance serves again once they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waiting_requests_get_503_with_retry_after() {
    let h = TestHost::start_with(fresh_dir("pending"), "max_pending_requests = 3").await;
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(get_owned(h.t("/timer?ms=1500"))))
        .collect();
    // The three timers are pending once the guest has seen them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let resp = client.get(h.t("/hello").parse().unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    assert_eq!(get(&h.t("/hello")).await.0, 200);
}

async fn get_owned(url: String) -> (u16, String) {
    get(&url).await
}
