//! Items 11, 27 (budget part in subscriptions.rs) and 31: throttling and $batch.

use fake_m365::{Config, Fault, FaultKind, Handled};
use serde_json::{Value, json};

use crate::common::*;

#[test]
fn injected_429_and_503_carry_retry_after() {
    let mut t = setup();
    let tok = t.svc_token();
    t.fake.add_fault(Fault {
        path_contains: Some("/users".into()),
        method: None,
        fault: FaultKind::Throttle { retry_after_s: 7 },
        remaining: Some(1),
    });
    let r = t.get(&tok, "/users");
    assert_eq!(r.status, 429);
    assert_eq!(r.get_header("Retry-After"), Some("7"));
    assert_eq!(r.body_json()["error"]["code"], "TooManyRequests");
    assert_eq!(t.get(&tok, "/users").status, 200, "fault used up");
    t.fake.add_fault(Fault {
        path_contains: None,
        method: Some("GET".into()),
        fault: FaultKind::Unavailable {
            retry_after_s: Some(3),
        },
        remaining: None,
    });
    let r = t.get(&tok, "/me");
    assert_eq!((r.status, r.get_header("Retry-After")), (503, Some("3")));
    t.fake.clear_faults();
    // Faults on the token endpoint too, and timeouts (no answer).
    t.fake.add_fault(Fault {
        path_contains: Some("/oauth2/".into()),
        method: None,
        fault: FaultKind::Timeout,
        remaining: Some(1),
    });
    let tenant = t.tenant();
    let h = t.fake.handle(
        fake_m365::Request::new("POST", &format!("/{tenant}/oauth2/v2.0/token"))
            .header("Content-Type", "application/x-www-form-urlencoded"),
    );
    assert_eq!(h, Handled::Hang);
}

#[test]
fn presence_budget_per_app_throttles() {
    let mut cfg = Config::default();
    cfg.presence_limit_per_30s = 5;
    let mut t = setup_with(cfg);
    let app_tok = t.app_token();
    let a = t.alice.id.clone();
    for _ in 0..5 {
        assert_eq!(t.get(&app_tok, &format!("/users/{a}/presence")).status, 200);
    }
    let r = t.post(
        &app_tok,
        "/communications/getPresencesByUserId",
        json!({"ids": [a]}),
    );
    assert_eq!(r.status, 429);
    let ra: i64 = r.get_header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=30).contains(&ra));
    // Another app has its own budget.
    let svc = t.svc_token();
    assert_eq!(t.get(&svc, &format!("/users/{a}/presence")).status, 200);
    t.clock.advance(30_000);
    assert_eq!(t.get(&app_tok, &format!("/users/{a}/presence")).status, 200);
}

fn batch(t: &mut T, tok: &str, reqs: Value) -> fake_m365::Response {
    t.post(tok, "/$batch", json!({ "requests": reqs }))
}

#[test]
fn batch_of_21_is_400() {
    let mut t = setup();
    let tok = t.svc_token();
    let reqs: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    let r = batch(&mut t, &tok, json!(reqs));
    assert_eq!(r.status, 400);
    let r = batch(&mut t, &tok, json!(reqs[..20].to_vec()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["responses"].as_array().unwrap().len(), 20);
    // Duplicate ids (case-insensitive), absolute urls, body without Content-Type: whole batch 400.
    assert_eq!(batch(&mut t, &tok, json!([{"id": "a", "method": "GET", "url": "/me"}, {"id": "A", "method": "GET", "url": "/me"}])).status, 400);
    assert_eq!(
        batch(
            &mut t,
            &tok,
            json!([{"id": "a", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"}])
        )
        .status,
        400
    );
    assert_eq!(batch(&mut t, &tok, json!([{"id": "a", "method": "POST", "url": "/communications/getPresencesByUserId", "body": {"ids": []}}])).status, 400);
}

#[test]
fn batch_depends_on_424_and_inner_429() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.fake.add_fault(Fault {
        path_contains: Some("/users/".into()),
        method: None,
        fault: FaultKind::Throttle { retry_after_s: 10 },
        remaining: Some(1),
    });
    let reqs = json!([
        {"id": "1", "method": "GET", "url": format!("/users/{a}/presence")},
        {"id": "2", "method": "POST", "url": "/communications/getPresencesByUserId", "headers": {"Content-Type": "application/json"}, "body": {"ids": [a]}},
        {"id": "3", "dependsOn": ["1"], "method": "GET", "url": "/me"},
        {"id": "4", "dependsOn": ["2"], "method": "GET", "url": "/users?$search=\"displayName:ad\"&$count=true", "headers": {"ConsistencyLevel": "eventual"}},
    ]);
    let r = batch(&mut t, &tok, reqs);
    assert_eq!(r.status, 200);
    let resp = r.body_json()["responses"].as_array().unwrap().clone();
    let by = |id: &str| resp.iter().find(|x| x["id"] == id).unwrap().clone();
    assert_eq!(by("1")["status"], 429);
    assert_eq!(by("1")["headers"]["Retry-After"], "10");
    assert_eq!(by("2")["status"], 200);
    assert_eq!(by("3")["status"], 424);
    assert_eq!(by("4")["status"], 200);
    assert!(
        by("4")["body"]["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["displayName"] == "Adele Vance")
    );
    // Responses come in any order: over many batches the order differs from the request order.
    let reqs: Vec<Value> = (0..10)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    let orders: Vec<Vec<String>> = (0..5)
        .map(|_| {
            batch(&mut t, &tok, json!(reqs)).body_json()["responses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert!(
        orders
            .iter()
            .any(|o| o.iter().enumerate().any(|(i, id)| *id != i.to_string()))
    );
}

#[test]
fn outlook_and_tenant_budgets_throttle() {
    let mut cfg = Config::default();
    cfg.outlook_limit_per_10min = 2;
    cfg.subscription_tenant_writes_per_20s = 2;
    let mut t = setup_with(cfg);
    let tok = t.app_token();
    let (a, b) = (t.alice.id.clone(), t.bob.id.clone());
    assert_eq!(t.get(&tok, &format!("/users/{a}/contacts")).status, 200);
    assert_eq!(t.get(&tok, &format!("/users/{a}/events")).status, 200);
    assert_eq!(t.get(&tok, &format!("/users/{a}/contacts")).status, 429);
    assert_eq!(
        t.get(&tok, &format!("/users/{b}/contacts")).status,
        200,
        "per mailbox"
    );
    // Subscription writes are also limited per tenant across apps.
    let svc = t.svc_token();
    assert_eq!(
        t.send(&tok, "DELETE", "/subscriptions/x", json!(null))
            .unwrap_response()
            .status,
        404
    );
    assert_eq!(
        t.send(&svc, "DELETE", "/subscriptions/x", json!(null))
            .unwrap_response()
            .status,
        404
    );
    assert_eq!(
        t.send(&svc, "DELETE", "/subscriptions/x", json!(null))
            .unwrap_response()
            .status,
        429
    );
}
