//! Sans-IO tests of myApps user sessions: user-side logins (item 17), search relay (item 18)
//! and the Config API (item 19).

mod common;

use common::*;
use fake_pbx::client::{AppKind, SessionState, UserSession};
use fake_pbx::digest::{decrypt, encrypt, session_key};
use serde_json::{Map, Value, json};

fn licensed_pbx() -> fake_pbx::Pbx {
    let (mut p, _) = pbx();
    let mut a = user("aa", "alice", "master");
    a.lics = vec!["App(innovaphone-microsoft365)".into()];
    a.apps = vec!["m365".into(), "microsoft365-api".into()];
    a.grps = vec![json!({"name":"sales","mode":"active","dyn":"in"})];
    p.upsert_user(a);
    p.upsert_user(user("bb", "bob", "slave"));
    p.set_licence("App(innovaphone-microsoft365)", 5);
    p
}

fn logged_in(
    p: &mut fake_pbx::Pbx,
    guid: &str,
    kind: AppKind,
    challenge: &str,
) -> (UserSession, Value, String) {
    let cfg = p.user_session(guid, kind).unwrap();
    let mut s = UserSession::new(cfg);
    assert_eq!(s.start(), vec![r#"{"mt":"AppChallenge"}"#.to_string()]);
    let out = s.on_frame(&json!({"mt":"AppChallengeResult","challenge":challenge}).to_string());
    let text = out[0].clone();
    let v: Value = serde_json::from_str(&text).unwrap();
    s.on_frame(r#"{"mt":"AppLoginResult","ok":true}"#);
    assert_eq!(s.state, SessionState::LoggedIn);
    (s, v, text)
}

#[test]
fn user_logins_for_user_admin_and_api_apps() {
    let mut p = licensed_pbx();
    let (_, u, t) = logged_in(&mut p, "aa", AppKind::User, "c1");
    assert_eq!(u["app"], "innovaphone-microsoft365");
    assert_eq!(u["pbxObj"], "m365");
    assert_eq!(u["sip"], "alice");
    assert_eq!(u["guid"], "aa");
    assert_eq!(u["info"]["groups"], json!(["sales"]));
    assert_eq!(
        u["info"]["apps"],
        json!([{"name":"m365"},{"name":"microsoft365-api"}])
    );
    assert!(u["info"].get("unlicensed").is_none());
    assert!(
        verify_login(&t, "c1", PASSWORD),
        "signed with the App object's password"
    );
    let (_, a, t) = logged_in(&mut p, "aa", AppKind::Admin, "c2");
    assert_eq!(a["app"], "innovaphone-microsoft365admin");
    assert!(verify_login(&t, "c2", PASSWORD));
    let (_, api, _) = logged_in(&mut p, "aa", AppKind::Api, "c3");
    assert_eq!(api["app"], "innovaphone-microsoft365api");
    assert_eq!(api["pbxObj"], "microsoft365-api");
    assert!(
        api["info"]["appurl"]
            .as_str()
            .unwrap()
            .ends_with("/innovaphone-microsoft365api")
    );
    // Unlicensed user, slave user: unlicensed:true and pbx = user's loc.
    let (_, b, _) = logged_in(&mut p, "bb", AppKind::User, "c4");
    assert_eq!(b["info"]["unlicensed"], true);
    assert_eq!(b["info"]["pbx"], "slave");
    p.switches.testmode = true;
    let (_, b, _) = logged_in(&mut p, "bb", AppKind::Api, "c5");
    assert_eq!(b["info"]["testmode"], true);
    assert!(
        b["info"].get("unlicensed").is_none(),
        "test mode licenses everyone"
    );
    // Refused login.
    let cfg = p.user_session("aa", AppKind::User).unwrap();
    let mut s = UserSession::new(cfg);
    s.on_frame(r#"{"mt":"AppChallengeResult","challenge":"x"}"#);
    s.on_frame(r#"{"mt":"AppLoginResult","ok":false}"#);
    assert_eq!(s.state, SessionState::Refused);
}

#[test]
fn search_relay_expects_infos_then_exactly_one_result() {
    let mut p = licensed_pbx();
    let (mut s, _, _) = logged_in(&mut p, "aa", AppKind::Api, "c1");
    let q: Value = serde_json::from_str(&s.search("7", "Doe", Some("contact"))).unwrap();
    assert_eq!(
        q,
        json!({"api":"com.innovaphone.search","mt":"Search","src":"7","search":"Doe","type":"contact"})
    );
    s.on_frame(&json!({"mt":"SearchInfo","src":"7","dn":"John Doe","contact":{"telephonenumber":["+49 1"],"mobile":["+49 2"],"email":["j@x"]}}).to_string());
    s.on_frame(r#"{"mt":"SearchResult","src":"7"}"#);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.searches["7"].infos.len(), 1);
    assert!(s.searches["7"].done);
    // Violations: info after result, second result, phone field not an array, unknown src.
    s.on_frame(r#"{"mt":"SearchInfo","src":"7","contact":{}}"#);
    s.on_frame(r#"{"mt":"SearchResult","src":"7"}"#);
    s.search("8", "x", None);
    s.on_frame(r#"{"mt":"SearchInfo","src":"8","contact":{"telephonenumber":"+49 1"}}"#);
    s.on_frame(r#"{"mt":"SearchResult","src":"9"}"#);
    assert_eq!(s.violations.len(), 4, "{:?}", s.violations);
}

#[test]
fn config_api_password_items_rc4_and_fan_out() {
    // Session key and RC4 vectors of spec §2.5.
    let k = session_key("0123456789abcdef", "pwd");
    assert_eq!(
        k,
        "d58c77eae0c1c1f37a9f545e207643c926ad9ea4932016a83a4a01029de37760"
    );
    assert_eq!(encrypt("seed1", &k, "secret"), "8c0a8a363ecb");
    let mut p = licensed_pbx();
    p.node_config_mut("master").unwrap().app.password = "pwd".into();
    let (mut a, _, _) = logged_in(&mut p, "aa", AppKind::Admin, "0123456789abcdef");
    assert_eq!(a.session_key().unwrap(), k);
    a.on_frame(&json!({"api":"Config","mt":"GetConfigItemsResult","src":"c","ConfigItems":[
        {"name":"tenantId","type":"STRING"},{"name":"clientSecret","type":"STRING","password":true}]}).to_string());
    assert_eq!(a.password_items, vec!["clientSecret"]);
    let w: Value = serde_json::from_str(&a.write_config(
        "w",
        &Map::from_iter([("tenantId".to_string(), json!("t"))]),
        &[("clientSecret", "secret")],
    ))
    .unwrap();
    assert_eq!(w["api"], "Config");
    assert_eq!(w["mt"], "WriteConfig");
    let item = &w["ConfigItems"]["clientSecret"];
    let seed = item["key"].as_str().unwrap();
    assert_eq!(item["value"], encrypt(seed, &k, "secret"));
    assert_eq!(
        decrypt(seed, &k, item["value"].as_str().unwrap()).unwrap(),
        "secret"
    );
    // Second admin session sees ConfigUpdate; a password in it is a violation.
    let (mut b, _, _) = logged_in(&mut p, "aa", AppKind::Admin, "other");
    b.password_items = vec!["clientSecret".into()];
    b.on_frame(r#"{"api":"Config","mt":"ConfigUpdate","ConfigItems":{"tenantId":"t"}}"#);
    assert_eq!(b.config_updates.len(), 1);
    assert_eq!(b.config["tenantId"], "t");
    assert!(b.violations.is_empty());
    b.on_frame(r#"{"api":"Config","mt":"ReadConfigResult","src":"r","ConfigItems":{"clientSecret":"secret"}}"#);
    assert_eq!(b.violations.len(), 1);
}
