//! The connection state machine driven through `Connector` and `TestEnv`, frame by frame, as a
//! PBX would.

use serde_json::{Value, json};

use super::login::digest;
use super::{PbxError, PbxEvent, Replication};
use crate::connector::Connector;
use crate::event::{Event, InitInfo, InitReason, WsClosed, WsDirection, WsFrame, WsOpen};
use crate::testenv::TestEnv;

/// The info object in PBX key order, as raw text (never re-serialised).
const INFO: &str = r#"{"appobj":"m365","appdn":"Microsoft 365","appurl":"https://ap.example.com/example.com/m365/innovaphone-microsoft365","pbx":"master","cn":"Microsoft 365","apps":[]}"#;

fn open(ws: u64) -> WsOpen {
    WsOpen {
        id: ws,
        direction: WsDirection::Inbound,
        path: "/innovaphone-microsoft365".into(),
        headers: vec![],
        peer: "127.0.0.1:5000".into(),
    }
}

fn start() -> (Connector, TestEnv) {
    let mut env = TestEnv::new();
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    (c, env)
}

fn frame(c: &mut Connector, env: &mut TestEnv, ws: u64, text: &str) -> Vec<PbxEvent> {
    c.handle(env, Event::WsMessage(ws, WsFrame::Text(text.to_string())));
    c.pbx_events.clone()
}

fn last(env: &TestEnv, ws: u64) -> Value {
    env.sent_json(ws).last().cloned().unwrap_or(Value::Null)
}

fn challenge(c: &mut Connector, env: &mut TestEnv, ws: u64) -> String {
    frame(c, env, ws, r#"{"mt":"AppChallenge"}"#);
    let msg = last(env, ws);
    assert_eq!(msg["mt"], "AppChallengeResult");
    msg["challenge"].as_str().unwrap().to_string()
}

fn login_frame(pbx: &str, challenge: &str, password: &str) -> String {
    login_as(pbx, "m365", "m365", challenge, password)
}

/// An AppLogin by `sip` through App object `appobj` (equal for the PBX's object login).
fn login_as(pbx: &str, sip: &str, appobj: &str, challenge: &str, password: &str) -> String {
    let info = INFO
        .replace("\"pbx\":\"master\"", &format!("\"pbx\":\"{pbx}\""))
        .replace("\"appobj\":\"m365\"", &format!("\"appobj\":\"{appobj}\""));
    let d = digest(
        "innovaphone-microsoft365",
        "example.com",
        sip,
        "4f2a",
        "Microsoft 365",
        Some(&info),
        challenge,
        password,
    );
    format!(
        r#"{{"mt":"AppLogin","app":"innovaphone-microsoft365","domain":"example.com","sip":"{sip}","guid":"4f2a","dn":"Microsoft 365","digest":"{d}","info":{info}}}"#
    )
}

/// Opens `ws`, logs in as PBX `pbx` with `apis`, and returns after PbxInfo.
fn connect(c: &mut Connector, env: &mut TestEnv, ws: u64, pbx: &str, apis: &[&str]) {
    c.handle(env, Event::WsOpen(open(ws)));
    let ch = challenge(c, env, ws);
    frame(c, env, ws, &login_frame(pbx, &ch, "pwd"));
    assert_eq!(last(env, ws), json!({"mt":"AppLoginResult","ok":true}));
    let info = json!({"mt":"PbxInfo","domain":"example.com","pbx":pbx,"pbxDns":"pbx.example.com",
        "apis":apis,"version":"14r2","build":"1410520"});
    let ev = frame(c, env, ws, &info.to_string());
    assert!(ev.contains(&PbxEvent::Connected {
        ws,
        pbx: pbx.to_string()
    }));
}

fn row(guid: &str, h323: &str, loc: &str) -> Value {
    json!({"guid":guid,"h323":h323,"cn":h323.to_uppercase(),"dn":h323,"e164":"201","loc":loc,
        "emails":[{"email":format!("{h323}@example.com")}],"hide":false,"node":"root"})
}

/// Runs the initial replication with `rows` on a connection whose PbxInfo enabled it.
fn replicate(c: &mut Connector, env: &mut TestEnv, ws: u64, db: &str, rows: &[Value]) {
    let start = last(env, ws);
    assert_eq!(start["mt"], "ReplicateStart");
    frame(
        c,
        env,
        ws,
        &json!({"api":"PbxTableUsers","mt":"ReplicateStartResult","src":"users","guid":db,"usn":1})
            .to_string(),
    );
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(last(env, ws)["mt"], "ReplicateNext");
        let msg = json!({"api":"PbxTableUsers","mt":"ReplicateNextResult","src":"users","usn":10 + i,"columns":r});
        frame(c, env, ws, &msg.to_string());
    }
    assert_eq!(last(env, ws)["mt"], "ReplicateNext");
    frame(
        c,
        env,
        ws,
        r#"{"api":"PbxTableUsers","mt":"ReplicateNextResult","src":"users"}"#,
    );
}

const ALL_APIS: &[&str] = &["PbxApi", "PbxTableUsers", "PbxAdminApi"];

#[test]
fn open_sends_nothing_and_challenges_are_fresh() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    assert!(env.sent.is_empty());
    let a = challenge(&mut c, &mut env, 1);
    let b = challenge(&mut c, &mut env, 1);
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn valid_login_then_pbx_info_starts_replication() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    let start = last(&env, 1);
    assert_eq!(start["api"], "PbxTableUsers");
    assert_eq!(start["mt"], "ReplicateStart");
    let cols = start["columns"].as_object().unwrap();
    for col in ["guid", "h323", "cn", "dn", "e164", "emails", "loc"] {
        assert!(cols.contains_key(col), "{col} requested");
    }
    let conn = c.pbx.connection(1).unwrap();
    assert_eq!(conn.pbx.as_deref(), Some("master"));
    assert!(conn.has_api("PbxAdminApi"));
    assert_eq!(conn.users, Replication::Starting);
}

#[test]
fn real_pbx_capture_logs_in_through_the_state_machine() {
    let (mut c, mut env) = start();
    env.set_config("instance.password", "go");
    env.random_queue.push_back(0x16d7_dbbc_ccb6_3612);
    c.handle(&mut env, Event::WsOpen(open(3)));
    assert_eq!(challenge(&mut c, &mut env, 3), "16d7dbbcccb63612");
    let capture = r#"{"mt":"AppLogin","sip":"go-search","guid":"3954ae7854c96301c9dd009033400109","dn":"go-search","digest":"130f168773ff760701b74e629eca2544c6e62d5354e92e6f821001a982eb8951","domain":"fritz.box","app":"searchapi","info":{"appobj":"go-search","appdn":"go-search","appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi","pbx":"pbx-main","cn":"go-search","unlicensed":true,"apps":[]}}"#;
    frame(&mut c, &mut env, 3, capture);
    assert_eq!(last(&env, 3)["ok"], true);
    let login = c.pbx.connection(3).unwrap().login.clone().unwrap();
    assert_eq!(login.info_pbx.as_deref(), Some("pbx-main"));
    assert_eq!(login.app, "searchapi");
}

#[test]
fn wrong_password_is_refused_and_no_api_traffic_follows() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    let ch = challenge(&mut c, &mut env, 1);
    frame(
        &mut c,
        &mut env,
        1,
        &login_frame("master", &ch, "not-the-password"),
    );
    let res = last(&env, 1);
    assert_eq!(res["mt"], "AppLoginResult");
    assert_eq!(res["ok"], false);
    env.clear_sent();
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxTableUsers"]}"#,
    );
    assert!(ev.is_empty());
    assert!(
        env.sent.is_empty(),
        "nothing sent before a successful login"
    );
    assert!(c.pbx.connection(1).unwrap().login.is_none());
    assert!(env.logged("login refused"));
    assert!(
        !env.logs
            .iter()
            .any(|(_, _, m)| m.contains("not-the-password"))
    );
}

#[test]
fn login_without_challenge_is_refused() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    frame(
        &mut c,
        &mut env,
        1,
        &login_frame("master", "0123456789abcdef", "pwd"),
    );
    assert_eq!(last(&env, 1)["ok"], false);
}

#[test]
fn a_challenge_is_never_reused() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    let ch = challenge(&mut c, &mut env, 1);
    let login = login_frame("master", &ch, "pwd");
    frame(&mut c, &mut env, 1, &login);
    assert_eq!(last(&env, 1)["ok"], true);
    // Replaying the same AppLogin (same challenge) must fail.
    frame(&mut c, &mut env, 1, &login);
    assert_eq!(last(&env, 1)["ok"], false);
    assert!(c.pbx.connection(1).unwrap().login.is_none());
}

#[test]
fn a_stale_challenge_is_refused() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    let old = challenge(&mut c, &mut env, 1);
    let _new = challenge(&mut c, &mut env, 1);
    frame(&mut c, &mut env, 1, &login_frame("master", &old, "pwd"));
    assert_eq!(last(&env, 1)["ok"], false);
}

#[test]
fn challenge_of_another_connection_is_refused() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    c.handle(&mut env, Event::WsOpen(open(2)));
    let ch1 = challenge(&mut c, &mut env, 1);
    let _ch2 = challenge(&mut c, &mut env, 2);
    frame(&mut c, &mut env, 2, &login_frame("master", &ch1, "pwd"));
    assert_eq!(last(&env, 2)["ok"], false);
}

#[test]
fn garbage_before_login_is_ignored_then_closed() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    for bad in [
        "not json",
        "[1,2]",
        r#"{"mt":5}"#,
        r#"{"api":"PbxApi","mt":"SetPresence"}"#,
    ] {
        frame(&mut c, &mut env, 1, bad);
    }
    c.handle(
        &mut env,
        Event::WsMessage(1, WsFrame::Binary(vec![0, 1, 2])),
    );
    assert!(env.sent.is_empty());
    assert_eq!(env.closed.len(), 1);
    assert_eq!(env.closed[0].1, 1008);
}

#[test]
fn keepalive_and_unknown_messages_are_tolerated() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    frame(&mut c, &mut env, 1, r#"{"mt":"KeepAlive"}"#);
    let ch = challenge(&mut c, &mut env, 1);
    frame(&mut c, &mut env, 1, &login_frame("master", &ch, "pwd"));
    env.clear_sent();
    for f in [
        r#"{"mt":"KeepAlive"}"#,
        r#"{"mt":"SomethingNew","x":[1,{"y":2}]}"#,
        r#"{"api":"Unknown","mt":"Foo"}"#,
        r#"{"api":"PbxApi","mt":"PresenceUpdate","src":"garbage"}"#,
        r#"{"api":"PbxTableUsers","mt":"ReplicateNextResult"}"#,
        "{",
    ] {
        assert!(frame(&mut c, &mut env, 1, f).is_empty());
    }
    assert!(env.sent.is_empty());
    assert!(env.closed.is_empty());
    assert!(c.pbx.connection(1).unwrap().login.is_some());
}

#[test]
fn replication_loads_rows_then_applies_pushes() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    replicate(
        &mut c,
        &mut env,
        1,
        "db1",
        &[row("g1", "alice", "master"), row("g2", "bob", "slave")],
    );
    assert_eq!(
        c.pbx_events,
        vec![PbxEvent::UsersLoaded {
            pbx: "master".into(),
            count: 2
        }]
    );
    assert_eq!(c.pbx.connection(1).unwrap().users, Replication::Live);
    let alice = super::users::get(&mut env, "master", "g1").unwrap();
    assert_eq!(alice.h323, "alice");
    assert_eq!(alice.cn, "ALICE");
    assert_eq!(alice.emails, vec!["alice@example.com"]);
    // Compact: unused columns are not stored.
    assert!(!env.kv_text("user/row/master/g1").unwrap().contains("node"));

    let ev = frame(
        &mut c,
        &mut env,
        1,
        &json!({"api":"PbxTableUsers","mt":"ReplicateAdd","usn":20,"columns":row("g3","carol","master")})
            .to_string(),
    );
    assert_eq!(
        ev,
        vec![PbxEvent::UserChanged {
            pbx: "master".into(),
            guid: "g3".into()
        }]
    );
    let mut changed = row("g1", "alice", "slave");
    changed["cn"] = json!("Alice Smith");
    frame(
        &mut c,
        &mut env,
        1,
        &json!({"api":"PbxTableUsers","mt":"ReplicateUpdate","usn":21,"columns":changed})
            .to_string(),
    );
    let alice = super::users::get(&mut env, "master", "g1").unwrap();
    assert_eq!(
        (alice.cn.as_str(), alice.loc.as_str()),
        ("Alice Smith", "slave")
    );
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxTableUsers","mt":"ReplicateDel","usn":22,"columns":{"guid":"g2"}}"#,
    );
    assert_eq!(
        ev,
        vec![PbxEvent::UserRemoved {
            pbx: "master".into(),
            guid: "g2".into()
        }]
    );
    assert_eq!(super::users::count(&mut env, "master"), 2);
    assert_eq!(
        super::users::resume(&mut env, "master").unwrap(),
        super::users::Resume {
            guid: "db1".into(),
            usn: 22
        }
    );
}

#[test]
fn reconnect_resumes_and_a_new_database_reloads() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    replicate(&mut c, &mut env, 1, "db1", &[row("g1", "alice", "master")]);
    c.handle(
        &mut env,
        Event::WsClosed(WsClosed {
            id: 1,
            code: 1006,
            reason: String::new(),
        }),
    );
    assert_eq!(
        c.pbx_events,
        vec![PbxEvent::Disconnected {
            ws: 1,
            pbx: Some("master".into())
        }]
    );
    assert!(!env.kv.contains_key("pbx/conn/1"));
    // Rows survive the disconnect; the next start resumes from the stored point.
    connect(&mut c, &mut env, 2, "master", ALL_APIS);
    let start = last(&env, 2);
    assert_eq!(start["guid"], "db1");
    assert_eq!(start["usn"], 10);
    assert_eq!(super::users::count(&mut env, "master"), 1);
    // The PBX answers with another database: stored rows are dropped and reloaded.
    replicate(&mut c, &mut env, 2, "db2", &[row("g9", "zoe", "master")]);
    let all = super::users::list(&mut env, "master");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].guid, "g9");
}

#[test]
fn replication_needs_the_api_enabled() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", &["PbxApi"]);
    assert_eq!(last(&env, 1)["mt"], "AppLoginResult");
    assert!(env.logged("PbxTableUsers is not enabled"));
    assert_eq!(
        c.pbx.check_licence(&mut env, "g1"),
        Err(PbxError::ApiNotEnabled("PbxAdminApi"))
    );
}

#[test]
fn set_presence_routes_by_loc_and_uses_own_contact() {
    let (mut c, mut env) = start();
    assert_eq!(
        c.pbx.set_presence(&mut env, None, "g1", "busy", ""),
        Err(PbxError::NotConnected)
    );
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    connect(&mut c, &mut env, 2, "slave", ALL_APIS);
    assert_eq!(c.pbx.master().unwrap().ws, 1);
    env.clear_sent();
    assert_eq!(
        c.pbx
            .set_presence(&mut env, Some("slave"), "g2", "meeting", "Teams"),
        Ok(2)
    );
    assert_eq!(
        last(&env, 2),
        json!({"api":"PbxApi","mt":"SetPresence","src":"sp:g2:meeting","guid":"g2",
            "contact":"teams:","activity":"meeting","note":"Teams"})
    );
    // Unknown loc and no loc go to the master.
    assert_eq!(
        c.pbx.set_presence(&mut env, Some("gone"), "g3", "", ""),
        Ok(1)
    );
    assert_eq!(last(&env, 1)["activity"], "");
    assert_eq!(c.pbx.set_presence(&mut env, None, "g3", "away", ""), Ok(1));
}

#[test]
fn configured_master_and_contact_are_used() {
    let mut env = TestEnv::new();
    env.set_config("pbx.master", "pbx-b");
    env.set_config("pbx.presence-contact", "ms-teams:");
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    connect(&mut c, &mut env, 1, "pbx-a", ALL_APIS);
    connect(&mut c, &mut env, 2, "pbx-b", ALL_APIS);
    assert_eq!(c.pbx.master().unwrap().ws, 2);
    c.pbx.set_presence(&mut env, None, "g", "dnd", "").unwrap();
    assert_eq!(last(&env, 2)["contact"], "ms-teams:");
}

#[test]
fn refused_on_the_phone_falls_back_to_busy() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    c.pbx
        .set_presence(&mut env, None, "g1", "on-the-phone", "")
        .unwrap();
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:on-the-phone","error":1,"errorText":"invalid activity"}"#,
    );
    assert!(ev.is_empty());
    let retry = last(&env, 1);
    assert_eq!(retry["activity"], "busy");
    assert_eq!(retry["note"], "In a Teams call");
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:busy","error":2,"errorText":"unknown user"}"#,
    );
    assert_eq!(
        ev,
        vec![PbxEvent::SetPresenceFailed {
            pbx: "master".into(),
            guid: "g1".into(),
            error: "unknown user".into()
        }]
    );
    // Success results produce nothing.
    assert!(
        frame(
            &mut c,
            &mut env,
            1,
            r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:busy"}"#
        )
        .is_empty()
    );
}

#[test]
fn presence_monitoring_reports_updates() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    c.pbx
        .subscribe_presence(&mut env, Some("master"), "alice", "g1")
        .unwrap();
    assert_eq!(
        last(&env, 1),
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"pr:g1"})
    );
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"PresenceState","src":"pr:g1","up":true,"sip":"alice","num":"201"}"#,
    );
    assert_eq!(
        ev,
        vec![PbxEvent::PresenceMonitor {
            pbx: "master".into(),
            guid: "g1".into(),
            up: true
        }]
    );
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"PresenceUpdate","src":"pr:g1","presence":[{"contact":"tel:","status":"open","activity":"on-the-phone","note":""},{"contact":"im:","status":"closed"}]}"#,
    );
    match &ev[..] {
        [PbxEvent::Presence { pbx, guid, items }] => {
            assert_eq!((pbx.as_str(), guid.as_str()), ("master", "g1"));
            assert_eq!(items[0].activity, "on-the-phone");
            assert_eq!(items[1].contact, "im:");
        }
        other => panic!("unexpected {other:?}"),
    }
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"SubscribePresenceResult","src":"pr:g2","error":1,"errorText":"not allowed"}"#,
    );
    assert_eq!(
        ev,
        vec![PbxEvent::PresenceMonitor {
            pbx: "master".into(),
            guid: "g2".into(),
            up: false
        }]
    );
    c.pbx
        .unsubscribe_presence(&mut env, 1, "alice", "g1")
        .unwrap();
    assert_eq!(last(&env, 1)["mt"], "UnsubscribePresence");
}

#[test]
fn licence_checks_are_recorded_and_changes_flagged() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    c.pbx.check_licence(&mut env, "g1").unwrap();
    assert_eq!(
        last(&env, 1),
        json!({"api":"PbxAdminApi","mt":"CheckAppLic","src":"lic:g1","guid":"g1",
            "lic":"App(innovaphone-microsoft365)"})
    );
    let result = r#"{"api":"PbxAdminApi","mt":"CheckAppLicResult","src":"lic:g1","ok":true}"#;
    let ev = frame(&mut c, &mut env, 1, result);
    assert_eq!(
        ev,
        vec![PbxEvent::Licence {
            guid: "g1".into(),
            licensed: true,
            changed: true
        }]
    );
    let ev = frame(&mut c, &mut env, 1, result);
    assert_eq!(
        ev,
        vec![PbxEvent::Licence {
            guid: "g1".into(),
            licensed: true,
            changed: false
        }]
    );
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxAdminApi","mt":"CheckAppLicResult","src":"lic:g1"}"#,
    );
    assert_eq!(
        ev,
        vec![PbxEvent::Licence {
            guid: "g1".into(),
            licensed: false,
            changed: true
        }]
    );
    assert_eq!(super::licence::get(&mut env, "g1"), Some(false));
}

#[test]
fn master_and_slave_keep_separate_state() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    c.handle(&mut env, Event::WsOpen(open(2)));
    let ch = challenge(&mut c, &mut env, 2);
    // The slave is mid-login while the master replicates.
    replicate(&mut c, &mut env, 1, "dbm", &[row("g1", "alice", "master")]);
    frame(&mut c, &mut env, 2, &login_frame("slave", &ch, "pwd"));
    assert_eq!(last(&env, 2)["ok"], true);
    frame(
        &mut c,
        &mut env,
        2,
        r#"{"mt":"PbxInfo","pbx":"slave","apis":["PbxApi","PbxTableUsers"]}"#,
    );
    replicate(&mut c, &mut env, 2, "dbs", &[]);
    assert_eq!(super::users::count(&mut env, "master"), 1);
    assert_eq!(super::users::count(&mut env, "slave"), 0);
    assert_eq!(c.pbx.connection(2).unwrap().pbx.as_deref(), Some("slave"));
    // Closing the slave leaves the master alone.
    c.handle(
        &mut env,
        Event::WsClosed(WsClosed {
            id: 2,
            code: 1000,
            reason: String::new(),
        }),
    );
    assert!(c.pbx.connection(2).is_none());
    assert_eq!(c.pbx.master().unwrap().ws, 1);
}

#[test]
fn state_survives_a_hot_swap() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxTableUsers","mt":"ReplicateStartResult","src":"users","guid":"db1","usn":1}"#,
    );
    // Connection 5 is mid-handshake; connection 9's state is stale (closed meanwhile).
    c.handle(&mut env, Event::WsOpen(open(5)));
    let ch = challenge(&mut c, &mut env, 5);
    env.kv_set_stale();

    // A new guest instance (upgrade) with the host's open sockets.
    let mut next = Connector::new();
    next.handle(
        &mut env,
        Event::Init(InitInfo {
            reason: InitReason::Upgrade,
            from_version: Some("microsoft365 0.0.9".into()),
            snapshot: None,
            open_websockets: vec![open(1), open(5)],
        }),
    );
    assert!(!env.kv.contains_key("pbx/conn/9"));
    let conn = next.pbx.connection(1).unwrap();
    assert!(conn.is_pbx());
    assert_eq!(conn.users, Replication::Loading);
    // Replication continues where the old guest left it.
    let ev = frame(
        &mut next,
        &mut env,
        1,
        r#"{"api":"PbxTableUsers","mt":"ReplicateNextResult","src":"users"}"#,
    );
    assert!(matches!(ev[..], [PbxEvent::UsersLoaded { .. }]));
    // The handshake in flight completes with the challenge the old guest issued.
    frame(&mut next, &mut env, 5, &login_frame("slave", &ch, "pwd"));
    assert_eq!(last(&env, 5)["ok"], true);
}

#[test]
fn a_user_session_cannot_pose_as_a_pbx() {
    let (mut c, mut env) = start();
    c.handle(&mut env, Event::WsOpen(open(1)));
    let ch = challenge(&mut c, &mut env, 1);
    // A valid myApps user login (digest by the PBX) without pbxObj: still a user session.
    frame(
        &mut c,
        &mut env,
        1,
        &login_as("master", "mallory", "m365", &ch, "pwd"),
    );
    assert_eq!(last(&env, 1)["ok"], true);
    env.clear_sent();
    let ev = frame(
        &mut c,
        &mut env,
        1,
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxApi","PbxTableUsers","PbxAdminApi"]}"#,
    );
    assert!(ev.is_empty());
    let ev = frame(
        &mut c,
        &mut env,
        1,
        &json!({"api":"PbxTableUsers","mt":"ReplicateAdd","columns":row("g1","evil","master")})
            .to_string(),
    );
    assert!(ev.is_empty());
    assert!(env.sent.is_empty());
    assert_eq!(super::users::count(&mut env, "master"), 0);
    assert!(!c.pbx.connection(1).unwrap().is_pbx());
    assert_eq!(
        c.pbx.set_presence(&mut env, None, "g1", "busy", ""),
        Err(PbxError::NotConnected)
    );
}

#[test]
fn second_app_object_of_a_pbx_neither_duplicates_nor_steals_work() {
    let (mut c, mut env) = start();
    // The `microsoft365-api` object of the same PBX logs in first, with only PbxTableUsers.
    c.handle(&mut env, Event::WsOpen(open(1)));
    let ch = challenge(&mut c, &mut env, 1);
    frame(
        &mut c,
        &mut env,
        1,
        &login_as("master", "microsoft365-api", "microsoft365-api", &ch, "pwd"),
    );
    frame(
        &mut c,
        &mut env,
        1,
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxTableUsers"]}"#,
    );
    assert_eq!(last(&env, 1)["mt"], "ReplicateStart");
    connect(&mut c, &mut env, 2, "master", ALL_APIS);
    // No second replication of the same PBX.
    assert_eq!(last(&env, 2)["mt"], "AppLoginResult");
    assert_eq!(c.pbx.connection(2).unwrap().users, Replication::Off);
    // Presence and licences go to the connection that has the API.
    assert_eq!(c.pbx.set_presence(&mut env, None, "g", "busy", ""), Ok(2));
    assert_eq!(c.pbx.check_licence(&mut env, "g"), Ok(2));
    assert_eq!(c.pbx.master().unwrap().ws, 2);
    // The replicating connection goes away: the other one takes over.
    c.handle(
        &mut env,
        Event::WsClosed(WsClosed {
            id: 1,
            code: 1006,
            reason: String::new(),
        }),
    );
    assert_eq!(last(&env, 2)["mt"], "ReplicateStart");
    assert_eq!(c.pbx.connection(2).unwrap().users, Replication::Starting);
    assert!(env.kv_text("pbx/conn/2").unwrap().contains("Starting"));
}

impl TestEnv {
    fn kv_set_stale(&mut self) {
        self.kv
            .insert("pbx/conn/9".into(), br#"{"ws":9,"peer":"x"}"#.to_vec());
    }
}

/// Valid frames of every kind the connector handles, to be mangled below.
fn corpus(challenge: &str) -> Vec<String> {
    let mut frames = vec![
        r#"{"mt":"AppChallenge"}"#.to_string(),
        login_frame("master", challenge, "pwd"),
        r#"{"mt":"PbxInfo","domain":"example.com","pbx":"master","apis":["PbxApi","PbxTableUsers","PbxAdminApi"]}"#.into(),
        r#"{"api":"PbxTableUsers","mt":"ReplicateStartResult","src":"users","guid":"db","usn":5}"#.into(),
        r#"{"api":"PbxTableUsers","mt":"ReplicateDel","usn":9,"columns":{"guid":"g2"}}"#.into(),
        r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:on-the-phone","error":1,"errorText":"x"}"#.into(),
        r#"{"api":"PbxApi","mt":"PresenceState","src":"pr:g1","up":true}"#.into(),
        r#"{"api":"PbxApi","mt":"PresenceUpdate","src":"pr:g1","presence":[{"contact":"tel:","status":"open","activity":"away","note":"n"}]}"#.into(),
        r#"{"api":"PbxApi","mt":"SubscribePresenceResult","src":"pr:g1","error":2}"#.into(),
        r#"{"api":"PbxAdminApi","mt":"CheckAppLicResult","src":"lic:g1","ok":true}"#.into(),
        r#"{"mt":"KeepAlive"}"#.into(),
    ];
    for mt in ["ReplicateNextResult", "ReplicateAdd", "ReplicateUpdate"] {
        frames.push(
            json!({"api":"PbxTableUsers","mt":mt,"src":"users","usn":7,"columns":row("g1","alice","master")})
                .to_string(),
        );
    }
    frames
}

/// Replaces each JSON value in turn by values of the wrong type.
fn type_confusions(frame: &str) -> Vec<String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(frame) else {
        return vec![];
    };
    let wrong = [
        json!(null),
        json!(-1),
        json!(1e308),
        json!("x"),
        json!([1, "a", null]),
        json!({"k": {}}),
        json!(true),
        json!(""),
    ];
    let mut out = Vec::new();
    for key in map.keys() {
        for w in &wrong {
            let mut m = map.clone();
            m.insert(key.clone(), w.clone());
            out.push(Value::Object(m).to_string());
        }
    }
    out
}

#[test]
fn mangled_frames_never_panic() {
    let (mut c, mut env) = start();
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    c.handle(&mut env, Event::WsOpen(open(2)));
    let ch = challenge(&mut c, &mut env, 2);
    let frames = corpus(&ch);
    let mut fed = 0;
    for f in &frames {
        // Handshake frames go to the connection still logging in; a failed re-login on a
        // logged-in connection logs it out, which is intended.
        let targets: &[u64] = if f.contains("AppChallenge") || f.contains("AppLogin") {
            &[2]
        } else {
            &[1, 2]
        };
        // Every prefix (truncated frames, as on an abrupt close mid-message).
        for cut in 0..f.len() {
            if f.is_char_boundary(cut) {
                for &ws in targets {
                    frame(&mut c, &mut env, ws, &f[..cut]);
                    fed += 1;
                }
            }
        }
        for bad in type_confusions(f) {
            for &ws in targets {
                frame(&mut c, &mut env, ws, &bad);
                fed += 1;
            }
        }
    }
    assert!(fed > 2_000, "{fed}");
    // The logged-in PBX is still served afterwards.
    assert!(c.pbx.connection(1).unwrap().is_pbx());
}

#[test]
fn corrupt_kv_state_is_survived() {
    let mut env = TestEnv::new();
    for (k, v) in [
        ("pbx/conn/1", &b"{not json"[..]),
        ("pbx/conn/2", br#"{"ws":99}"#),
        ("pbx/conn/x", b"1"),
        ("pbx/repl/master", b"\xff\xfe"),
        ("user/row/master/g1", b"[]"),
        ("user/lic/g1", b"maybe"),
        ("stats/events/init", b"-5"),
        ("meta/schema-version", b"one"),
    ] {
        env.kv.insert(k.into(), v.to_vec());
    }
    let mut c = Connector::new();
    c.handle(
        &mut env,
        Event::Init(InitInfo {
            reason: InitReason::Restart,
            from_version: None,
            snapshot: None,
            open_websockets: vec![open(1), open(2)],
        }),
    );
    // Unreadable connection state starts fresh; a fresh handshake works.
    assert!(c.pbx.connection(1).unwrap().login.is_none());
    assert!(!env.kv.contains_key("pbx/conn/x"));
    let ch = challenge(&mut c, &mut env, 2);
    frame(&mut c, &mut env, 2, &login_frame("master", &ch, "pwd"));
    frame(
        &mut c,
        &mut env,
        2,
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxTableUsers"]}"#,
    );
    assert_eq!(last(&env, 2)["mt"], "ReplicateStart");
    assert_eq!(super::users::list(&mut env, "master"), vec![]);
    assert_eq!(env.kv_text("stats/events/init").as_deref(), Some("1"));
}

#[test]
fn every_presence_write_and_refusal_is_audited() {
    let (mut c, mut env) = start();
    // Not connected: the write is audited as failed.
    assert!(
        c.pbx
            .set_presence(&mut env, None, "g1", "busy", "")
            .is_err()
    );
    connect(&mut c, &mut env, 1, "master", ALL_APIS);
    replicate(&mut c, &mut env, 1, "db1", &[row("g1", "alice", "master")]);
    c.pbx
        .set_presence(&mut env, None, "g1", "on-the-phone", "")
        .unwrap();
    frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:on-the-phone","error":1,"errorText":"invalid activity"}"#,
    );
    frame(
        &mut c,
        &mut env,
        1,
        r#"{"api":"PbxApi","mt":"SetPresenceResult","src":"sp:g1:busy","error":2,"errorText":"unknown user"}"#,
    );
    let trail = crate::audit::recent(&mut env, 10, None);
    let seen: Vec<(&str, &str, &str)> = trail
        .iter()
        .rev()
        .map(|e| (e.user.as_str(), e.what.as_str(), e.result.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("g1", "SetPresence busy", "failed: no PBX connected"),
            ("alice (g1)", "SetPresence on-the-phone", "sent"),
            ("alice (g1)", "SetPresence busy \"In a Teams call\"", "sent"),
            ("alice (g1)", "SetPresence busy", "refused: unknown user"),
        ]
    );
    assert!(trail.iter().all(|e| e.direction == crate::audit::TO_PBX));
    assert!(trail[1].why.contains("refused on-the-phone"));
}
