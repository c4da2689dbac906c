//! Native timing of the sans-IO core, to compare with the same work inside wasm:
//! `cargo run --release -p microsoft365 --example core_bench`.

use std::time::Instant;

use microsoft365::event::{InitInfo, WsDirection, WsFrame, WsOpen};
use microsoft365::pbx::login::digest;
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event};

fn frame(c: &mut Connector, env: &mut TestEnv, text: String) {
    c.handle(env, Event::WsMessage(1, WsFrame::Text(text)));
}

fn main() {
    let mut env = TestEnv::new();
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    c.handle(
        &mut env,
        Event::WsOpen(WsOpen {
            id: 1,
            direction: WsDirection::Inbound,
            path: "/".into(),
            headers: vec![],
            peer: "bench".into(),
        }),
    );

    let n = 20_000u32;
    let t = Instant::now();
    for _ in 0..n {
        frame(&mut c, &mut env, r#"{"mt":"KeepAlive"}"#.into());
    }
    println!("keepalive frame: {:?}/event", t.elapsed() / n);

    let t = Instant::now();
    let logins = 2_000u32;
    for _ in 0..logins {
        frame(&mut c, &mut env, r#"{"mt":"AppChallenge"}"#.into());
        let sent = env.sent_json(1);
        let ch = sent.last().unwrap()["challenge"]
            .as_str()
            .unwrap()
            .to_string();
        env.clear_sent();
        let info = r#"{"appobj":"m365","appdn":"M365","appurl":"https://ap/example.com/m365/innovaphone-microsoft365","pbx":"master","cn":"M365","apps":[]}"#;
        let d = digest(
            "innovaphone-microsoft365",
            "example.com",
            "m365",
            "g",
            "M365",
            Some(info),
            &ch,
            "pwd",
        );
        frame(
            &mut c,
            &mut env,
            format!(
                r#"{{"mt":"AppLogin","app":"innovaphone-microsoft365","domain":"example.com","sip":"m365","guid":"g","dn":"M365","digest":"{d}","info":{info}}}"#
            ),
        );
    }
    println!("challenge + login: {:?}/login", t.elapsed() / logins);

    frame(
        &mut c,
        &mut env,
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxApi","PbxTableUsers","PbxAdminApi"]}"#.into(),
    );
    frame(
        &mut c,
        &mut env,
        r#"{"api":"PbxTableUsers","mt":"ReplicateStartResult","src":"users","guid":"db","usn":1}"#
            .into(),
    );
    let rows = 10_000u32;
    let t = Instant::now();
    for i in 0..rows {
        frame(
            &mut c,
            &mut env,
            format!(
                r#"{{"api":"PbxTableUsers","mt":"ReplicateNextResult","src":"users","usn":{i},"columns":{{"guid":"{i:032x}","h323":"user{i}","cn":"User {i}","dn":"User {i}","e164":"{i}","loc":"master","emails":[{{"email":"user{i}@example.com"}}],"node":"root","hide":false}}}}"#
            ),
        );
        env.clear_sent();
    }
    println!("replicated row: {:?}/row", t.elapsed() / rows);
    println!("KV keys: {}", env.kv.len());
}
