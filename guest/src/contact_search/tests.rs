//! Contact search driven through `Connector` and `TestEnv`, as the PBX and Graph would.

use serde_json::{Value, json};

use crate::connector::Connector;
use crate::event::{Event, HttpResponse, InitInfo, WsDirection, WsFrame, WsOpen};
use crate::matching::{Matched, USER_PREFIX};
use crate::pbx::login::digest;
use crate::store;
use crate::testenv::TestEnv;

const ENTRA: &str = "e-ada";
const GUID: &str = "guid-ada";

fn started() -> (Connector, TestEnv) {
    let mut env = TestEnv::new();
    env.set_config("graph.url", "https://graph.test");
    env.set_config("graph.login-url", "https://login.test");
    env.set_config("contact-search.tenant", "contoso");
    env.set_config("contact-search.client-id", "cs-app");
    env.set_config("contact-search.client-secret", "s3cr3t+&");
    store::set_json(
        &mut env,
        &format!("{USER_PREFIX}{ENTRA}"),
        &Matched {
            id: ENTRA.into(),
            guid: GUID.into(),
            loc: "master".into(),
            name: "ada".into(),
        },
    );
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    (c, env)
}

/// Answers the client-credentials token request.
fn grant_token(c: &mut Connector, env: &mut TestEnv) {
    let (id, req) = env.requests.last().cloned().unwrap();
    assert!(req.url.ends_with("/contoso/oauth2/v2.0/token"));
    let body = String::from_utf8(req.body).unwrap();
    assert!(body.contains("grant_type=client_credentials"));
    assert!(body.contains("scope=https%3A%2F%2Fgraph.test%2F.default"));
    let ok = HttpResponse::json(
        200,
        &json!({"access_token":"APP-TOKEN","token_type":"Bearer","expires_in":3600}),
    );
    c.handle(env, Event::HttpResponse(id, Ok(ok)));
    assert!(c.contact_search.as_ref().unwrap().ready(env.now_ms));
}

/// A user session through `microsoft365-api` on `ws`, logged in as `guid`.
fn user_session(c: &mut Connector, env: &mut TestEnv, ws: u64, guid: &str, unlicensed: bool) {
    c.handle(
        env,
        Event::WsOpen(WsOpen {
            id: ws,
            direction: WsDirection::Inbound,
            path: "/innovaphone-microsoft365api".into(),
            headers: vec![],
            peer: "10.0.0.9:1".into(),
        }),
    );
    send(c, env, ws, &json!({"mt":"AppChallenge"}));
    let ch = env.sent_json(ws).last().unwrap()["challenge"]
        .as_str()
        .unwrap()
        .to_string();
    let lic = if unlicensed {
        r#","unlicensed":true"#
    } else {
        ""
    };
    let info = format!(
        r#"{{"appobj":"microsoft365-api","appdn":"microsoft365-api","appurl":"https://ap/x/innovaphone-microsoft365api","pbx":"master","cn":"Ada"{lic},"groups":[],"apps":[]}}"#
    );
    let app = "innovaphone-microsoft365api";
    let d = digest(
        app,
        "example.com",
        "ada",
        guid,
        "Ada",
        Some(&info),
        &ch,
        "pwd",
    );
    let login = format!(
        r#"{{"mt":"AppLogin","app":"{app}","domain":"example.com","sip":"ada","guid":"{guid}","dn":"Ada","info":{info},"digest":"{d}","pbxObj":"microsoft365-api"}}"#
    );
    c.handle(env, Event::WsMessage(ws, WsFrame::Text(login)));
    assert_eq!(env.sent_json(ws).last().unwrap()["ok"], true);
    env.clear_sent();
}

fn send(c: &mut Connector, env: &mut TestEnv, ws: u64, msg: &Value) {
    c.handle(env, Event::WsMessage(ws, WsFrame::Text(msg.to_string())));
}

fn search(c: &mut Connector, env: &mut TestEnv, ws: u64, src: &str, q: &str) {
    let msg =
        json!({"api":"com.innovaphone.search","mt":"Search","src":src,"search":q,"type":"contact"});
    send(c, env, ws, &msg);
}

/// The answers to `src` on `ws`: display names of the SearchInfos, and whether one
/// SearchResult closed them (it must be the last).
fn answers(env: &TestEnv, ws: u64, src: &str) -> (Vec<String>, usize) {
    let msgs: Vec<Value> = env
        .sent_json(ws)
        .into_iter()
        .filter(|m| m["src"] == src)
        .collect();
    let results = msgs.iter().filter(|m| m["mt"] == "SearchResult").count();
    if results > 0 {
        assert_eq!(msgs.last().unwrap()["mt"], "SearchResult");
    }
    let names = msgs
        .iter()
        .filter(|m| m["mt"] == "SearchInfo")
        .map(|m| m["dn"].as_str().unwrap().to_string())
        .collect();
    (names, results)
}

fn contacts() -> Value {
    json!({"value": [
        {"displayName":"Garth Fort","givenName":"Garth","surname":"Fort","companyName":"Contoso",
         "businessPhones":["+1 425 555 0100"],"homePhones":[],"mobilePhone":"+1 425 555 0101",
         "emailAddresses":[{"name":"Garth Fort","address":"garth@contoso.com"}]},
        {"displayName":"Gary Jürgens","givenName":"Gary","surname":"Jürgens","companyName":"",
         "businessPhones":[],"homePhones":["+49 (0)7031 12 34"],"mobilePhone":null,
         "emailAddresses":[]}
    ]})
}

/// The last Graph contacts request.
fn contacts_call(env: &TestEnv) -> (u64, crate::event::HttpRequest) {
    env.requests
        .iter()
        .rev()
        .find(|(_, r)| r.url.contains("/contacts?"))
        .cloned()
        .expect("a contacts request")
}

#[test]
fn search_answers_own_contacts_with_dialable_numbers_then_one_result() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "7", "gar");
    let (id, req) = contacts_call(&env);
    assert!(
        req.url
            .starts_with("https://graph.test/v1.0/users/e-ada/contacts?")
    );
    assert_eq!(
        crate::event::header(&req.headers, "authorization"),
        Some("Bearer APP-TOKEN")
    );
    c.handle(
        &mut env,
        Event::HttpResponse(id, Ok(HttpResponse::json(200, &contacts()))),
    );
    assert_eq!(
        answers(&env, 5, "7"),
        (vec!["Garth Fort".into(), "Gary Jürgens".into()], 1)
    );
    let info = &env.sent_json(5)[0];
    assert_eq!(info["api"], "com.innovaphone.search");
    assert_eq!(info["contact"]["telephonenumber"], json!(["+14255550100"]));
    assert_eq!(info["contact"]["mobile"], json!(["+14255550101"]));
    assert_eq!(info["contact"]["email"], json!(["garth@contoso.com"]));
    assert_eq!(info["contact"]["company"], "Contoso");
    let gary = &env.sent_json(5)[1];
    assert_eq!(gary["contact"]["homephone"], json!(["+4970311234"]));
    assert_eq!(gary["contact"]["mobile"], json!([]));
    // The secret never reaches a log.
    assert!(!env.logged("s3cr3t"));
    // `/status` (and the admin page's light) counts what was answered.
    let status = c.contact_search.as_ref().unwrap().status(env.now_ms);
    assert_eq!(status["sign_in"], "ready");
    assert_eq!(status["searches_answered"], 1);
    assert_eq!(status["searches_with_results"], 1);
    assert_eq!(status["last_search_s_ago"], 0);
}

#[test]
fn unlicensed_or_unmatched_users_get_an_empty_result_without_graph() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    let before = env.requests.len();
    user_session(&mut c, &mut env, 5, GUID, true);
    search(&mut c, &mut env, 5, "a", "gar");
    assert_eq!(answers(&env, 5, "a"), (vec![], 1));
    user_session(&mut c, &mut env, 6, "guid-nobody", false);
    search(&mut c, &mut env, 6, "b", "gar");
    assert_eq!(answers(&env, 6, "b"), (vec![], 1));
    // An empty query needs no Graph either.
    user_session(&mut c, &mut env, 7, GUID, false);
    search(&mut c, &mut env, 7, "c", "   ");
    assert_eq!(answers(&env, 7, "c"), (vec![], 1));
    assert_eq!(env.requests.len(), before);
    let status = c.contact_search.as_ref().unwrap().status(env.now_ms);
    assert_eq!(status["searches_answered"], 3);
    assert_eq!(status["searches_with_results"], 0);
}

#[test]
fn throttled_graph_answers_empty_at_once_and_is_not_cached() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "1", "gar");
    let (id, _) = contacts_call(&env);
    let mut throttled = HttpResponse::json(
        429,
        &json!({"error":{"code":"TooManyRequests","message":"Too many requests"}}),
    );
    throttled
        .headers
        .push(crate::event::Header::new("Retry-After", "10"));
    c.handle(&mut env, Event::HttpResponse(id, Ok(throttled)));
    assert_eq!(answers(&env, 5, "1"), (vec![], 1));
    assert!(
        !env.timers
            .values()
            .any(|(_, t)| t.starts_with("contact-search:"))
    );
    // Graph asked for 10 s of quiet: searches meanwhile answer empty without calling it.
    let calls = |env: &TestEnv| {
        env.requests
            .iter()
            .filter(|(_, r)| r.url.contains("/contacts?"))
            .count()
    };
    env.now_ms += 9_000;
    search(&mut c, &mut env, 5, "quiet", "gary");
    assert_eq!(answers(&env, 5, "quiet"), (vec![], 1));
    assert_eq!(calls(&env), 1);
    // Not cached: after the wait the same search asks Graph again and gets the contacts.
    env.now_ms += 1_000;
    search(&mut c, &mut env, 5, "2", "gar");
    assert_eq!(calls(&env), 2);
    let (id2, _) = contacts_call(&env);
    assert_ne!(id, id2);
    c.handle(
        &mut env,
        Event::HttpResponse(id2, Ok(HttpResponse::json(200, &contacts()))),
    );
    assert_eq!(answers(&env, 5, "2").0.len(), 2);
}

#[test]
fn a_silent_graph_is_answered_by_the_deadline() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "9", "gar");
    let (id, req) = contacts_call(&env);
    assert_eq!(req.timeout_ms, 3000);
    assert_eq!(answers(&env, 5, "9"), (vec![], 0));
    let (timer, (after, tag)) = env
        .timers
        .iter()
        .find(|(_, (_, t))| t.starts_with("contact-search:deadline:"))
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    assert_eq!(after, 3000);
    c.handle(&mut env, Event::Timer(timer, tag));
    assert_eq!(answers(&env, 5, "9"), (vec![], 1));
    assert!(env.cancelled_requests.contains(&id));
    // A late answer is ignored: still exactly one SearchResult.
    c.handle(
        &mut env,
        Event::HttpResponse(id, Ok(HttpResponse::json(200, &contacts()))),
    );
    assert_eq!(answers(&env, 5, "9"), (vec![], 1));
}

#[test]
fn identical_searches_share_one_call_and_repeats_come_from_the_cache() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    user_session(&mut c, &mut env, 6, GUID, false);
    search(&mut c, &mut env, 5, "1", "gar");
    search(&mut c, &mut env, 6, "2", "gar");
    let count = |env: &TestEnv| {
        env.requests
            .iter()
            .filter(|(_, r)| r.url.contains("/contacts?"))
            .count()
    };
    assert_eq!(count(&env), 1);
    let (id, _) = contacts_call(&env);
    c.handle(
        &mut env,
        Event::HttpResponse(id, Ok(HttpResponse::json(200, &contacts()))),
    );
    assert_eq!(answers(&env, 5, "1").0.len(), 2);
    assert_eq!(answers(&env, 6, "2").0.len(), 2);
    search(&mut c, &mut env, 5, "3", "gar");
    assert_eq!(answers(&env, 5, "3").0.len(), 2);
    assert_eq!(count(&env), 1);
    // Once the cache time is over, Graph is asked again.
    env.now_ms += 31_000;
    search(&mut c, &mut env, 5, "4", "gar");
    assert_eq!(count(&env), 2);
}

#[test]
fn a_search_before_the_token_waits_for_it() {
    let (mut c, mut env) = started();
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "1", "fort");
    assert!(
        !env.requests
            .iter()
            .any(|(_, r)| r.url.contains("/contacts?"))
    );
    grant_token(&mut c, &mut env);
    let (id, _) = contacts_call(&env);
    c.handle(
        &mut env,
        Event::HttpResponse(id, Ok(HttpResponse::json(200, &contacts()))),
    );
    assert_eq!(answers(&env, 5, "1"), (vec!["Garth Fort".into()], 1));
}

#[test]
fn pbx_asks_about_the_api_app_and_a_pbx_connection_cannot_search() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    send(
        &mut c,
        &mut env,
        5,
        &json!({"mt":"AppInfo","app":"innovaphone-microsoft365api"}),
    );
    let r = env.sent_json(5).last().cloned().unwrap();
    assert_eq!(r["mt"], "AppInfoResult");
    assert_eq!(r["info"]["hidden"], true);
    assert!(r["info"]["apis"]["com.innovaphone.search"].is_object());
    // A connection that logged in without `microsoft365-api` gets no answer and no Graph call.
    c.pbx_events.clear();
    let before = env.requests.len();
    c.handle(
        &mut env,
        Event::WsOpen(WsOpen {
            id: 8,
            direction: WsDirection::Inbound,
            path: "/".into(),
            headers: vec![],
            peer: "p".into(),
        }),
    );
    search(&mut c, &mut env, 8, "x", "gar");
    assert!(env.sent_json(8).iter().all(|m| m["mt"] != "SearchResult"));
    assert_eq!(env.requests.len(), before);
}

#[test]
fn not_configured_means_no_token_and_partial_settings_are_reported() {
    let mut env = TestEnv::new();
    env.set_config("contact-search.tenant", "contoso");
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    assert!(c.contact_search.is_none());
    assert!(env.requests.is_empty());
    assert!(env.logged("contact-search.client-secret"));
}

#[test]
fn a_failed_sign_in_answers_waiting_and_new_searches_at_once() {
    let (mut c, mut env) = started();
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "1", "gar");
    let (id, _) = env.requests.last().cloned().unwrap();
    let refused = HttpResponse::json(
        401,
        &json!({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}),
    );
    c.handle(&mut env, Event::HttpResponse(id, Ok(refused)));
    assert_eq!(answers(&env, 5, "1"), (vec![], 1));
    search(&mut c, &mut env, 5, "2", "gar");
    assert_eq!(answers(&env, 5, "2"), (vec![], 1));
    assert!(
        !env.requests
            .iter()
            .any(|(_, r)| r.url.contains("/contacts?"))
    );
    assert!(!env.logged("s3cr3t"));
}

#[test]
fn the_directory_is_searched_too_when_configured() {
    let (mut c, mut env) = started();
    env.set_config("contact-search.directory", "true");
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "1", "gar");
    let (dir_id, dir) = env
        .requests
        .iter()
        .find(|(_, r)| r.url.contains("/users?$search="))
        .cloned()
        .expect("a directory search");
    assert_eq!(
        crate::event::header(&dir.headers, "consistencylevel"),
        Some("eventual")
    );
    let (id, _) = contacts_call(&env);
    let users = json!({"value": [
        {"id":"u1","displayName":"Garth Fort","mail":"garth@contoso.com","businessPhones":["+1 425 555 0100"],"mobilePhone":"+1 425 555 0101"},
        {"id":"u2","displayName":"Gareth Colleague","mail":"gareth@contoso.com","businessPhones":["+1 425 555 0199"]}
    ]});
    c.handle(
        &mut env,
        Event::HttpResponse(dir_id, Ok(HttpResponse::json(200, &users))),
    );
    // Not answered before both calls are in.
    assert_eq!(answers(&env, 5, "1"), (vec![], 0));
    c.handle(
        &mut env,
        Event::HttpResponse(id, Ok(HttpResponse::json(200, &contacts()))),
    );
    // Garth is in both: shown once.
    assert_eq!(
        answers(&env, 5, "1"),
        (
            vec![
                "Gareth Colleague".into(),
                "Garth Fort".into(),
                "Gary Jürgens".into()
            ],
            1
        )
    );
}

#[test]
fn searches_in_flight_are_answered_when_the_settings_are_read_again() {
    let (mut c, mut env) = started();
    grant_token(&mut c, &mut env);
    user_session(&mut c, &mut env, 5, GUID, false);
    search(&mut c, &mut env, 5, "1", "gar");
    let (id, _) = contacts_call(&env);
    c.reconfigure(&mut env);
    assert_eq!(answers(&env, 5, "1"), (vec![], 1));
    assert!(env.cancelled_requests.contains(&id));
    // The new configuration signs in afresh.
    assert!(
        env.requests
            .last()
            .unwrap()
            .1
            .url
            .ends_with("/oauth2/v2.0/token")
    );
}
