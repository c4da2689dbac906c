//! The binary's server over real sockets: HTTPS with the generated CA, the control API, a real
//! validation handshake and notification delivery, and a handshake timeout against an endpoint
//! that never answers.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fake_m365::server::{ServerOptions, SystemClock, perform, rustls_pemfile_certs, start};
use fake_m365::{Config, Fake, Outbound, OutboundResult, Purpose};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

fn client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(ca_pem.as_bytes()) {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

async fn call(
    cfg: &Arc<rustls::ClientConfig>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let o = Outbound {
        id: 0,
        method: method.into(),
        url: url.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
        timeout_ms: 20_000,
        purpose: Purpose::Validation,
    };
    match perform(o, cfg.clone()).await {
        OutboundResult::Status { status, body, .. } => (status, body),
        other => panic!("{method} {url}: {other:?}"),
    }
}

async fn control(
    cfg: &Arc<rustls::ClientConfig>,
    base: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Value {
    let (s, b) = call(
        cfg,
        method,
        &format!("{base}{path}"),
        &[("Content-Type", "application/json")],
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert!(s < 300, "{path}: {s} {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap_or(Value::Null)
}

async fn start_fake(
    cfg: Config,
    ca_out: Option<std::path::PathBuf>,
) -> fake_m365::server::RunningServer {
    let fake = Fake::new(cfg, Arc::new(SystemClock));
    start(
        fake,
        ServerOptions {
            ca_out,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_https_token_and_graph_roundtrip() {
    let dir = std::env::temp_dir().join(format!("fake-m365-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    let srv = start_fake(Config::default(), Some(ca_file.clone())).await;
    let pem = std::fs::read_to_string(&ca_file).unwrap();
    assert_eq!(pem, srv.ca_pem);
    let cfg = client(&pem);
    let tenant = control(
        &cfg,
        &srv.control_url,
        "GET",
        "/control/tenant",
        json!(null),
    )
    .await["tenantId"]
        .as_str()
        .unwrap()
        .to_string();
    control(
        &cfg,
        &srv.control_url,
        "POST",
        "/control/apps",
        json!({"clientId": "app-1", "publicClient": true, "delegated": ["User.Read.All"]}),
    )
    .await;
    control(&cfg, &srv.control_url, "POST", "/control/users", json!({"displayName": "Zoë Ström", "userPrincipalName": "zoe@contoso.com", "password": "a&b+c%d"})).await;
    control(
        &cfg,
        &srv.control_url,
        "POST",
        "/control/populate",
        json!({"count": 50, "seed": 4}),
    )
    .await;
    let form = "client_id=app-1&grant_type=password&username=zoe%40contoso.com&password=a%26b%2Bc%25d&scope=User.Read.All";
    let (s, b) = call(
        &cfg,
        "POST",
        &format!("{}/{tenant}/oauth2/v2.0/token", srv.url),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let tok = serde_json::from_slice::<Value>(&b).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = call(
        &cfg,
        "GET",
        &format!("{}/v1.0/users?$top=20", srv.url),
        &[("Authorization", &format!("Bearer {tok}"))],
        vec![],
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 20);
    assert!(v["@odata.nextLink"].as_str().unwrap().starts_with(&srv.url));
    // Read back what was seen.
    let seen = control(
        &cfg,
        &srv.control_url,
        "GET",
        "/control/requests",
        json!(null),
    )
    .await;
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .any(|r| r["target"].as_str().unwrap().starts_with("/v1.0/users"))
    );
    // An untrusting client fails TLS.
    let untrusting = client("");
    let o = Outbound {
        id: 0,
        method: "GET".into(),
        url: format!("{}/v1.0/users", srv.url),
        headers: vec![],
        body: vec![],
        timeout_ms: 5_000,
        purpose: Purpose::Validation,
    };
    assert!(matches!(
        perform(o, untrusting).await,
        OutboundResult::Failed { tls: true, .. }
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A webhook receiver on loopback (plain HTTP, allowed by the switch).
async fn webhook(answer: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify?x=1", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(vec![]));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                if !answer {
                    // Accept and never answer.
                    let _keep = tcp;
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                    return;
                }
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        async move {
                            let q = req.uri().query().unwrap_or("").to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let resp = if let Some(tok) = q
                                .split('&')
                                .find_map(|p| p.strip_prefix("validationToken="))
                            {
                                let tok = fake_m365::http::pct_decode(tok, false);
                                hyper::Response::builder()
                                    .status(200)
                                    .header("Content-Type", "text/plain")
                                    .body(Full::new(Bytes::from(tok)))
                                    .unwrap()
                            } else {
                                g.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                                hyper::Response::builder()
                                    .status(202)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, got)
}

async fn delegated_setup(
    srv: &fake_m365::server::RunningServer,
    cfg: &Arc<rustls::ClientConfig>,
) -> (String, String) {
    control(
        cfg,
        &srv.control_url,
        "POST",
        "/control/apps",
        json!({"clientId": "app-1", "publicClient": true}),
    )
    .await;
    control(
        cfg,
        &srv.control_url,
        "POST",
        "/control/users",
        json!({"displayName": "Service", "userPrincipalName": "svc@contoso.com"}),
    )
    .await;
    let alice = control(
        cfg,
        &srv.control_url,
        "POST",
        "/control/users",
        json!({"displayName": "Alice", "userPrincipalName": "alice@contoso.com"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tok = control(
        cfg,
        &srv.control_url,
        "POST",
        "/control/token",
        json!({"clientId": "app-1", "user": "svc@contoso.com", "scopes": ["Presence.Read.All"]}),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    (tok, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_subscription_handshake_and_notification() {
    let mut c = Config::default();
    c.allow_http_loopback = true;
    let srv = start_fake(c, None).await;
    let cfg = client(&srv.ca_pem);
    let (tok, alice) = delegated_setup(&srv, &cfg).await;
    let (url, got) = webhook(true).await;
    let exp = fake_m365::clock::iso_z(SystemClockNow::now() + 3_000_000);
    let body = json!({"changeType": "updated", "notificationUrl": url, "resource": format!("/communications/presences?$filter=id in ('{alice}')"), "expirationDateTime": exp, "clientState": "cs"});
    let (s, b) = call(
        &cfg,
        "POST",
        &format!("{}/v1.0/subscriptions", srv.url),
        &[
            ("Authorization", &format!("Bearer {tok}")),
            ("Content-Type", "application/json"),
        ],
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    control(
        &cfg,
        &srv.control_url,
        "POST",
        "/control/presence/teams",
        json!({"user": alice, "availability": "Busy", "activity": "InACall"}),
    )
    .await;
    for _ in 0..100 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let n = got.lock().unwrap()[0].clone();
    assert_eq!(n["value"][0]["clientState"], "cs");
    assert_eq!(
        n["value"][0]["resource"],
        format!("communications/presences/{alice}")
    );
    let d = control(
        &cfg,
        &srv.control_url,
        "GET",
        "/control/deliveries",
        json!(null),
    )
    .await;
    assert!(
        d.as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "delivered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_handshake_timeout_real_endpoint() {
    let mut c = Config::default();
    c.allow_http_loopback = true;
    c.validation_timeout_ms = 300;
    let srv = start_fake(c, None).await;
    let cfg = client(&srv.ca_pem);
    let (tok, alice) = delegated_setup(&srv, &cfg).await;
    let (url, _) = webhook(false).await;
    let exp = fake_m365::clock::iso_z(SystemClockNow::now() + 3_000_000);
    let body = json!({"changeType": "updated", "notificationUrl": url, "resource": format!("/communications/presences/{alice}"), "expirationDateTime": exp});
    let (s, b) = call(
        &cfg,
        "POST",
        &format!("{}/v1.0/subscriptions", srv.url),
        &[
            ("Authorization", &format!("Bearer {tok}")),
            ("Content-Type", "application/json"),
        ],
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["error"]["message"],
        "Subscription validation request timed out."
    );
}

struct SystemClockNow;
impl SystemClockNow {
    fn now() -> i64 {
        use fake_m365::Clock;
        SystemClock.now_ms()
    }
}

#[test]
fn binary_starts_writes_ca_and_serves() {
    let dir = std::env::temp_dir().join(format!("fake-m365-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-m365"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--populate",
            "100",
            "--seed",
            "5",
            "--ca-out",
        ])
        .arg(&ca)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = client(&std::fs::read_to_string(&ca).unwrap());
        let t = control(
            &cfg,
            info["controlUrl"].as_str().unwrap(),
            "GET",
            "/control/tenant",
            json!(null),
        )
        .await;
        assert_eq!(t["users"], 100);
        // Discovery points back at the fake itself.
        let base = info["url"].as_str().unwrap();
        let (_, oc) = call(
            &cfg,
            "GET",
            &format!("{base}/common/v2.0/.well-known/openid-configuration"),
            &[],
            vec![],
        )
        .await;
        let jwks_uri = serde_json::from_slice::<Value>(&oc).unwrap()["jwks_uri"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(jwks_uri, format!("{base}/common/discovery/v2.0/keys"));
        let (s, b) = call(&cfg, "GET", &jwks_uri, &[], vec![]).await;
        assert_eq!(s, 200);
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["keys"][0]["kty"],
            "RSA"
        );
    });
    child.kill().unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
