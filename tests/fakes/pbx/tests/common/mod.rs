//! Shared helpers: a minimal App Service played by the test, sans-IO.
#![allow(dead_code)]

use fake_pbx::digest::{DigestInput, login_digest, raw_field};
use fake_pbx::login::AppObject;
use fake_pbx::pbx::{ConnId, NodeConfig, Output, default_apis};
use fake_pbx::{ManualClock, Pbx, User};
use serde_json::{Value, json};
use std::sync::Arc;

pub const PASSWORD: &str = "instance-pw";
pub const APP_URL: &str = "https://ap.example.com/example.com/m365/innovaphone-microsoft365";

pub fn node(name: &str, guid: &str) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        dns: format!("{name}.example.com"),
        app: AppObject {
            sip: "m365".into(),
            dn: "Microsoft 365".into(),
            guid: guid.into(),
            url: APP_URL.into(),
            password: PASSWORD.into(),
            lics: None,
            apps: vec![],
        },
        dial_url: None,
        apis: default_apis(),
        version: "14r2".into(),
        build: "143104".into(),
    }
}

pub fn pbx() -> (Pbx, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    let mut p = Pbx::new("example.com", Arc::new(clock.clone()), 42);
    p.add_node(node("master", "11111111111111111111111111111111"));
    p.add_node(node("slave", "22222222222222222222222222222222"));
    (p, clock)
}

pub fn user(guid: &str, h323: &str, loc: &str) -> User {
    let mut u = User::new(guid, h323, &format!("{h323} Long"), loc);
    u.e164 = format!("2{}", guid.len() + h323.len());
    u.emails.push(format!("{h323}@example.com"));
    u
}

/// Sent frames (conn, parsed) drained from the PBX; garbage is returned as a JSON string.
pub fn sent(p: &mut Pbx) -> Vec<(ConnId, Value)> {
    p.drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { conn, text } => Some((
                conn,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )),
            _ => None,
        })
        .collect()
}

/// Raw outputs.
pub fn outputs(p: &mut Pbx) -> Vec<Output> {
    p.drain()
}

/// Verifies an AppLogin text like a correct service does: digest over the raw info text.
pub fn verify_login(text: &str, challenge: &str, password: &str) -> bool {
    let v: Value = serde_json::from_str(text).unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let (app, domain, sip, guid, dn) = (s("app"), s("domain"), s("sip"), s("guid"), s("dn"));
    let info = raw_field(text, "info");
    let d = login_digest(
        &DigestInput {
            app: &app,
            domain: &domain,
            sip: &sip,
            guid: &guid,
            dn: &dn,
            info,
        },
        challenge,
        password,
    );
    d == s("digest")
}

/// Runs the dial and handshake for `node`, playing a correct service. Returns the connection.
pub fn login(p: &mut Pbx, node: &str, challenge: &str) -> ConnId {
    if p.node_conn(node).is_none() {
        // Skip any backoff wait: these tests are not about timing.
        p.restore(node);
    }
    p.tick();
    p.drain();
    let conn = p.node_conn(node).expect("dial");
    p.on_connected(conn);
    let f = sent(p);
    assert_eq!(f, vec![(conn, json!({"mt":"AppChallenge"}))]);
    p.on_frame(
        conn,
        &json!({"mt":"AppChallengeResult","challenge":challenge}).to_string(),
    );
    let out = p.drain();
    let Output::Send { text, .. } = &out[0] else {
        panic!("no login")
    };
    assert!(verify_login(text, challenge, PASSWORD), "digest: {text}");
    p.on_frame(conn, r#"{"mt":"AppLoginResult","ok":true}"#);
    let f = sent(p);
    assert_eq!(f[0].1["mt"], "PbxInfo");
    conn
}

pub fn send(p: &mut Pbx, conn: ConnId, v: Value) -> Vec<Value> {
    p.on_frame(conn, &v.to_string());
    sent(p).into_iter().map(|(_, v)| v).collect()
}

pub fn mts(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|m| m["mt"].as_str().unwrap_or("").to_string())
        .collect()
}
