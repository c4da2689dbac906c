//! Socket tests: the fake dials a tiny WebSocket server written here that plays the App
//! Service (answers AppChallenge, verifies the digest with the instance password, ...).

mod common;

use common::*;
use fake_pbx::client::AppKind;
use fake_pbx::dialer::{Handle, SystemClock, tls_config};
use fake_pbx::digest::{decrypt, session_key};
use fake_pbx::pbx::NodeConfig;
use fake_pbx::{Pbx, User};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

struct Svc<S> {
    ws: WebSocketStream<S>,
    challenge: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Svc<S> {
    async fn recv(&mut self) -> Option<(String, Value)> {
        loop {
            match timeout(T, self.ws.next()).await.expect("recv timeout") {
                Some(Ok(Message::Text(t))) => {
                    let s = t.as_str().to_string();
                    let v = serde_json::from_str(&s).unwrap_or(Value::Null);
                    return Some((s, v));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }
    /// Challenge + verify like a correct service; answers ok accordingly. Returns the AppLogin.
    async fn login(&mut self, challenge: &str) -> (bool, String) {
        let (_, m) = self.recv().await.unwrap();
        assert_eq!(m, json!({"mt":"AppChallenge"}));
        self.challenge = challenge.into();
        self.send(json!({"mt":"AppChallengeResult","challenge":challenge}))
            .await;
        let (text, m) = self.recv().await.unwrap();
        assert_eq!(m["mt"], "AppLogin");
        let ok = verify_login(&text, challenge, PASSWORD);
        self.send(json!({"mt":"AppLoginResult","ok":ok})).await;
        (ok, text)
    }
}

async fn accept(l: &TcpListener) -> Svc<tokio::net::TcpStream> {
    let (s, _) = timeout(T, l.accept()).await.expect("no dial").unwrap();
    let ws = tokio_tungstenite::accept_async(s).await.unwrap();
    Svc {
        ws,
        challenge: String::new(),
    }
}

async fn start(nodes: Vec<NodeConfig>, users: Vec<User>) -> (Handle, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut p = Pbx::new("example.com", Arc::new(SystemClock::new()), 7);
    p.switches.backoff_base_ms = 50;
    p.switches.backoff_max_ms = 400;
    p.switches.backoff_jitter_ms = 10;
    for mut n in nodes {
        n.app.url = format!("http://127.0.0.1:{port}/example.com/m365/innovaphone-microsoft365");
        p.add_node(n);
    }
    p.add_users(users);
    (Handle::start(p, tls_config(None).unwrap()), l)
}

async fn wait_for(h: &Handle, f: impl Fn(&mut Pbx) -> bool) {
    timeout(T, async {
        while !h.with(&f) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_login_pbxinfo_and_replication_over_ws() {
    let (h, l) = start(
        vec![node("master", "11111111111111111111111111111111")],
        vec![user("aa", "alice", "master"), user("bb", "bob", "master")],
    )
    .await;
    let mut svc = accept(&l).await;
    let (ok, text) = svc.login("0123456789abcdef").await;
    assert!(ok, "digest must verify with the instance password: {text}");
    let (_, info) = svc.recv().await.unwrap();
    assert_eq!(info["mt"], "PbxInfo");
    assert_eq!(info["pbx"], "master");
    svc.send(json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"master","columns":{"guid":{},"h323":{}}}))
        .await;
    assert_eq!(svc.recv().await.unwrap().1["mt"], "ReplicateStartResult");
    let mut rows = 0;
    loop {
        svc.send(json!({"api":"PbxTableUsers","mt":"ReplicateNext","src":"master"}))
            .await;
        let (_, m) = svc.recv().await.unwrap();
        if m.get("columns").is_none() {
            break;
        }
        rows += 1;
    }
    assert_eq!(rows, 2);
    // KeepAlive ignored, 64 KiB message handled.
    svc.send(json!({"mt":"KeepAlive"})).await;
    let note = "ü".repeat(32 * 1024 - 100);
    svc.send(json!({"api":"PbxApi","mt":"SetPresence","src":"big","sip":"alice","contact":"teams:","activity":"busy","note":note}))
        .await;
    let (_, r) = svc.recv().await.unwrap();
    assert_eq!(r["mt"], "SetPresenceResult");
    assert_eq!(r["src"], "big");
    assert!(h.with(|p| p.violations().is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_wrong_password_closes_and_reconnects_with_backoff() {
    let mut n = node("master", "11111111111111111111111111111111");
    n.app.password = "not-the-instance-password".into();
    let (h, l) = start(vec![n], vec![]).await;
    for i in 0..3 {
        let mut svc = accept(&l).await;
        let (ok, _) = svc.login(&format!("chal{i}")).await;
        assert!(!ok);
        // The PBX closes after ok:false and sends nothing else.
        assert!(svc.recv().await.is_none());
        assert!(!h.with(|p| p.is_logged_in("master")));
    }
    let st = h.with(|p| p.node_status());
    assert!(st[0].attempts >= 3, "{st:?}");
    assert_eq!(st[0].logins, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_master_and_slave_are_independent_connections() {
    let (h, l) = start(
        vec![
            node("master", "11111111111111111111111111111111"),
            node("slave", "22222222222222222222222222222222"),
        ],
        vec![],
    )
    .await;
    let mut a = accept(&l).await;
    let mut b = accept(&l).await;
    assert!(a.login("a1").await.0);
    assert!(b.login("b1").await.0);
    let pa = a.recv().await.unwrap().1["pbx"].clone();
    let pb = b.recv().await.unwrap().1["pbx"].clone();
    let mut names = vec![
        pa.as_str().unwrap().to_string(),
        pb.as_str().unwrap().to_string(),
    ];
    names.sort();
    assert_eq!(names, vec!["master", "slave"]);
    let (master, mut other) = if pa == "master" { (a, b) } else { (b, a) };
    h.with(|p| p.kill("master"));
    let mut master = master;
    assert!(master.recv().await.is_none());
    // Slave unaffected.
    other
        .send(json!({"api":"PbxAdminApi","mt":"GetPbxLicenses","src":"x"}))
        .await;
    assert_eq!(other.recv().await.unwrap().1["src"], "x");
    h.with(|p| p.restore("master"));
    let mut m2 = accept(&l).await;
    assert!(m2.login("a2").await.0);
    assert_eq!(m2.recv().await.unwrap().1["pbx"], "master");
    wait_for(&h, |p| p.is_logged_in("master") && p.is_logged_in("slave")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_close_mid_message_then_reconnect() {
    let (h, l) = start(
        vec![node("master", "11111111111111111111111111111111")],
        vec![],
    )
    .await;
    let mut svc = accept(&l).await;
    assert!(svc.login("c1").await.0);
    svc.recv().await.unwrap();
    h.with(|p| p.close_mid_message("master"));
    // The service sees a truncated frame / reset, not a close handshake.
    match timeout(T, svc.ws.next()).await.unwrap() {
        Some(Ok(Message::Close(_))) => panic!("clean close"),
        Some(Ok(Message::Text(t))) => panic!("complete frame {t}"),
        _ => {}
    }
    let mut again = accept(&l).await;
    assert!(again.login("c2").await.0);
}

/// Serves one user session on a socket like the connector would and returns what it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_user_sessions_search_relay_and_config_api() {
    let mut u = user("aa", "alice", "master");
    u.lics = vec!["App(innovaphone-microsoft365)".into()];
    // The PBX connection itself dials a closed port, so only the session reaches the listener.
    let mut n = node("master", "11111111111111111111111111111111");
    n.dial_url = Some("ws://127.0.0.1:1/closed".into());
    let (h, l) = start(vec![n], vec![u]).await;
    let port = l.local_addr().unwrap().port();
    h.with(|p| p.set_licence("App(innovaphone-microsoft365)", 10));
    let cfg = h.with(|p| p.user_session("aa", AppKind::Api)).unwrap();
    assert_eq!(cfg.app, "innovaphone-microsoft365api");
    assert!(!cfg.unlicensed);
    let url = format!("ws://127.0.0.1:{port}/example.com/m365/innovaphone-microsoft365api");
    let id = h.open_session(&url, cfg);
    let mut svc = accept(&l).await;
    let (_, m) = svc.recv().await.unwrap();
    assert_eq!(m["mt"], "AppChallenge");
    svc.send(json!({"mt":"AppChallengeResult","challenge":"s1"}))
        .await;
    let (text, m) = svc.recv().await.unwrap();
    assert_eq!(m["pbxObj"], "microsoft365-api");
    assert_eq!(m["app"], "innovaphone-microsoft365api");
    assert!(m["info"].get("unlicensed").is_none());
    assert!(verify_login(&text, "s1", PASSWORD));
    svc.send(json!({"mt":"AppLoginResult","ok":true})).await;
    wait_for(&h, |_| h.session_json(id).unwrap()["state"] == "logged-in").await;
    // Search relay: 2 SearchInfo then one SearchResult.
    h.with_session(id, |s| ((), vec![s.search("7", "John", Some("contact"))]));
    let (_, q) = svc.recv().await.unwrap();
    assert_eq!(q["mt"], "Search");
    assert_eq!(q["search"], "John");
    for dn in ["John Doe", "John Roe"] {
        svc.send(json!({"mt":"SearchInfo","src":"7","dn":dn,"type":"contact",
            "contact":{"displayname":dn,"telephonenumber":["+49 1"],"mobile":[]}}))
            .await;
    }
    svc.send(json!({"mt":"SearchResult","src":"7"})).await;
    // Config: password item written RC4-encrypted with the session key.
    h.with_session(id, |s| {
        let f1 = s.get_config_items("c");
        let f2 = s.write_config(
            "w",
            &serde_json::Map::from_iter([("tenantId".to_string(), json!("t1"))]),
            &[("clientSecret", "sëcret *&()%+=#< x")],
        );
        ((), vec![f1, f2])
    })
    .unwrap();
    let (_, gi) = svc.recv().await.unwrap();
    assert_eq!(gi["mt"], "GetConfigItems");
    svc.send(json!({"api":"Config","mt":"GetConfigItemsResult","src":"c","ConfigItems":[
        {"name":"tenantId","type":"STRING"},{"name":"clientSecret","type":"STRING","password":true}]}))
        .await;
    let (_, wc) = svc.recv().await.unwrap();
    assert_eq!(wc["mt"], "WriteConfig");
    assert_eq!(wc["ConfigItems"]["tenantId"], "t1");
    let item = &wc["ConfigItems"]["clientSecret"];
    let key = session_key("s1", PASSWORD);
    assert_eq!(
        decrypt(
            item["key"].as_str().unwrap(),
            &key,
            item["value"].as_str().unwrap()
        )
        .unwrap(),
        "sëcret *&()%+=#< x"
    );
    // A service that returns the password is caught; a second SearchResult too.
    svc.send(json!({"api":"Config","mt":"ReadConfigResult","src":"r","ConfigItems":{"tenantId":"t1","clientSecret":"leak"}}))
        .await;
    svc.send(json!({"mt":"SearchResult","src":"7"})).await;
    wait_for(&h, |_| {
        h.session_json(id).unwrap()["violations"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let s = h.session_json(id).unwrap();
    assert_eq!(s["searches"]["7"]["infos"].as_array().unwrap().len(), 2);
    assert_eq!(s["searches"]["7"]["done"], true);
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = body.to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head} {body}");
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_drives_users_presence_calls_and_reads_back() {
    let (h, l) = start(
        vec![node("master", "11111111111111111111111111111111")],
        vec![],
    )
    .await;
    let addr = fake_pbx::control::serve(h.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut svc = accept(&l).await;
    assert!(svc.login("c1").await.0);
    svc.recv().await.unwrap();
    let r = http(
        addr,
        "POST",
        "/populate",
        json!({"users": 20, "pseudo_objects": 2, "seed": 3}),
    )
    .await;
    assert_eq!(r["added"], 22);
    http(
        addr,
        "POST",
        "/users",
        json!({"guid":"aa","h323":"alice","cn":"Alice","dn":"Alice","loc":"master"}),
    )
    .await;
    svc.send(json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"aa"}))
        .await;
    for _ in 0..3 {
        svc.recv().await.unwrap();
    }
    http(
        addr,
        "POST",
        "/users/aa/presence",
        json!({"activity":"away","note":"lunch"}),
    )
    .await;
    let (_, u) = svc.recv().await.unwrap();
    assert_eq!(u["presence"][0]["activity"], "away");
    http(addr, "POST", "/users/aa/call/start", json!(null)).await;
    let (_, u) = svc.recv().await.unwrap();
    assert_eq!(u["presence"][0]["activity"], "on-the-phone");
    let v = http(addr, "GET", "/users/aa/presence", json!(null)).await;
    assert_eq!(v["view"]["master"][0]["activity"], "on-the-phone");
    assert_eq!(v["stored"][0]["activity"], "away");
    let rec = http(addr, "GET", "/received?node=master", json!(null)).await;
    assert!(
        rec.as_array()
            .unwrap()
            .iter()
            .any(|m| m["mt"] == "SubscribePresence")
    );
    let st = http(addr, "GET", "/status", json!(null)).await;
    assert_eq!(st[0]["state"], "logged-in");
    // Users are addressable by h323 too.
    http(addr, "POST", "/users/alice/call/end", json!(null)).await;
    let (_, u) = svc.recv().await.unwrap();
    assert_eq!(u["presence"][0]["activity"], "away");
    let cfg = http(
        addr,
        "PATCH",
        "/nodes/master",
        json!({"apis": ["PbxApi"], "app": {"password": "new"}}),
    )
    .await;
    assert_eq!(cfg["apis"], json!(["PbxApi"]));
    assert_eq!(cfg["app"]["password"], "new");
    assert_eq!(cfg["app"]["sip"], "m365");
    http(addr, "PUT", "/switches", json!({"testmode": true})).await;
    assert!(h.with(|p| p.switches.testmode));
    http(addr, "POST", "/nodes/master/kill", json!(null)).await;
    assert!(svc.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_wss_with_extra_ca_file() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fake-pbx-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut p = Pbx::new("example.com", Arc::new(SystemClock::new()), 7);
    let mut n = node("master", "11111111111111111111111111111111");
    n.app.url = format!("https://localhost:{port}/example.com/m365/innovaphone-microsoft365");
    p.add_node(n);
    let _h = Handle::start(p, tls_config(Some(&ca_file)).unwrap());
    let (tcp, _) = timeout(T, l.accept()).await.unwrap().unwrap();
    let tls = acceptor.accept(tcp).await.unwrap();
    let ws = tokio_tungstenite::accept_async(tls).await.unwrap();
    let mut svc = Svc {
        ws,
        challenge: String::new(),
    };
    assert!(svc.login("tls").await.0);
    assert_eq!(svc.recv().await.unwrap().1["mt"], "PbxInfo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_cli_dials_and_serves_control_api() {
    use tokio::io::AsyncBufReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-pbx"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}/example.com/m365/innovaphone-microsoft365"),
            "--password",
            PASSWORD,
            "--users",
            "25",
            "--pseudo",
            "3",
            "--slave",
            "slave",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ctl: Value = serde_json::from_str(&first).unwrap();
    let addr: std::net::SocketAddr = ctl["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut a = accept(&l).await;
    let mut b = accept(&l).await;
    assert!(a.login("x1").await.0);
    assert!(b.login("x2").await.0);
    let users = http(addr, "GET", "/users", json!(null)).await;
    assert_eq!(users.as_array().unwrap().len(), 28);
    let st = http(addr, "GET", "/status", json!(null)).await;
    assert_eq!(st.as_array().unwrap().len(), 2);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_user_session_search_round_trip() {
    let mut u = user("aa", "alice", "master");
    u.lics = vec!["App(innovaphone-microsoft365)".into()];
    let mut n = node("master", "11111111111111111111111111111111");
    n.dial_url = Some("ws://127.0.0.1:1/closed".into());
    let (h, l) = start(vec![n], vec![u]).await;
    let port = l.local_addr().unwrap().port();
    let addr = fake_pbx::control::serve(h.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/example.com/m365/innovaphone-microsoft365api");
    let r = http(
        addr,
        "POST",
        "/sessions",
        json!({"guid":"alice","kind":"api","url":url}),
    )
    .await;
    let id = r["id"].as_u64().unwrap();
    let mut svc = accept(&l).await;
    svc.recv().await.unwrap();
    svc.send(json!({"mt":"AppChallengeResult","challenge":"h1"}))
        .await;
    let (text, m) = svc.recv().await.unwrap();
    assert!(verify_login(&text, "h1", PASSWORD));
    // Licence assigned but no pool installed: unlicensed.
    assert_eq!(m["info"]["unlicensed"], true);
    svc.send(json!({"mt":"AppLoginResult","ok":true})).await;
    wait_for(&h, |_| h.session_json(id).unwrap()["state"] == "logged-in").await;
    http(
        addr,
        "POST",
        &format!("/sessions/{id}/search"),
        json!({"src":"q1","search":"Doe"}),
    )
    .await;
    let (_, q) = svc.recv().await.unwrap();
    assert_eq!(q["src"], "q1");
    svc.send(json!({"mt":"SearchResult","src":"q1"})).await;
    wait_for(&h, |_| {
        h.session_json(id).unwrap()["searches"]["q1"]["done"] == true
    })
    .await;
    let s = http(addr, "GET", &format!("/sessions/{id}"), json!(null)).await;
    assert_eq!(s["violations"], json!([]));
}
