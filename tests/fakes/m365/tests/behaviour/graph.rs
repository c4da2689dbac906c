//! Items 7-10: bearer validation, error envelope, users listing and delta.

use fake_m365::{Request, UserSpec};
use serde_json::json;

use crate::common::*;

#[test]
fn bearer_missing_or_expired_is_401() {
    let mut t = setup();
    let r = t
        .fake
        .handle(Request::new("GET", "/v1.0/users"))
        .unwrap_response();
    assert_eq!(r.status, 401);
    assert_eq!(r.body_json()["error"]["code"], "InvalidAuthenticationToken");
    let r = t.get("garbage.token.here", "/users");
    assert_eq!(r.status, 401);
    let tok = t.svc_token();
    t.clock.advance(3_600_000);
    assert_eq!(t.get(&tok, "/users").status, 401);
}

#[test]
fn wrong_permission_is_403_by_token_kind() {
    let mut t = setup();
    // Delegated token without User.Read.All: directory 403 Authorization_RequestDenied.
    let tok = t.fake.issue_token(
        &t.app.clone(),
        Some("pbx-svc@contoso.com"),
        &["Presence.Read.All"],
    );
    let r = t.get(&tok, "/users");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body_json()["error"]["code"],
        "Authorization_RequestDenied"
    );
    // Application token with roles but not the presence role: Forbidden.
    let tok = t
        .fake
        .issue_token(&t.daemon.clone(), None, &["User.Read.All"]);
    let uid = t.alice.id.clone();
    let r = t.get(&tok, &format!("/users/{uid}/presence"));
    assert_eq!(r.status, 403);
    assert_eq!(r.body_json()["error"]["code"], "Forbidden");
    // The delegated scope does not count for an app token and vice versa.
    let tok = t
        .fake
        .issue_token(&t.daemon.clone(), None, &["Presence.Read"]);
    assert_eq!(t.get(&tok, &format!("/users/{uid}/presence")).status, 403);
    let tok = t.app_token();
    assert_eq!(t.get(&tok, &format!("/users/{uid}/presence")).status, 200);
}

#[test]
fn errors_use_graph_envelope_and_request_ids() {
    let mut t = setup();
    let tok = t.svc_token();
    let r = t
        .fake
        .handle(
            Request::new("GET", "/v1.0/users/00000000-0000-0000-0000-000000000000")
                .bearer(&tok)
                .header("client-request-id", "my-crid"),
        )
        .unwrap_response();
    assert_eq!(r.status, 404);
    let e = &r.body_json()["error"];
    assert!(e["code"].is_string() && e["message"].is_string());
    assert_eq!(e["innerError"]["client-request-id"], "my-crid");
    assert!(e["innerError"]["request-id"].is_string() && e["innerError"]["date"].is_string());
    assert_eq!(r.get_header("client-request-id"), Some("my-crid"));
    assert!(r.get_header("request-id").is_some());
    let ok = t.get(&tok, "/users");
    assert!(ok.get_header("request-id").is_some());
}

#[test]
fn users_paging_select_top_count_search() {
    let mut t = setup();
    t.fake.populate(250, 3);
    let tok = t.svc_token();
    // Default page 100 and default property set.
    let r = t.get(&tok, "/users");
    let b = r.body_json();
    assert_eq!(b["value"].as_array().unwrap().len(), 100);
    assert!(
        b["value"][0].get("assignedPlans").is_none()
            && b["value"][0].get("businessPhones").is_some()
    );
    // Follow nextLink verbatim until it is absent.
    let mut next = b["@odata.nextLink"].as_str().map(str::to_string);
    let mut total = 100;
    while let Some(n) = next {
        let path = n.split("/v1.0").nth(1).unwrap().to_string();
        let b = t.get(&tok, &path).body_json();
        total += b["value"].as_array().unwrap().len();
        next = b["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(total, 254);
    // $select and $top cap.
    let b = t
        .get(&tok, "/users?$select=id,displayName,assignedPlans&$top=999")
        .body_json();
    assert_eq!(b["value"].as_array().unwrap().len(), 254);
    assert!(b["value"][0].get("assignedPlans").is_some() && b["value"][0].get("mail").is_none());
    assert_eq!(t.get(&tok, "/users?$top=1000").status, 400);
    assert_eq!(t.get(&tok, "/users?$skip=5").status, 400);
    assert_eq!(t.get(&tok, "/users?$select=id,birthday").status, 501);
    // $count needs ConsistencyLevel: eventual.
    assert_eq!(t.get(&tok, "/users?$count=true").status, 400);
    let b = t
        .get_h(
            &tok,
            "/users?$count=true&$top=5",
            ("ConsistencyLevel", "eventual"),
        )
        .body_json();
    assert_eq!(b["@odata.count"], 254);
    assert_eq!(t.get(&tok, "/users/$count").status, 400);
    assert_eq!(
        String::from_utf8(
            t.get_h(&tok, "/users/$count", ("ConsistencyLevel", "eventual"))
                .body
        )
        .unwrap(),
        "254"
    );
    // $search: quoted "prop:term", tokenized prefix, needs the header.
    assert_eq!(
        t.get(&tok, "/users?$search=%22displayName:m%C3%BCl%22")
            .status,
        400
    );
    assert_eq!(
        t.get_h(
            &tok,
            "/users?$search=displayName:mul",
            ("ConsistencyLevel", "eventual")
        )
        .status,
        400
    );
    let b = t
        .get_h(
            &tok,
            "/users?$search=%22displayName:m%C3%BCl%22&$count=true",
            ("ConsistencyLevel", "eventual"),
        )
        .body_json();
    let names: Vec<&str> = b["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["displayName"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Jürgen Müller")
            && names
                .iter()
                .all(|n| n.to_lowercase().split(' ').any(|w| w.starts_with("mül")))
    );
    // Teams licence filter and advanced operators.
    let b = t.get(&tok, "/users?$filter=assignedPlans/any(p:p/servicePlanId%20eq%2057ff2da0-773e-42df-b2af-ffb7a2317929)&$top=999").body_json();
    assert!(
        b["value"].as_array().unwrap().len() < 254
            && !b["value"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["displayName"] == "Carol NoTeams")
    );
    assert_eq!(
        t.get(&tok, "/users?$filter=endswith(mail,'contoso.com')")
            .status,
        400
    );
    assert_eq!(
        t.get_h(
            &tok,
            "/users?$filter=endswith(mail,'contoso.com')&$count=true",
            ("ConsistencyLevel", "eventual")
        )
        .status,
        200
    );
}

#[test]
fn users_delta_rounds_removed_and_latest() {
    let mut t = setup();
    t.fake.populate(150, 9);
    let tok = t.svc_token();
    // Initial round: nextLink pages then a deltaLink.
    let b = t
        .get(&tok, "/users/delta?$select=id,displayName,mail")
        .body_json();
    assert!(b["@odata.nextLink"].is_string() && b.get("@odata.deltaLink").is_none());
    let next = b["@odata.nextLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    let b = t.get(&tok, &next).body_json();
    let delta = b["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    // No change: empty.
    assert_eq!(
        t.get(&tok, &delta).body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Changes: update, soft delete, permanent delete, new user.
    let a = t.alice.id.clone();
    let bob = t.bob.id.clone();
    let carol = t.carol.id.clone();
    t.fake.update_user(&a, &json!({"displayName": "Adele V."}));
    t.fake.delete_user(&bob, false);
    t.fake.delete_user(&carol, true);
    t.fake.add_user(UserSpec {
        display_name: "New Person".into(),
        ..Default::default()
    });
    let b = t.get(&tok, &delta).body_json();
    let v = b["value"].as_array().unwrap();
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(
        v.iter()
            .any(|x| x["id"] == bob.as_str() && x["@removed"]["reason"] == "changed")
    );
    assert!(
        v.iter()
            .any(|x| x["id"] == carol.as_str() && x["@removed"]["reason"] == "deleted")
    );
    // return=minimal: only changed properties.
    let r = t.get_h(&tok, &delta, ("Prefer", "return=minimal"));
    let adele = r.body_json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == a.as_str())
        .cloned()
        .unwrap();
    assert_eq!(adele["displayName"], "Adele V.");
    assert!(adele.get("mail").is_none());
    // A change to a property outside $select does not show up.
    let b = t.get(&tok, &delta).body_json();
    let delta2 = b["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    t.fake.update_user(&a, &json!({"jobTitle": "CEO"}));
    assert_eq!(
        t.get(&tok, &delta2).body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // latest: only a deltaLink.
    let b = t.get(&tok, "/users/delta?$deltatoken=latest").body_json();
    assert!(b["@odata.deltaLink"].is_string() && b["value"].as_array().unwrap().is_empty());
    assert_eq!(t.get(&tok, "/users/delta?$top=5").status, 400);
}

#[test]
fn users_delta_gone_and_expired_tokens() {
    let mut t = setup();
    let tok = t.svc_token();
    let b = t.get(&tok, "/users/delta").body_json();
    let delta = b["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    t.fake.invalidate_delta_tokens();
    let r = t.get(&tok, &delta);
    assert_eq!(r.status, 410);
    assert!(r.get_header("Location").is_some());
    let b = t.get(&tok, "/users/delta").body_json();
    let delta = b["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    t.clock.advance(8 * 86_400_000);
    let tok = t.svc_token();
    let r = t.get(&tok, &delta);
    assert_eq!(r.status, 400);
    assert_eq!(r.body_json()["error"]["code"], "syncStateNotFound");
}

#[test]
fn users_subscription_and_replication_delay() {
    let mut t = setup();
    let tok = t.app_token();
    let body = json!({"changeType": "updated,deleted", "notificationUrl": "https://connector.example/users", "resource": "users",
                      "expirationDateTime": fake_m365::clock::iso_z(t.fake.now() + 86_400_000), "clientState": "u"});
    assert_eq!(t.subscribe(&tok, body).status, 201);
    let a = t.alice.id.clone();
    t.fake
        .update_user(&a, &json!({"displayName": "Adele Renamed"}));
    t.fake.delete_user(&t.bob.id.clone(), false);
    let sent = t.answer_all(echo_validation);
    let b: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    let changes: Vec<(&str, &str)> = b["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["changeType"].as_str().unwrap(),
                v["resource"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("updated", format!("Users/{a}").as_str()),
            ("deleted", format!("Users/{}", t.bob.id).as_str())
        ]
    );
    // Replication delay switch: a new user is missing from listings for a while.
    t.fake.config_mut().directory_replication_delay_ms = 60_000;
    t.fake.add_user(UserSpec {
        display_name: "Late Replica".into(),
        ..Default::default()
    });
    let names = |t: &mut T, tok: &str| {
        t.get(tok, "/users?$top=999").body_json()["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["displayName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(!names(&mut t, &tok).contains(&"Late Replica".to_string()));
    t.clock.advance(60_000);
    assert!(names(&mut t, &tok).contains(&"Late Replica".to_string()));
}

#[test]
fn clock_skew_shift_expires_tokens_early() {
    let mut t = setup();
    let tok = t.svc_token();
    assert_eq!(t.get(&tok, "/me").status, 200);
    // The service's clock runs 2 h ahead of the client's: the fresh token is already expired.
    let (s, _) = t
        .fake
        .control("POST", "/control/clock", json!({"skewMs": 7_200_000}));
    assert_eq!(s, 200);
    assert_eq!(t.get(&tok, "/me").status, 401);
    t.fake.set_skew(0);
    assert_eq!(t.get(&tok, "/me").status, 200);
    // The request log records every call with its final status.
    let seen = t.fake.requests();
    assert_eq!(
        seen.iter()
            .filter(|r| r.target == "/v1.0/me")
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        vec![200, 401, 200]
    );
}

#[test]
fn ten_thousand_user_tenant_pages_completely() {
    let mut t = setup();
    t.fake.populate(10_000, 11);
    let tok = t.svc_token();
    let mut path = "/users?$select=id,displayName,mail,assignedPlans&$top=999".to_string();
    let (mut total, mut pages, mut no_mail, mut unlicensed) = (0, 0, 0, 0);
    loop {
        let b = t.get(&tok, &path).body_json();
        let v = b["value"].as_array().unwrap();
        total += v.len();
        pages += 1;
        no_mail += v.iter().filter(|u| u["mail"].is_null()).count();
        unlicensed += v
            .iter()
            .filter(|u| u["assignedPlans"].as_array().unwrap().is_empty())
            .count();
        match b["@odata.nextLink"].as_str() {
            Some(n) => path = n.split("/v1.0").nth(1).unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!((total, pages), (10_004, 11));
    assert!(no_mail > 0 && unlicensed > 0);
}
