//! Provisioning (issue #9) against the project's independent fake PBX, in-process: the
//! connector creates the `microsoft365-api` App object through the PbxAdminApi of its own App
//! object, and running it again updates the same object instead of adding another.

mod common;

use common::pbx::{node, pump};
use std::sync::Arc;

use fake_pbx::pbx::default_apis;
use fake_pbx::{ManualClock, Pbx};
use microsoft365::event::InitInfo;
use microsoft365::provisioning;
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event};
use serde_json::Value;

fn start(apis: Vec<String>) -> (Pbx, Connector, TestEnv) {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut pbx = Pbx::new("example.com", Arc::new(clock.clone()), 7);
    let mut n = node("master", "pwd");
    n.apis = apis;
    pbx.add_node(n);
    let mut env = TestEnv::new();
    env.set_config("instance.password", "pwd");
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    pbx.tick();
    pump(&mut pbx, &mut c, &mut env);
    assert!(pbx.is_logged_in("master"));
    (pbx, c, env)
}

fn last(env: &mut TestEnv) -> provisioning::State {
    serde_json::from_value(provisioning::status(env, &Connector::new().pbx)["last"].clone())
        .expect("an operation ran")
}

#[test]
fn objects_show_the_instance_url_flags_and_no_password() {
    let (_pbx, c, mut env) = start(default_apis());
    let status = provisioning::status(&mut env, &c.pbx);
    let objs = status["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["name"], "m365");
    assert_eq!(objs[0]["sip"], "m365");
    assert_eq!(
        objs[0]["url"],
        "https://ap.example.com/example.com/m365/innovaphone-microsoft365"
    );
    assert_eq!(objs[0]["flags"]["websocket"], true);
    assert_eq!(objs[0]["flags"]["tableusers"], true);
    assert_eq!(objs[0]["flags"]["admin"], true);
    assert_eq!(objs[1]["name"], "microsoft365-api");
    assert_eq!(objs[1]["sip"], "microsoft365-api");
    assert_eq!(
        objs[1]["url"],
        "https://ap.example.com/example.com/m365/innovaphone-microsoft365api"
    );
    assert_eq!(objs[1]["flags"]["hidden"], true);
    assert_eq!(objs[1]["flags"]["websocket"], false);
    assert_eq!(status["can_apply"], true);
    assert!(!status.to_string().contains("\"pwd\""), "{status}");
}

#[test]
fn creates_the_api_object_once_and_updates_it_after() {
    let (mut pbx, mut c, mut env) = start(default_apis());
    provisioning::start(&mut env, &c.pbx).unwrap();
    assert_eq!(last(&mut env).state, "pending");
    pump(&mut pbx, &mut c, &mut env);
    let first = last(&mut env);
    assert_eq!(
        (first.state.as_str(), first.action.as_str()),
        ("done", "created")
    );
    let api: Vec<_> = pbx
        .objects()
        .into_iter()
        .filter(|o| o.h323 == "microsoft365-api")
        .collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].guid, first.guid);
    assert_eq!(
        api[0].url(),
        Some("https://ap.example.com/example.com/m365/innovaphone-microsoft365api")
    );
    assert_eq!(api[0].pseudo["app"]["hidden"], Value::Bool(true));
    assert!(
        pbx.object_password_is("microsoft365-api", "pwd"),
        "password copied"
    );

    // Again: the same object, updated in place.
    provisioning::start(&mut env, &c.pbx).unwrap();
    pump(&mut pbx, &mut c, &mut env);
    let second = last(&mut env);
    assert_eq!(
        (second.state.as_str(), second.action.as_str()),
        ("done", "updated")
    );
    assert_eq!(second.guid, first.guid);
    let api: Vec<_> = pbx
        .objects()
        .into_iter()
        .filter(|o| o.h323 == "microsoft365-api")
        .collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].updates, 0, "nothing to change");
}

#[test]
fn without_the_admin_api_it_says_why_and_sends_nothing() {
    let (_pbx, c, mut env) = start(vec!["PbxApi".into(), "PbxTableUsers".into()]);
    let status = provisioning::status(&mut env, &c.pbx);
    assert_eq!(status["can_apply"], false);
    assert!(status["why_not"].as_str().unwrap().contains("PbxAdminApi"));
    env.sent.clear();
    let err = provisioning::start(&mut env, &c.pbx).unwrap_err();
    assert!(err.contains("PbxAdminApi"), "{err}");
    assert!(env.sent.is_empty());
}

#[test]
fn a_refusal_by_the_pbx_is_reported() {
    let (mut pbx, mut c, mut env) = start(default_apis());
    // A user already holds the name the API object needs.
    pbx.upsert_user(fake_pbx::User::new(
        "0123456789abcdef0123456789abcdef",
        "microsoft365-api",
        "Squatter",
        "master",
    ));
    pump(&mut pbx, &mut c, &mut env);
    provisioning::start(&mut env, &c.pbx).unwrap();
    pump(&mut pbx, &mut c, &mut env);
    let state = last(&mut env);
    assert_eq!(state.state, "failed");
    assert!(state.detail.contains("already in use"), "{}", state.detail);
}

fn http(c: &mut Connector, env: &mut TestEnv, method: &str) -> (u16, Value) {
    let req = microsoft365::event::InboundRequest {
        method: method.into(),
        path: "/provisioning".into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
        peer: "127.0.0.1:9".into(),
    };
    c.handle(env, Event::HttpRequest(99, req));
    let (_, resp) = env.responses.pop().expect("answered");
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, body)
}

#[test]
fn http_shows_the_objects_but_changes_need_an_admin_session() {
    let (mut pbx, mut c, mut env) = start(default_apis());
    let (status, body) = http(&mut c, &mut env, "GET");
    assert_eq!(status, 200);
    assert_eq!(body["objects"][1]["sip"], "microsoft365-api");
    env.sent.clear();
    let (status, body) = http(&mut c, &mut env, "POST");
    assert_eq!(status, 401, "{body}");
    assert!(env.sent.is_empty(), "nothing sent to the PBX");
    pump(&mut pbx, &mut c, &mut env);
    assert!(pbx.objects().iter().all(|o| o.h323 != "microsoft365-api"));
    assert_eq!(http(&mut c, &mut env, "DELETE").0, 405);
}

#[test]
fn a_pbx_that_never_answers_shows_as_failed() {
    let (_pbx, c, mut env) = start(default_apis());
    provisioning::start(&mut env, &c.pbx).unwrap();
    env.now_ms += 5_000;
    assert_eq!(last(&mut env).state, "pending");
    env.now_ms += 30_000;
    let state = last(&mut env);
    assert_eq!(state.state, "failed");
    assert!(
        state.detail.starts_with("no answer from the PBX"),
        "{}",
        state.detail
    );
}
