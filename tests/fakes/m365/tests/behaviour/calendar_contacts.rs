//! Items 29 and 30: calendar and contacts.

use fake_m365::clock::{TEST_EPOCH_MS, iso_z};
use serde_json::{Value, json};

use crate::common::*;

fn weekly_event() -> Value {
    json!({"subject": "Weekly sync", "showAs": "busy", "sensitivity": "private",
           "start": {"dateTime": "2026-01-05T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
           "end": {"dateTime": "2026-01-05T09:30:00.0000000", "timeZone": "W. Europe Standard Time"},
           "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "thursday"], "firstDayOfWeek": "sunday"},
                          "range": {"type": "endDate", "startDate": "2026-01-05", "endDate": "2026-02-28", "recurrenceTimeZone": "W. Europe Standard Time"}}})
}

#[test]
fn calendar_view_requires_window_and_expands_recurrence() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let id = t.fake.add_event(&a, weekly_event()).unwrap();
    t.fake.add_event(&a, json!({"subject": "Holiday", "showAs": "oof", "isAllDay": true, "start": {"dateTime": "2026-01-16T00:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-01-17T00:00:00", "timeZone": "UTC"}})).unwrap();
    assert_eq!(t.get(&tok, &format!("/users/{a}/calendarView")).status, 400);
    assert_eq!(
        t.get(
            &tok,
            &format!("/users/{a}/calendarView?startDateTime=2026-01-12T00:00:00Z")
        )
        .status,
        400
    );
    // Cancel Thursday 15th, move Monday 12th.
    t.fake.set_occurrence_exception(&a, &id, "2026-01-15", None);
    t.fake.set_occurrence_exception(&a, &id, "2026-01-12", Some(json!({"subject": "Moved sync", "start": {"dateTime": "2026-01-12T14:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-01-12T15:00:00", "timeZone": "UTC"}})));
    let r = t.get(&tok, &format!("/users/{a}/calendarView?startDateTime=2026-01-12T00:00:00Z&endDateTime=2026-01-19T00:00:00Z&$top=50"));
    assert_eq!(r.status, 200);
    let v = r.body_json()["value"].as_array().unwrap().clone();
    let kinds: Vec<(&str, &str)> = v
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["start"]["dateTime"].as_str().unwrap(),
            )
        })
        .collect();
    // Jan 12 exception (moved), Jan 15 cancelled (omitted), Jan 16 all-day single, no series master.
    assert_eq!(
        kinds,
        vec![
            ("exception", "2026-01-12T14:00:00.0000000"),
            ("singleInstance", "2026-01-16T00:00:00.0000000")
        ],
        "{v:?}"
    );
    assert_eq!(v[0]["seriesMasterId"], id.as_str());
    // Next week: occurrences at 09:00 Berlin = 08:00 UTC.
    let r = t.get(&tok, &format!("/users/{a}/calendarView?startDateTime=2026-01-19T00:00:00Z&endDateTime=2026-01-26T00:00:00Z"));
    let v = r.body_json()["value"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["type"], "occurrence");
    assert_eq!(v[0]["start"]["dateTime"], "2026-01-19T08:00:00.0000000");
    assert_eq!(v[0]["showAs"], "busy");
    assert_eq!(v[0]["sensitivity"], "private");
    assert_eq!(v[0]["isCancelled"], false);
    // Prefer: outlook.timezone changes only the response times.
    let r = t.get_h(&tok, &format!("/users/{a}/calendarView?startDateTime=2026-01-19T00:00:00Z&endDateTime=2026-01-26T00:00:00Z"), ("Prefer", "outlook.timezone=\"Pacific Standard Time\""));
    let v = r.body_json()["value"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["start"]["dateTime"], "2026-01-19T00:00:00.0000000");
    assert_eq!(v[0]["start"]["timeZone"], "Pacific Standard Time");
    // After the range end there are no more occurrences.
    let r = t.get(&tok, &format!("/users/{a}/calendarView?startDateTime=2026-03-01T00:00:00Z&endDateTime=2026-03-08T00:00:00Z"));
    assert!(r.body_json()["value"].as_array().unwrap().is_empty());
    // Delegated: only the signed-in user's own mailbox.
    let svc = t.svc_token();
    assert_eq!(t.get(&svc, &format!("/users/{a}/calendarView?startDateTime=2026-01-19T00:00:00Z&endDateTime=2026-01-26T00:00:00Z")).status, 403);
}

#[test]
fn event_subscription_notifies_created() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let body = json!({"changeType": "created,updated,deleted", "notificationUrl": "https://connector.example/ev", "lifecycleNotificationUrl": "https://connector.example/lc",
                      "resource": format!("/users/{a}/events"), "expirationDateTime": iso_z(TEST_EPOCH_MS + 4_000 * 60_000), "clientState": "ev"});
    let r = t.subscribe(&tok, body.clone());
    assert_eq!(r.status, 201, "{:?}", r.body_json());
    let id = t.fake.add_event(&a, weekly_event()).unwrap();
    let sent = t.answer_all(echo_validation);
    let b: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(b["value"][0]["changeType"], "created");
    assert_eq!(b["value"][0]["resource"], format!("Users/{a}/Events/{id}"));
    t.fake.delete_event(&a, &id);
    let sent = t.answer_all(echo_validation);
    let b: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(b["value"][0]["changeType"], "deleted");
    // 1,000 per mailbox cap (configured small here).
    t.fake.config_mut().event_subs_per_mailbox = 1;
    let mut b2 = body;
    b2["notificationUrl"] = json!("https://connector.example/ev2");
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", b2)
            .unwrap_response()
            .status,
        403
    );
}

#[test]
fn contacts_filter_rules_and_search() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    for (g, s, mail) in [
        ("Garth", "Fort", "garth@contoso.com"),
        ("Gary", "Møller", "gary@fabrikam.com"),
        ("Anna", "Garcia", "anna@contoso.com"),
    ] {
        t.fake.add_contact(&a, json!({"givenName": g, "surname": s, "emailAddresses": [{"name": format!("{g} {s}"), "address": mail}], "businessPhones": ["+1 425 555 0100"]})).unwrap();
    }
    for i in 0..12 {
        t.fake
            .add_contact(
                &a,
                json!({"givenName": format!("Filler{i}"), "surname": "X"}),
            )
            .unwrap();
    }
    let r = t.get(
        &tok,
        &format!(
            "/users/{a}/contacts?$filter=emailAddresses/any(a:a/address%20eq%20'garth@contoso.com')"
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["value"].as_array().unwrap().len(), 1);
    let r = t.get(
        &tok,
        &format!("/users/{a}/contacts?$filter=emailAddresses/any(a:startswith(a/address,'garth'))"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body_json()["error"]["code"], "ErrorInvalidUrlQueryFilter");
    let r = t.get(
        &tok,
        &format!("/users/{a}/contacts?$filter=startswith(displayName,'Ga')"),
    );
    assert_eq!(r.body_json()["value"].as_array().unwrap().len(), 2);
    let r = t.get(
        &tok,
        &format!("/users/{a}/contacts?$filter=startswith(surname,'Gar')"),
    );
    assert_eq!(r.body_json()["value"].as_array().unwrap().len(), 1);
    let r = t.get(
        &tok,
        &format!("/users/{a}/contacts?$filter=startswith(jobTitle,'B')"),
    );
    assert_eq!(r.status, 400);
    let r = t.get(&tok, &format!("/users/{a}/contacts?$search=%22m%C3%B8l%22"));
    assert_eq!(r.body_json()["value"][0]["surname"], "Møller");
    // Paging: default page size, $skip-based nextLink.
    let b = t.get(&tok, &format!("/users/{a}/contacts")).body_json();
    assert_eq!(b["value"].as_array().unwrap().len(), 10);
    let next = b["@odata.nextLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(next.contains("$skip=10"));
    assert_eq!(
        t.get(&tok, &next).body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn calendar_meeting_drives_teams_presence() {
    let mut t = setup();
    let a = t.alice.id.clone();
    t.fake
        .teams_client_presence(&a, None, "Available", "Available")
        .unwrap();
    let ev = |s: i64, e: i64, show: &str| json!({"subject": "x", "showAs": show, "start": {"dateTime": iso_z(s), "timeZone": "UTC"}, "end": {"dateTime": iso_z(e), "timeZone": "UTC"}});
    t.fake
        .add_event(
            &a,
            ev(TEST_EPOCH_MS + 60_000, TEST_EPOCH_MS + 1_860_000, "busy"),
        )
        .unwrap();
    assert_eq!(t.fake.current_presence(&a).unwrap().1, "Available");
    t.clock.advance(60_000);
    t.fake.tick();
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Busy".into(), "InAMeeting".into())
    );
    t.clock.advance(1_800_000);
    t.fake.tick();
    assert_eq!(
        t.fake.current_presence(&a).unwrap(),
        ("Available".into(), "Available".into())
    );
    let now = t.fake.now();
    t.fake
        .add_event(&a, ev(now, now + 86_400_000, "oof"))
        .unwrap();
    assert_eq!(t.fake.current_presence(&a).unwrap().1, "OutOfOffice");
    // Free events do nothing; the switch turns the overlay off.
    t.fake.config_mut().calendar_drives_presence = false;
    assert_eq!(t.fake.current_presence(&a).unwrap().1, "Available");
}

#[test]
fn me_paths_and_contact_folders_route_to_own_mailbox() {
    let mut t = setup();
    let svc_id = t.svc.id.clone();
    t.fake
        .add_contact(&svc_id, json!({"givenName": "Own", "surname": "Contact"}))
        .unwrap();
    let tok = t.svc_token();
    assert_eq!(
        t.get(&tok, "/me/contacts").body_json()["value"][0]["givenName"],
        "Own"
    );
    assert_eq!(
        t.get(&tok, &format!("/users/{svc_id}/contactFolders/x/contacts"))
            .body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        t.get(
            &tok,
            "/me/calendarView?startDateTime=2026-01-01T00:00:00Z&endDateTime=2026-01-02T00:00:00Z"
        )
        .status,
        200
    );
}

#[test]
fn moving_an_event_changes_calendar_view_and_notifies_updated() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let body = json!({"changeType": "created,updated,deleted", "notificationUrl": "https://connector.example/ev", "lifecycleNotificationUrl": "https://connector.example/lc",
                      "resource": format!("/users/{a}/events"), "expirationDateTime": iso_z(TEST_EPOCH_MS + 4_000 * 60_000), "clientState": "ev"});
    assert_eq!(t.subscribe(&tok, body).status, 201);
    let (status, v) = t.fake.control("POST", "/control/events", json!({"user": a, "event": {"subject": "Review", "showAs": "busy",
        "start": {"dateTime": "2026-01-15T09:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-01-15T10:00:00", "timeZone": "UTC"}}}));
    assert_eq!(status, 201);
    let id = v["id"].as_str().unwrap().to_string();
    t.answer_all(echo_validation);
    // Moved one hour later, by the control API as the organiser would in Outlook.
    let (status, _) = t.fake.control("PATCH", &format!("/control/events/{id}"), json!({"user": a, "patch": {
        "start": {"dateTime": "2026-01-15T11:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-01-15T12:00:00", "timeZone": "UTC"}}}));
    assert_eq!(status, 200);
    let sent = t.answer_all(echo_validation);
    let b: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(b["value"][0]["changeType"], "updated");
    let view = |t: &mut T| {
        let r = t.get(&tok, &format!("/users/{a}/calendarView?startDateTime=2026-01-15T00:00:00Z&endDateTime=2026-01-16T00:00:00Z"));
        r.body_json()["value"].as_array().unwrap().clone()
    };
    let v = view(&mut t);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["start"]["dateTime"], "2026-01-15T11:00:00.0000000");
    assert_eq!(v[0]["subject"], "Review");
    // A bad time is refused and changes nothing; an unknown event is 404.
    let (status, _) = t.fake.control(
        "PATCH",
        &format!("/control/events/{id}"),
        json!({"user": a, "patch": {"start": {"timeZone": "UTC"}}}),
    );
    assert_eq!(status, 404);
    assert_eq!(
        view(&mut t)[0]["start"]["dateTime"],
        "2026-01-15T11:00:00.0000000"
    );
    let (status, _) = t.fake.control(
        "DELETE",
        &format!("/control/events/{id}"),
        json!({"user": a}),
    );
    assert_eq!(status, 204);
    assert!(view(&mut t).is_empty());
    let (status, _) = t.fake.control(
        "DELETE",
        &format!("/control/events/{id}"),
        json!({"user": a}),
    );
    assert_eq!(status, 404);
}
