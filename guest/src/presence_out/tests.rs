//! Unit tests of F2 with [`TestEnv`]: the plan per user, batching, coalescing, ordering,
//! throttling, renewal and the echo record.

use serde_json::{Value, json};

use super::*;
use crate::event::HttpRequest;
use crate::pbx::PresenceItem;
use crate::testenv::TestEnv;

fn env() -> TestEnv {
    let mut env = TestEnv::new();
    env.set_config("presence-out.tenant", "contoso.onmicrosoft.com");
    env.set_config("presence-out.client-id", "app-1");
    env.set_config("presence-out.client-secret", "s3cret+/=");
    env.set_config("graph.url", "https://graph.test");
    env
}

fn config(env: &mut TestEnv) -> Config {
    let s = Settings::read(env);
    Config::read(env, &s).expect("configured")
}

/// A started feature with a token and `n` monitored users `u0..`, PBX guids `g0..`.
fn started(env: &mut TestEnv, n: usize) -> (PresenceOut, Tokens) {
    let mut tokens = Tokens::new();
    let mut events = Vec::new();
    let pbx = Pbx::default();
    let s = Settings::read(env);
    let mut po =
        PresenceOut::configure(env, &s, &mut tokens, &pbx, &mut events).expect("configured");
    let (id, req) = env.requests.last().cloned().unwrap();
    assert!(
        req.url
            .ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
    let body = String::from_utf8(req.body).unwrap();
    assert!(body.contains("grant_type=client_credentials"), "{body}");
    assert!(body.contains("client_secret=s3cret%2B%2F%3D"), "{body}");
    let ok = HttpResponse::json(200, &json!({"access_token":"APP","expires_in":3600}));
    let ev = tokens.on_response(env, id, &Ok(ok)).unwrap();
    assert!(matches!(&ev[0], TokenEvent::Ready { account } if account == ACCOUNT));
    for i in 0..n {
        let m = Matched {
            id: format!("u{i}"),
            guid: format!("g{i}"),
            loc: "master".into(),
            name: format!("user{i}"),
        };
        po.users.insert(m.guid.clone(), m);
        po.monitors.insert(
            format!("g{i}"),
            Monitor {
                ws: 1,
                up: Some(true),
            },
        );
    }
    env.requests.clear();
    (po, tokens)
}

fn item(contact: &str, activity: &str) -> PresenceItem {
    PresenceItem {
        contact: contact.into(),
        status: "open".into(),
        activity: activity.into(),
        note: String::new(),
    }
}

fn presence(guid: &str, items: Vec<PresenceItem>) -> PbxEvent {
    PbxEvent::Presence {
        pbx: "master".into(),
        guid: guid.into(),
        items,
    }
}

/// The PBX shows `activity` on the user's `tel:` item.
fn pbx_says(env: &mut TestEnv, po: &mut PresenceOut, t: &Tokens, guid: &str, activity: &str) {
    let mut pbx = Pbx::default();
    po.on_pbx(
        env,
        &mut pbx,
        t,
        &presence(guid, vec![item("tel:", activity)]),
    );
}

/// Fires every due flush timer.
fn fire_flush(env: &mut TestEnv, po: &mut PresenceOut, t: &Tokens) {
    let flush: Vec<(u64, String)> = env
        .timers
        .iter()
        .filter(|(_, (_, tag))| tag == "f2:flush")
        .map(|(id, (_, tag))| (*id, tag.clone()))
        .collect();
    for (id, tag) in flush {
        env.timers.remove(&id);
        let mut pbx = Pbx::default();
        po.on_timer(env, &mut pbx, t, id, &tag);
    }
}

fn batches(env: &TestEnv) -> Vec<(u64, Vec<Value>)> {
    env.requests
        .iter()
        .filter(|(_, r)| r.url.ends_with("/v1.0/$batch"))
        .map(|(id, r)| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            (*id, v["requests"].as_array().unwrap().clone())
        })
        .collect()
}

/// Answers a batch request with `status` for every request in it.
fn answer(
    env: &mut TestEnv,
    po: &mut PresenceOut,
    t: &Tokens,
    id: u64,
    reqs: &[Value],
    status: u16,
) {
    let responses: Vec<Value> = reqs
        .iter()
        .map(|r| json!({"id": r["id"], "status": status, "body": {}}))
        .collect();
    let resp = HttpResponse::json(200, &json!({ "responses": responses }));
    assert!(po.on_response(env, t, id, &Ok(resp)));
}

fn urls(reqs: &[Value]) -> Vec<String> {
    reqs.iter()
        .map(|r| r["url"].as_str().unwrap().to_string())
        .collect()
}

fn applied(env: &mut TestEnv, user: &str) -> Applied {
    store::get_json(env, &applied_key(user)).unwrap_or_default()
}

#[test]
fn not_configured_without_all_three_settings() {
    let mut partial = TestEnv::new();
    partial.set_config("presence-out.client-id", "app-1");
    let s = Settings::read(&mut partial);
    assert!(Config::read(&mut partial, &s).is_none());
    assert!(partial.logged("presence-out.client-secret"));
    let mut env = env();
    let cfg = config(&mut env);
    assert!(!cfg.dnd_during_calls);
    assert_eq!(cfg.renew_ms, 300_000);
    assert_eq!(cfg.scope, "https://graph.test/.default");
    // The secret is never logged, even in debug output of the configuration.
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(!env.logs.iter().any(|(_, _, m)| m.contains("s3cret")));
}

#[test]
fn plan_follows_the_table_and_only_changes_what_differs() {
    let mut env = env();
    let cfg = config(&mut env);
    let none = Applied::default();
    assert_eq!(
        plan(&cfg, Some("on-the-phone"), &none, 0),
        vec![Op::SetCall]
    );
    assert_eq!(
        plan(&cfg, Some("away"), &none, 0),
        vec![Op::SetPreferred(("Away", "Away"))]
    );
    // Available with nothing set by us: nothing to do (the user's own Teams choice stays).
    assert_eq!(plan(&cfg, Some(""), &none, 0), vec![]);
    assert_eq!(plan(&cfg, Some("juggling"), &none, 0), vec![]);
    let away = none.after(Op::SetPreferred(("Away", "Away")), 0);
    assert_eq!(plan(&cfg, Some("away"), &away, 0), vec![]);
    assert_eq!(plan(&cfg, Some(""), &away, 0), vec![Op::ClearPreferred]);
    // A call while away: the session, and the preference goes so Teams shows the call.
    assert_eq!(
        plan(&cfg, Some("on-the-phone"), &away, 0),
        vec![Op::SetCall, Op::ClearPreferred]
    );
    let call = none.after(Op::SetCall, 1_000);
    assert_eq!(plan(&cfg, Some("on-the-phone"), &call, 2_000), vec![]);
    // Renewal once the rhythm is due.
    assert_eq!(
        plan(&cfg, Some("on-the-phone"), &call, 1_000 + 300_000),
        vec![Op::SetCall]
    );
    // The call ends and the user is busy: clear the session first, then the preference.
    assert_eq!(
        plan(&cfg, Some("busy"), &call, 5_000),
        vec![Op::ClearCall, Op::SetPreferred(("Busy", "Busy"))]
    );
    // Monitor lost: the call is cleared, a preference stays.
    assert_eq!(plan(&cfg, None, &call, 5_000), vec![Op::ClearCall]);
    assert_eq!(plan(&cfg, None, &away, 5_000), vec![]);
}

#[test]
fn dnd_during_calls_option_sets_and_clears_do_not_disturb() {
    let mut env = env();
    env.set_config("presence-out.dnd-during-calls", "true");
    let cfg = config(&mut env);
    assert!(cfg.dnd_during_calls);
    let none = Applied::default();
    assert_eq!(
        plan(&cfg, Some("on-the-phone"), &none, 0),
        vec![
            Op::SetCall,
            Op::SetPreferred(("DoNotDisturb", "DoNotDisturb"))
        ]
    );
    let during = none
        .after(Op::SetCall, 0)
        .after(Op::SetPreferred(DO_NOT_DISTURB), 0);
    assert_eq!(
        plan(&cfg, Some(""), &during, 10),
        vec![Op::ClearCall, Op::ClearPreferred]
    );
}

#[test]
fn call_start_and_end_reach_teams_through_a_batch() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    assert!(batches(&env).is_empty(), "changes are collected first");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    assert_eq!(b.len(), 1);
    let (id, reqs) = &b[0];
    assert_eq!(urls(reqs), vec!["/users/u0/presence/setPresence"]);
    assert_eq!(reqs[0]["body"]["sessionId"], "app-1");
    let (_, req): &(u64, HttpRequest) = &env.requests[0];
    assert!(crate::event::header(&req.headers, "authorization") == Some("Bearer APP"));
    // Our own state is announced before Graph can echo it.
    assert!(echo::is_own(&mut env, "u0", "Busy", "InACall"));
    answer(&mut env, &mut po, &t, *id, reqs, 200);
    assert!(applied(&mut env, "u0").call_at_ms.is_some());
    assert_eq!(po.status(&t)["calls"], 1);
    env.requests.clear();
    pbx_says(&mut env, &mut po, &t, "g0", "");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    assert_eq!(urls(&b[0].1), vec!["/users/u0/presence/clearPresence"]);
    answer(&mut env, &mut po, &t, b[0].0, &b[0].1, 200);
    assert_eq!(applied(&mut env, "u0"), Applied::default());
    assert!(env.kv_keys("audit/").len() >= 2, "writes are audited");
}

#[test]
fn the_connectors_own_items_never_travel_back_to_teams() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    let mut pbx = Pbx::default();
    // F1 wrote Teams' DND into the PBX (teams:), the user's phone says nothing: no write.
    let ev = presence(
        "g0",
        vec![
            item("teams:", "dnd"),
            item("calendar:", "meeting"),
            item("im:", ""),
            item("tel:", ""),
        ],
    );
    po.on_pbx(&mut env, &mut pbx, &t, &ev);
    fire_flush(&mut env, &mut po, &t);
    assert!(batches(&env).is_empty());
    // Flapping of our own item changes nothing either.
    for a in ["on-the-phone", "away", "", "busy"] {
        let ev = presence("g0", vec![item("teams:", a), item("tel:", "")]);
        po.on_pbx(&mut env, &mut pbx, &t, &ev);
        fire_flush(&mut env, &mut po, &t);
    }
    assert!(batches(&env).is_empty());
}

#[test]
fn a_burst_is_coalesced_to_final_states_twenty_per_batch_in_order() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 100);
    // Every user flaps through five states; only the last one counts.
    for round in ["away", "on-the-phone", "dnd", "", "busy"] {
        for i in 0..100 {
            pbx_says(&mut env, &mut po, &t, &format!("g{i}"), round);
        }
    }
    fire_flush(&mut env, &mut po, &t);
    let mut seen_users = std::collections::BTreeSet::new();
    let mut total = 0;
    loop {
        let b = batches(&env);
        if b.is_empty() {
            break;
        }
        env.requests.clear();
        assert!(b.len() <= MAX_IN_FLIGHT);
        for (id, reqs) in b {
            assert!(reqs.len() <= batch::MAX_REQUESTS);
            for r in &reqs {
                assert_eq!(r["body"]["availability"], "Busy", "{r}");
                assert!(seen_users.insert(r["url"].as_str().unwrap().to_string()));
            }
            total += reqs.len();
            answer(&mut env, &mut po, &t, id, &reqs, 200);
        }
    }
    assert_eq!(total, 100, "one write per user: its final state");
    assert_eq!(po.stats.batches, 5, "20 per batch");
}

#[test]
fn two_writes_of_one_user_are_ordered_with_depends_on_and_never_overlap() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    answer(&mut env, &mut po, &t, b[0].0, &b[0].1, 200);
    env.requests.clear();
    pbx_says(&mut env, &mut po, &t, "g0", "away");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    let reqs = &b[0].1;
    assert_eq!(
        urls(reqs),
        vec![
            "/users/u0/presence/clearPresence",
            "/users/u0/presence/setUserPreferredPresence"
        ]
    );
    assert_eq!(reqs[1]["dependsOn"], json!([reqs[0]["id"]]));
    // While that batch is in flight the user changes again: nothing overlaps it.
    env.requests.clear();
    pbx_says(&mut env, &mut po, &t, "g0", "dnd");
    fire_flush(&mut env, &mut po, &t);
    assert!(batches(&env).is_empty());
    answer(&mut env, &mut po, &t, b[0].0, reqs, 200);
    let b = batches(&env);
    assert_eq!(
        urls(&b[0].1),
        vec!["/users/u0/presence/setUserPreferredPresence"]
    );
    assert_eq!(b[0].1[0]["body"]["availability"], "DoNotDisturb");
}

#[test]
fn throttled_writes_wait_for_retry_after_and_are_sent_again() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 2);
    pbx_says(&mut env, &mut po, &t, "g0", "away");
    pbx_says(&mut env, &mut po, &t, "g1", "away");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    let reqs = &b[0].1;
    let responses = json!({"responses": [
        {"id": reqs[0]["id"], "status": 200, "body": {}},
        {"id": reqs[1]["id"], "status": 429, "headers": {"Retry-After": "10"},
         "body": {"error": {"code": "TooManyRequests", "message": "slow down"}}},
    ]});
    env.requests.clear();
    po.on_response(
        &mut env,
        &t,
        b[0].0,
        &Ok(HttpResponse::json(200, &responses)),
    );
    assert!(batches(&env).is_empty(), "nothing before Retry-After");
    let (_, (after, _)) = env
        .timers
        .iter()
        .find(|(_, (_, tag))| tag == "f2:flush")
        .unwrap();
    assert_eq!(*after, 10_000);
    env.now_ms += 10_000;
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    assert_eq!(b[0].1.len(), 1);
    assert_eq!(po.status(&t)["throttled"], 1);
}

#[test]
fn the_request_budget_is_never_exceeded() {
    let mut env = env();
    env.set_config("presence-out.budget-per-30s", "30");
    let (mut po, t) = started(&mut env, 50);
    for i in 0..50 {
        pbx_says(&mut env, &mut po, &t, &format!("g{i}"), "away");
    }
    fire_flush(&mut env, &mut po, &t);
    let sent: usize = batches(&env).iter().map(|(_, r)| r.len()).sum();
    assert_eq!(sent, 30);
    for (id, reqs) in batches(&env) {
        answer(&mut env, &mut po, &t, id, &reqs, 200);
    }
    env.requests.clear();
    fire_flush(&mut env, &mut po, &t);
    assert!(batches(&env).is_empty(), "the window is used up");
    env.now_ms += 30_000;
    fire_flush(&mut env, &mut po, &t);
    let sent: usize = batches(&env).iter().map(|(_, r)| r.len()).sum();
    assert_eq!(sent, 20);
}

#[test]
fn a_long_call_is_renewed_and_a_call_nobody_confirms_is_cleared() {
    let mut env = env();
    env.set_config("presence-out.call-renew-s", "2");
    let (mut po, t) = started(&mut env, 2);
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    pbx_says(&mut env, &mut po, &t, "g1", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    answer(&mut env, &mut po, &t, b[0].0, &b[0].1, 200);
    // g1's PBX connection is gone and no monitor replaced it.
    po.monitors.remove("g1");
    let renew = |env: &mut TestEnv, po: &mut PresenceOut| {
        let (id, tag) = env
            .timers
            .iter()
            .find(|(_, (_, tag))| tag == "f2:renew")
            .map(|(id, (_, tag))| (*id, tag.clone()))
            .unwrap();
        env.timers.remove(&id);
        po.on_timer(env, &mut Pbx::default(), &t, id, &tag);
    };
    env.requests.clear();
    env.now_ms += 1_000;
    renew(&mut env, &mut po);
    assert!(batches(&env).is_empty(), "not due yet");
    env.now_ms += 1_000;
    renew(&mut env, &mut po);
    let b = batches(&env);
    assert_eq!(
        urls(&b[0].1),
        vec![
            "/users/u0/presence/setPresence",
            "/users/u1/presence/clearPresence"
        ]
    );
}

#[test]
fn a_failed_batch_loses_nothing() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    pbx_says(&mut env, &mut po, &t, "g0", "dnd");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    env.requests.clear();
    let err = Err(HttpError::Timeout);
    assert!(po.on_response(&mut env, &t, b[0].0, &err));
    assert!(env.logged("batch failed"));
    env.now_ms += 120_000;
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    assert_eq!(
        urls(&b[0].1),
        vec!["/users/u0/presence/setUserPreferredPresence"]
    );
}

#[test]
fn missing_visibility_is_reported_per_user() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 2);
    let ev = PbxEvent::PresenceMonitor {
        pbx: "master".into(),
        guid: "g1".into(),
        up: false,
    };
    po.on_pbx(&mut env, &mut Pbx::default(), &t, &ev);
    let s = po.status(&t);
    assert_eq!(s["not_visible"][0]["name"], "user1");
    assert!(env.logged("not visible to the App object"));
}

#[test]
fn on_the_phone_of_our_own_alien_call_is_not_a_pbx_call() {
    let mut env = env();
    env.set_config("presence-out.alien-calls", "true");
    let (mut po, t) = started(&mut env, 1);
    // The connector holds an alien call for g0 (a Teams call): the PBX shows on-the-phone.
    alien::put(
        &mut env,
        "g0",
        Some(&alien::AlienCall {
            ws: 1,
            target: Some("PbxApi.0".into()),
            id: Some(7),
            removing: false,
        }),
    );
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    assert!(
        batches(&env).is_empty(),
        "our alien call went back to Teams"
    );
    // Without it, on-the-phone is a PBX call.
    alien::put(&mut env, "g0", None);
    pbx_says(&mut env, &mut po, &t, "g0", "");
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    assert_eq!(
        urls(&batches(&env)[0].1),
        vec!["/users/u0/presence/setPresence"]
    );
}

#[test]
fn unknown_pbx_activities_change_nothing_and_are_logged_once() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    pbx_says(&mut env, &mut po, &t, "g0", "away");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    answer(&mut env, &mut po, &t, b[0].0, &b[0].1, 200);
    env.requests.clear();
    for _ in 0..3 {
        pbx_says(&mut env, &mut po, &t, "g0", "juggling");
        pbx_says(&mut env, &mut po, &t, "g0", "away");
    }
    pbx_says(&mut env, &mut po, &t, "g0", "juggling");
    fire_flush(&mut env, &mut po, &t);
    assert!(batches(&env).is_empty());
    let logged = env
        .logs
        .iter()
        .filter(|(_, _, m)| m.contains("`juggling`"))
        .count();
    assert_eq!(logged, 1);
}

#[test]
fn a_user_needing_more_than_the_budget_left_waits_for_the_window() {
    let mut env = env();
    env.set_config("presence-out.budget-per-30s", "2");
    let (mut po, t) = started(&mut env, 2);
    pbx_says(&mut env, &mut po, &t, "g0", "away");
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    answer(&mut env, &mut po, &t, b[0].0, &b[0].1, 200);
    env.requests.clear();
    // One request left in the window, but g0 needs two (a call replacing a preference).
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    assert!(batches(&env).is_empty());
    let (_, (after, _)) = env
        .timers
        .iter()
        .find(|(_, (_, tag))| tag == "f2:flush")
        .expect("a flush when the window frees up");
    assert_eq!(*after, 30_000);
    env.now_ms += 30_000;
    fire_flush(&mut env, &mut po, &t);
    assert_eq!(
        urls(&batches(&env)[0].1),
        vec![
            "/users/u0/presence/setPresence",
            "/users/u0/presence/clearUserPreferredPresence"
        ]
    );
}

#[test]
fn writes_in_flight_at_a_restart_are_assumed_done_and_checked_again() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 1);
    pbx_says(&mut env, &mut po, &t, "g0", "on-the-phone");
    fire_flush(&mut env, &mut po, &t);
    assert_eq!(batches(&env).len(), 1);
    // The guest restarts before the answer: the new instance believes in the session, so the
    // end of the call clears it instead of leaving it to expire.
    let (mut again, t2) = started(&mut env, 1);
    assert!(applied(&mut env, "u0").call_at_ms.is_some());
    assert!(again.dirty.contains("u0"));
    pbx_says(&mut env, &mut again, &t2, "g0", "");
    fire_flush(&mut env, &mut again, &t2);
    assert_eq!(
        urls(&batches(&env)[0].1),
        vec!["/users/u0/presence/clearPresence"]
    );
}

#[test]
fn refused_writes_are_reported_once_audited_and_not_retried() {
    let mut env = env();
    let (mut po, t) = started(&mut env, 3);
    for i in 0..3 {
        pbx_says(&mut env, &mut po, &t, &format!("g{i}"), "dnd");
    }
    fire_flush(&mut env, &mut po, &t);
    let b = batches(&env);
    env.requests.clear();
    let responses: Vec<Value> = b[0]
        .1
        .iter()
        .map(|r| json!({"id": r["id"], "status": 403, "body": {"error": {"code": "Forbidden", "message": "Insufficient privileges"}}}))
        .collect();
    let resp = HttpResponse::json(200, &json!({ "responses": responses }));
    po.on_response(&mut env, &t, b[0].0, &Ok(resp));
    assert_eq!(po.status(&t)["refused"], 3);
    let warnings = env
        .logs
        .iter()
        .filter(|(_, _, m)| m.contains("refused"))
        .count();
    assert_eq!(warnings, 1);
    let audit = crate::audit::recent(&mut env, 10, None);
    assert!(
        audit.iter().any(|e| e.result.starts_with("refused: 403")),
        "{audit:?}"
    );
    env.now_ms += 60_000;
    fire_flush(&mut env, &mut po, &t);
    assert!(
        batches(&env).is_empty(),
        "a refusal is not retried in a loop"
    );
}
