//! The calendar state machine against a recording [`TestEnv`]: subscriptions (adoption,
//! renewal, recreation, the mailbox limit), notifications (handshake, forged, real), reads
//! (UTC, paging) and the stored schedule after a restart.

use serde_json::json;

use super::*;
use crate::event::header;
use crate::graph::subscriptions::parse_iso;
use crate::testenv::TestEnv;

const GRAPH: &str = "https://graph.test";
const NOTIFY: &str = "https://pub.example/example.com/m365/calendar/notifications";

struct T {
    env: TestEnv,
    pbx: Pbx,
    tokens: Tokens,
    cal: CalendarSync,
}

fn matched(env: &mut TestEnv, id: &str) {
    let m = Matched {
        id: id.into(),
        guid: format!("guid-{id}"),
        loc: "master".into(),
        name: format!("user {id}"),
    };
    store::set_json(env, &format!("{}{id}", matching::USER_PREFIX), &m);
}

fn config() -> Config {
    Config {
        graph_url: GRAPH.into(),
        urls: Some(Urls {
            notification: NOTIFY.into(),
            lifecycle: "https://pub.example/example.com/m365/calendar/lifecycle".into(),
        }),
        lifetime_ms: MAX_LIFETIME_MS,
        renew_ms: 86_400_000,
        refresh_ms: 3_600_000,
        window_ms: 48 * 3_600_000,
    }
}

/// A started feature for users `ids`, its token obtained, requests cleared.
fn started(env: TestEnv, ids: &[&str]) -> T {
    let mut t = T {
        env,
        pbx: Pbx::default(),
        tokens: Tokens::new(),
        cal: CalendarSync::new(config()),
    };
    for id in ids {
        matched(&mut t.env, id);
    }
    t.cal.init(&mut t.env, &mut t.pbx);
    let client = Client {
        login_base: "https://login.test".into(),
        tenant: "contoso".into(),
        client_id: "cal".into(),
        client_secret: Some("s3cret".into()),
    };
    t.tokens.add(
        &mut t.env,
        ACCOUNT,
        client,
        SignIn::ClientCredentials,
        "https://graph.microsoft.com/.default",
    );
    t.tokens.start(&mut t.env, ACCOUNT);
    let (id, _) = t.env.requests.pop().unwrap();
    let ok = HttpResponse::json(200, &json!({"access_token": "AT", "expires_in": 3600}));
    let events = t.tokens.on_response(&mut t.env, id, &Ok(ok)).unwrap();
    for ev in &events {
        t.cal.on_token(&mut t.env, &t.tokens, ev);
    }
    t
}

impl T {
    /// Answers the newest request matching `method` and `url_part`; returns its request.
    fn answer(&mut self, method: &str, url_part: &str, resp: HttpResponse) -> HttpRequest {
        let (id, req) = self
            .env
            .requests
            .iter()
            .rev()
            .find(|(_, r)| r.method == method && r.url.contains(url_part))
            .cloned()
            .unwrap_or_else(|| panic!("no {method} {url_part} in {:?}", self.urls()));
        self.env.requests.retain(|(i, _)| *i != id);
        assert!(
            self.cal
                .on_response(&mut self.env, &mut self.pbx, &self.tokens, id, &Ok(resp))
        );
        req
    }

    /// A new access token, as the token manager gets one before the old one expires.
    fn fresh_token(&mut self) {
        self.tokens.start(&mut self.env, ACCOUNT);
        let (id, _) = self.env.requests.pop().unwrap();
        let ok = HttpResponse::json(200, &json!({"access_token": "AT2", "expires_in": 3600}));
        self.tokens.on_response(&mut self.env, id, &Ok(ok)).unwrap();
    }

    fn urls(&self) -> Vec<String> {
        self.env
            .requests
            .iter()
            .map(|(_, r)| format!("{} {}", r.method, r.url))
            .collect()
    }

    fn notify(&mut self, path: &str, query: &str, body: serde_json::Value) -> HttpResponse {
        let req = InboundRequest {
            method: "POST".into(),
            path: path.into(),
            query: query.into(),
            headers: vec![],
            body: body.to_string().into_bytes(),
            peer: "52.1.1.1:443".into(),
        };
        self.cal.on_notification(&mut self.env, &self.tokens, &req)
    }
}

fn listed(subs: serde_json::Value) -> HttpResponse {
    HttpResponse::json(200, &json!({ "value": subs }))
}

fn created(id: &str) -> HttpResponse {
    HttpResponse::json(
        201,
        &json!({"id": id, "expirationDateTime": "2030-01-01T00:00:00Z"}),
    )
}

fn stored_sub(env: &mut TestEnv, user: &str, id: &str, secret: &str) {
    let r = SubRecord {
        user: user.into(),
        id: id.into(),
        expiry_ms: 1,
        client_state: secret.into(),
    };
    store::set_json(env, &sub_key(user), &r);
}

#[test]
fn start_adopts_its_own_deletes_strays_and_creates_the_missing() {
    let mut env = TestEnv::new();
    stored_sub(&mut env, "a", "S1", "x");
    let mut t = started(env, &["a", "b"]);
    // The first token lists, and queues everyone for a read.
    assert!(
        t.urls()
            .iter()
            .any(|u| u == &format!("GET {GRAPH}/v1.0/subscriptions"))
    );
    t.answer(
        "GET",
        "/subscriptions",
        listed(json!([
            {"id": "S1", "resource": "/users/a/events", "notificationUrl": NOTIFY},
            {"id": "S2", "resource": "/users/b/events", "notificationUrl": NOTIFY},
            {"id": "S3", "resource": "/users/b/events", "notificationUrl": "https://other/x"},
        ])),
    );
    let urls = t.urls();
    assert!(
        urls.contains(&format!("PATCH {GRAPH}/v1.0/subscriptions/S1")),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("DELETE {GRAPH}/v1.0/subscriptions/S2")),
        "{urls:?}"
    );
    assert!(!urls.iter().any(|u| u.contains("S3")), "{urls:?}");
    // b's new subscription waits until the stray one on the same resource and URL is gone.
    assert!(!urls.iter().any(|u| u.starts_with("POST")), "{urls:?}");
    t.answer("DELETE", "/subscriptions/S2", HttpResponse::text(204, ""));
    // Only b needs a new subscription, and asks for every change of its events.
    let creates: Vec<&HttpRequest> = t
        .env
        .requests
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(creates.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&creates[0].body).unwrap();
    assert_eq!(body["resource"], "/users/b/events");
    assert_eq!(body["changeType"], "created,updated,deleted");
    assert_eq!(body["notificationUrl"], NOTIFY);
    // Within 4,230 minutes of now (Microsoft's clock = ours here).
    let exp = parse_iso(body["expirationDateTime"].as_str().unwrap()).unwrap();
    assert!(exp <= t.env.now_ms + MAX_LIFETIME_MS, "{exp}");
    t.answer("POST", "/subscriptions", created("S4"));
    assert!(t.env.kv_text("calendar/sub/b").unwrap().contains("S4"));
}

#[test]
fn renewal_404_and_subscription_removed_create_a_new_one() {
    let mut env = TestEnv::new();
    stored_sub(&mut env, "a", "S1", "sec");
    let mut t = started(env, &["a"]);
    t.answer(
        "GET",
        "/subscriptions",
        listed(json!([{"id": "S1", "resource": "/users/a/events", "notificationUrl": NOTIFY}])),
    );
    t.answer(
        "PATCH",
        "/subscriptions/S1",
        HttpResponse::json(
            404,
            &json!({"error": {"code": "ResourceNotFound", "message": "gone"}}),
        ),
    );
    t.answer("POST", "/subscriptions", created("S2"));
    // Graph removes it: a lifecycle notification with the right clientState recreates it.
    let secret = t.cal.subs["a"].client_state.clone();
    let r = t.notify(
        LIFECYCLE_PATH,
        "",
        json!({"value": [{"subscriptionId": "S2", "clientState": secret,
                          "lifecycleEvent": "subscriptionRemoved"}]}),
    );
    assert_eq!(r.status, 202);
    assert!(t.env.kv_text("calendar/sub/a").is_none());
    t.answer("POST", "/subscriptions", created("S3"));
    assert!(t.env.kv_text("calendar/sub/a").unwrap().contains("S3"));
    // reauthorizationRequired is a renewal, nothing else.
    let secret = t.cal.subs["a"].client_state.clone();
    t.env.requests.clear();
    t.notify(
        LIFECYCLE_PATH,
        "",
        json!({"value": [{"subscriptionId": "S3", "clientState": secret,
                          "lifecycleEvent": "reauthorizationRequired"}]}),
    );
    assert_eq!(
        t.urls(),
        vec![format!("PATCH {GRAPH}/v1.0/subscriptions/S3")]
    );
}

#[test]
fn a_failed_renewal_is_retried_before_the_subscription_lapses() {
    let mut t = started(TestEnv::new(), &["a"]);
    t.answer("GET", "/subscriptions", listed(json!([])));
    let expiry = iso(t.env.now_ms + MAX_LIFETIME_MS);
    t.answer(
        "POST",
        "/subscriptions",
        HttpResponse::json(201, &json!({"id": "S1", "expirationDateTime": expiry})),
    );
    // A day later (the token manager kept the token fresh) the renewal meets a Graph outage.
    t.env.now_ms += 86_400_000;
    t.fresh_token();
    let (id, tag) = t
        .env
        .timers
        .iter()
        .find(|(_, (_, tag))| tag == "cal:renew")
        .map(|(id, (_, tag))| (*id, tag.clone()))
        .unwrap();
    t.cal.on_timer(&mut t.env, &mut t.pbx, &t.tokens, id, &tag);
    let unavailable = HttpResponse::json(
        503,
        &json!({"error": {"code": "ServiceUnavailable", "message": "later"}}),
    );
    t.answer("PATCH", "/subscriptions/S1", unavailable);
    let (id, (after, tag)) = t
        .env
        .timers
        .iter()
        .find(|(_, (_, tag))| tag == "cal:retry")
        .map(|(id, v)| (*id, v.clone()))
        .expect("a retry is planned");
    assert!(after <= 5 * 60_000 * 5 / 4, "{after}");
    t.env.requests.clear();
    t.cal.on_timer(&mut t.env, &mut t.pbx, &t.tokens, id, &tag);
    assert!(
        t.urls()
            .contains(&format!("PATCH {GRAPH}/v1.0/subscriptions/S1")),
        "{:?}",
        t.urls()
    );
}

#[test]
fn a_full_mailbox_is_reported_and_not_hammered() {
    let mut t = started(TestEnv::new(), &["a"]);
    t.answer("GET", "/subscriptions", listed(json!([])));
    t.answer(
        "POST",
        "/subscriptions",
        HttpResponse::json(403, &json!({"error": {"code": "ExtensionError",
            "message": "The maximum number of subscriptions (1000) for this mailbox has been reached."}})),
    );
    assert!(t.env.logged("1,000 subscriptions"));
    assert!(!t.env.timers.values().any(|(_, tag)| tag == "cal:retry"));
    assert_eq!(
        t.env.counters.get("calendar_subscription_refused_total"),
        Some(&1)
    );
}

#[test]
fn handshake_forged_and_real_notifications() {
    let mut env = TestEnv::new();
    stored_sub(&mut env, "a", "S1", "right-secret");
    let mut t = started(env, &["a"]);
    t.answer(
        "GET",
        "/subscriptions",
        listed(json!([{"id": "S1", "resource": "/users/a/events", "notificationUrl": NOTIFY}])),
    );
    // Graph's validation: the token echoed as text.
    let r = t.notify(
        NOTIFICATION_PATH,
        "validationToken=Validation%3A+abc",
        json!({}),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"Validation: abc".as_slice())
    );
    // The read queued at the first token is answered; nothing pending afterwards.
    t.answer("GET", "/calendarView", listed(json!([])));
    t.env.requests.clear();
    for forged in [
        json!({"value": [{"subscriptionId": "S1", "clientState": "wrong"}]}),
        json!({"value": [{"subscriptionId": "S9", "clientState": "right-secret"}]}),
        json!("garbage"),
    ] {
        assert_eq!(t.notify(NOTIFICATION_PATH, "", forged).status, 202);
    }
    assert!(t.env.requests.is_empty(), "{:?}", t.urls());
    assert!(t.env.kv_keys("calendar/inbox/").is_empty());
    assert_eq!(
        t.env
            .counters
            .get("calendar_notifications_rejected_total{reason=client-state}"),
        Some(&1)
    );
    // A real one: in the inbox before the answer, then read in UTC.
    let r = t.notify(
        NOTIFICATION_PATH,
        "",
        json!({"value": [{"subscriptionId": "S1", "clientState": "right-secret",
                          "changeType": "updated", "resource": "Users/a/Events/E1"}]}),
    );
    assert_eq!(r.status, 202);
    assert_eq!(t.env.kv_keys("calendar/inbox/"), vec!["calendar/inbox/a"]);
    let req = t.answer("GET", "/users/a/calendarView", listed(json!([])));
    assert_eq!(
        header(&req.headers, "prefer"),
        Some("outlook.timezone=\"UTC\"")
    );
    assert!(req.url.contains("startDateTime=") && req.url.contains("endDateTime="));
    assert!(t.env.kv_keys("calendar/inbox/").is_empty());
}

fn ev(subject: &str, start: u64, end: u64) -> serde_json::Value {
    let t = |ms: u64| iso(ms).trim_end_matches('Z').to_string();
    json!({"subject": subject, "showAs": "busy", "type": "singleInstance",
           "start": {"dateTime": t(start), "timeZone": "UTC"},
           "end": {"dateTime": t(end), "timeZone": "UTC"}})
}

#[test]
fn pages_are_followed_and_the_schedule_survives_a_restart() {
    let mut t = started(TestEnv::new(), &["a"]);
    t.answer("GET", "/subscriptions", listed(json!([])));
    let now = t.env.now_ms;
    let first = HttpResponse::json(
        200,
        &json!({"value": [ev("One", now - 60_000, now + 600_000)],
                "@odata.nextLink": format!("{GRAPH}/v1.0/users/a/calendarView?page=2")}),
    );
    t.answer("GET", "/users/a/calendarView", first);
    let second = listed(json!([ev("Two", now + 3_600_000, now + 7_200_000)]));
    let req = t.answer("GET", "page=2", second);
    assert_eq!(
        header(&req.headers, "prefer"),
        Some("outlook.timezone=\"UTC\"")
    );
    let state: UserState = store::get_json(&mut t.env, "calendar/user/a").unwrap();
    assert_eq!(state.slots.len(), 2);
    // Timer at the end of "One", the next change.
    let at = |env: &TestEnv| {
        env.timers
            .values()
            .filter(|(_, tag)| tag == "cal:at:a")
            .map(|(after, _)| *after)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(&t.env), vec![600_000]);

    // A restart 5 minutes later, with Graph unreachable: the stored schedule sets the timer.
    let mut env = std::mem::take(&mut t.env);
    env.timers.clear();
    env.requests.clear();
    env.now_ms += 300_000;
    let mut again = CalendarSync::new(config());
    again.init(&mut env, &mut t.pbx);
    assert_eq!(at(&env), vec![300_000]);
    assert!(env.requests.is_empty());
}

#[test]
fn a_wrong_local_clock_does_not_shift_meetings() {
    let mut t = started(TestEnv::new(), &["a"]);
    // Our clock is 10 minutes behind Microsoft's (the Date header of its answers says so).
    let graph_now = t.env.now_ms + 600_000;
    let mut answer = listed(json!([]));
    answer.headers.push(Header::new(
        "date",
        &crate::graph::subscriptions::http_date(graph_now),
    ));
    t.answer("GET", "/subscriptions", answer);
    // A meeting that started 5 minutes ago and ends in 55, by Microsoft's clock.
    let body = listed(json!([ev(
        "Skewed",
        graph_now - 300_000,
        graph_now + 3_300_000
    )]));
    t.answer("GET", "/users/a/calendarView", body);
    // The end is 55 minutes away on Microsoft's clock, not 65 (our clock).
    let timers: Vec<u64> = t
        .env
        .timers
        .values()
        .filter(|(_, tag)| tag == "cal:at:a")
        .map(|(after, _)| *after)
        .collect();
    assert_eq!(timers, vec![3_300_000]);
    // The skew is kept for a restart.
    assert_eq!(t.env.kv_text(SKEW_KEY).as_deref(), Some("600000"));
}

#[test]
fn a_user_no_longer_matched_loses_schedule_and_subscription_a_new_one_is_read() {
    let mut t = started(TestEnv::new(), &["a"]);
    t.answer("GET", "/subscriptions", listed(json!([])));
    t.answer("POST", "/subscriptions", created("S1"));
    t.answer("GET", "/users/a/calendarView", listed(json!([])));
    assert!(t.env.kv_text("calendar/user/a").is_some());
    // F1 matched again: a lost its licence, b is new.
    t.env.kv_delete(&format!("{}a", matching::USER_PREFIX));
    matched(&mut t.env, "b");
    t.env.requests.clear();
    t.cal.on_matches_changed(&mut t.env, &mut t.pbx, &t.tokens);
    let urls = t.urls();
    assert!(
        urls.contains(&format!("DELETE {GRAPH}/v1.0/subscriptions/S1")),
        "{urls:?}"
    );
    assert!(
        urls.iter().any(|u| u.contains("/users/b/calendarView")),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("POST {GRAPH}/v1.0/subscriptions")),
        "{urls:?}"
    );
    assert!(t.env.kv_text("calendar/user/a").is_none());
    assert!(t.env.kv_text("calendar/sub/a").is_none());
    // Nothing changed: no work.
    t.env.requests.clear();
    t.cal.on_matches_changed(&mut t.env, &mut t.pbx, &t.tokens);
    assert!(t.env.requests.is_empty(), "{:?}", t.urls());
}
