//! Items 12-17: presence endpoints and the aggregation engine.

use fake_m365::{Config, UnknownPresenceIds};
use serde_json::json;

use crate::common::*;

#[test]
fn presence_get_three_paths_and_sequence_monotonic() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.fake
        .teams_client_presence(&a, None, "Busy", "InAMeeting")
        .unwrap();
    let p1 = t.get(&tok, &format!("/users/{a}/presence")).body_json();
    for k in [
        "id",
        "availability",
        "activity",
        "statusMessage",
        "outOfOfficeSettings",
        "sequenceNumber",
    ] {
        assert!(p1.get(k).is_some(), "{k}");
    }
    assert_eq!(
        (
            p1["availability"].as_str().unwrap(),
            p1["activity"].as_str().unwrap()
        ),
        ("Busy", "InAMeeting")
    );
    let p2 = t
        .get(&tok, &format!("/communications/presences/{a}"))
        .body_json();
    assert_eq!(p2["availability"], "Busy");
    let me = t.get(&tok, "/me/presence").body_json();
    assert_eq!(me["id"], t.svc.id.as_str());
    assert_eq!(me["availability"], "Offline");
    t.fake
        .teams_client_presence(&a, None, "Away", "Away")
        .unwrap();
    let p3 = t.get(&tok, &format!("/users/{a}/presence")).body_json();
    assert!(p3["sequenceNumber"].as_str().unwrap() > p1["sequenceNumber"].as_str().unwrap());
    // Unlicensed user.
    let c = t.carol.id.clone();
    assert_eq!(
        t.get(&tok, &format!("/users/{c}/presence")).body_json()["availability"],
        "PresenceUnknown"
    );
}

#[test]
fn get_presences_by_user_id_limits_and_unknown_ids() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let ids: Vec<String> = (0..651)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let r = t.post(
        &tok,
        "/communications/getPresencesByUserId",
        json!({ "ids": ids }),
    );
    assert_eq!(r.status, 400);
    let r = t.post(
        &tok,
        "/communications/getPresencesByUserId",
        json!({ "ids": ids[..650].to_vec() }),
    );
    assert_eq!(r.status, 200);
    let r = t.post(
        &tok,
        "/communications/getPresencesByUserId",
        json!({ "ids": [a, "00000000-0000-0000-0000-000000000001"] }),
    );
    let v = r.body_json()["value"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1]["availability"], "PresenceUnknown");
    let mut cfg = Config::default();
    cfg.unknown_presence_ids = UnknownPresenceIds::Omit;
    let mut t2 = setup_with(cfg);
    let tok = t2.app_token();
    let a = t2.alice.id.clone();
    let v = t2
        .post(
            &tok,
            "/communications/getPresencesByUserId",
            json!({ "ids": [a, "00000000-0000-0000-0000-000000000001"] }),
        )
        .body_json();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
}

#[test]
fn set_presence_rules_and_idle_fade() {
    let mut t = setup();
    let tok = t.app_token();
    let (a, d) = (t.alice.id.clone(), t.daemon.clone());
    let path = format!("/users/{a}/presence/setPresence");
    // sessionId must be the caller's app id.
    let r = t.post(&tok, &path, json!({"sessionId": "33333333-3333-3333-3333-333333333333", "availability": "Busy", "activity": "InACall"}));
    assert_eq!(r.status, 400);
    // Only the five pairs.
    let r = t.post(
        &tok,
        &path,
        json!({"sessionId": d, "availability": "Busy", "activity": "InAMeeting"}),
    );
    assert_eq!(r.status, 400);
    // PT5M..PT4H.
    for bad in ["PT4M", "PT5H"] {
        let r = t.post(&tok, &path, json!({"sessionId": d, "availability": "Busy", "activity": "InACall", "expirationDuration": bad}));
        assert_eq!(r.status, 400);
        assert_eq!(r.body_json()["error"]["code"], "InvalidArgument");
        assert!(
            r.body_json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("out of range")
        );
    }
    for (av, ac) in [
        ("Available", "Available"),
        ("Busy", "InACall"),
        ("Busy", "InAConferenceCall"),
        ("Away", "Away"),
        ("DoNotDisturb", "Presenting"),
    ] {
        assert_eq!(
            t.post(
                &tok,
                &path,
                json!({"sessionId": d, "availability": av, "activity": ac})
            )
            .status,
            200
        );
    }
    // Default expiry 5 min: Available fades to AvailableInactive at 5 min... but expires at 5 min.
    assert_eq!(t.post(&tok, &path, json!({"sessionId": d, "availability": "Available", "activity": "Available", "expirationDuration": "PT1H"})).status, 200);
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Available".into(), "Available".into())
    );
    t.clock.advance(300_000);
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Available".into(), "AvailableInactive".into())
    );
    t.clock.advance(300_000);
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Away".into(), "Away".into())
    );
    t.clock.advance(3_000_001);
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Offline".into(), "Offline".into())
    );
    // Default expirationDuration is PT5M.
    let tok = t.app_token();
    assert_eq!(
        t.post(
            &tok,
            &path,
            json!({"sessionId": d, "availability": "Busy", "activity": "InACall"})
        )
        .status,
        200
    );
    t.clock.advance(299_000);
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Busy");
    t.clock.advance(2_000);
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Offline");
}

#[test]
fn clear_presence_404_and_offline() {
    let mut t = setup();
    let tok = t.app_token();
    let (a, d) = (t.alice.id.clone(), t.daemon.clone());
    let r = t.post(
        &tok,
        &format!("/users/{a}/presence/clearPresence"),
        json!({"sessionId": d}),
    );
    assert_eq!(r.status, 404);
    t.post(&tok, &format!("/users/{a}/presence/setPresence"), json!({"sessionId": d, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT10M"}));
    assert_eq!(t.fake.current_presence(&a).unwrap().1, "InACall");
    assert_eq!(
        t.post(
            &tok,
            &format!("/users/{a}/presence/clearPresence"),
            json!({"sessionId": d})
        )
        .status,
        200
    );
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Offline".into(), "Offline".into())
    );
}

#[test]
fn preferred_presence_pairs_defaults_and_session_requirement() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let path = format!("/users/{a}/presence/setUserPreferredPresence");
    assert_eq!(
        t.post(
            &tok,
            &path,
            json!({"availability": "Busy", "activity": "InACall"})
        )
        .status,
        400
    );
    for (av, ac) in [
        ("Available", "Available"),
        ("Busy", "Busy"),
        ("DoNotDisturb", "DoNotDisturb"),
        ("BeRightBack", "BeRightBack"),
        ("Away", "Away"),
        ("Offline", "OffWork"),
    ] {
        assert_eq!(
            t.post(&tok, &path, json!({"availability": av, "activity": ac}))
                .status,
            200
        );
    }
    // Without any session the user shows Offline.
    t.post(
        &tok,
        &path,
        json!({"availability": "DoNotDisturb", "activity": "DoNotDisturb"}),
    );
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Offline");
    t.fake
        .teams_client_presence(&a, None, "Available", "Available")
        .unwrap();
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "DoNotDisturb");
    // Default expiry: 1 day for DND/Busy.
    t.clock.advance(86_400_001);
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Available");
    // 7 days for others.
    let tok = t.app_token();
    t.post(
        &tok,
        &path,
        json!({"availability": "Away", "activity": "Away"}),
    );
    t.clock.advance(6 * 86_400_000);
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Away");
    t.clock.advance(86_400_001);
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Available");
    // clearUserPreferredPresence and setStatusMessage.
    let tok = t.app_token();
    t.post(
        &tok,
        &path,
        json!({"availability": "Busy", "activity": "Busy"}),
    );
    assert_eq!(
        t.post(
            &tok,
            &format!("/users/{a}/presence/clearUserPreferredPresence"),
            json!({})
        )
        .status,
        200
    );
    assert_eq!(t.fake.current_presence(&a).unwrap().0, "Available");
    let r = t.post(
        &tok,
        &format!("/users/{a}/presence/setStatusMessage"),
        json!({"statusMessage": {"message": {"content": "In PBX call", "contentType": "text"}}}),
    );
    assert_eq!(r.status, 200);
    let p = t.get(&tok, &format!("/users/{a}/presence")).body_json();
    assert_eq!(p["statusMessage"]["message"]["content"], "In PBX call");
}

#[test]
fn notifications_only_when_aggregate_changes() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.fake
        .teams_client_presence(&a, None, "Available", "Available")
        .unwrap();
    assert_eq!(t.subscribe(&tok, presence_sub_body(&[&a])).status, 201);
    let app_tok = t.app_token();
    let d = t.daemon.clone();
    // App session Busy/InACall beats the Available Teams client: one notification.
    t.post(&app_tok, &format!("/users/{a}/presence/setPresence"), json!({"sessionId": d, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT10M"}));
    let sent = t.answer_all(echo_validation);
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body["value"][0]["resource"],
        format!("communications/presences/{a}")
    );
    // The Teams client changes Available -> Away: aggregate still Busy, nothing sent.
    t.fake
        .teams_client_presence(&a, None, "Away", "Away")
        .unwrap();
    assert!(t.answer_all(echo_validation).is_empty());
    // DND on the client wins over Busy: sent.
    t.fake
        .teams_client_presence(&a, None, "DoNotDisturb", "DoNotDisturb")
        .unwrap();
    assert_eq!(t.answer_all(echo_validation).len(), 1);
}
