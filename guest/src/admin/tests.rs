//! The admin API driven through the connector, as the page uses it.

use serde_json::{Value, json};

use crate::Connector;
use crate::event::{Event, Header, InboundRequest, InitInfo, header};
use crate::pbx::login;
use crate::testenv::TestEnv;

fn request(method: &str, path: &str, body: Value, headers: Vec<Header>) -> InboundRequest {
    InboundRequest {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers,
        body: if body.is_null() {
            vec![]
        } else {
            body.to_string().into_bytes()
        },
        peer: "192.0.2.7:5555".into(),
    }
}

struct Page {
    c: Connector,
    env: TestEnv,
    next: u64,
    cookie: Option<String>,
    csrf: Option<String>,
    /// Headers the browser adds to every request (e.g. `origin`).
    extra: Vec<Header>,
}

impl Page {
    fn new() -> Self {
        let mut env = TestEnv::new();
        let mut c = Connector::new();
        c.handle(&mut env, Event::Init(InitInfo::default_start()));
        Page {
            c,
            env,
            next: 100,
            cookie: None,
            csrf: None,
            extra: vec![],
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Value) -> (u16, Value, Vec<Header>) {
        let mut headers = self.extra.clone();
        if let Some(c) = &self.cookie {
            headers.push(Header::new("cookie", &format!("other=1; m365admin={c}")));
        }
        if let Some(t) = &self.csrf {
            headers.push(Header::new("x-csrf-token", t));
        }
        self.next += 1;
        let req = request(method, path, body, headers);
        self.c
            .handle(&mut self.env, Event::HttpRequest(self.next, req));
        let (id, resp) = self.env.responses.last().unwrap().clone();
        assert_eq!(id, self.next);
        let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, body, resp.headers)
    }

    /// Logs in as the browser does: challenge, digest without `info`, login.
    fn login(&mut self, password: &str) -> (u16, Value) {
        let (_, ch, _) = self.call("POST", "/admin/api/challenge", Value::Null);
        let c = ch["challenge"].as_str().unwrap();
        let digest = login::digest(
            ch["app"].as_str().unwrap(),
            ch["domain"].as_str().unwrap(),
            "",
            "",
            "",
            None,
            c,
            password,
        );
        let (status, body, headers) = self.call(
            "POST",
            "/admin/api/login",
            json!({"challenge": c, "digest": digest}),
        );
        if status == 200 {
            let set = header(&headers, "set-cookie").unwrap().to_string();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            assert!(set.contains("Path=/example.com/m365/admin"), "{set}");
            let value = set
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("m365admin=");
            self.cookie = Some(value.to_string());
            self.csrf = body["csrf"].as_str().map(str::to_string);
        }
        (status, body)
    }
}

#[test]
fn page_and_api_need_the_right_password() {
    let mut p = Page::new();
    let (status, _, headers) = p.call("GET", "/admin/", Value::Null);
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(p.call("GET", "/admin/api/overview", Value::Null).0, 401);
    let (status, body) = p.login("wrong");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("Wrong password."))
    );
    assert_eq!(p.login("pwd").0, 200);
    let (status, body, _) = p.call("GET", "/admin/api/overview", Value::Null);
    assert_eq!(status, 200);
    assert_eq!(body["lights"][0]["name"], "Master PBX");
    assert_eq!(body["lights"][0]["color"], "red");
    // No password anywhere in what was answered.
    assert!(
        p.env
            .responses
            .iter()
            .all(|(_, r)| !String::from_utf8_lossy(&r.body).contains("pwd"))
    );
}

#[test]
fn a_challenge_works_once_and_changes_need_the_csrf_token() {
    let mut p = Page::new();
    let (_, ch, _) = p.call("POST", "/admin/api/challenge", Value::Null);
    let c = ch["challenge"].as_str().unwrap();
    let digest = login::digest("m365", "example.com", "", "", "", None, c, "pwd");
    let attempt = json!({"challenge": c, "digest": digest});
    assert_eq!(p.call("POST", "/admin/api/login", attempt.clone()).0, 200);
    assert_eq!(p.call("POST", "/admin/api/login", attempt).0, 401);
    assert_eq!(p.login("pwd").0, 200);
    let csrf = p.csrf.take();
    let change = json!({"values": {"matching.strip-domain": "true"}});
    assert_eq!(p.call("PUT", "/admin/api/settings", change.clone()).0, 401);
    p.csrf = csrf;
    assert_eq!(p.call("PUT", "/admin/api/settings", change).0, 200);
    assert_eq!(
        p.env
            .kv_text("settings/value/matching.strip-domain")
            .as_deref(),
        Some("true")
    );
}

#[test]
fn sessions_expire_and_failed_logins_are_slowed_down() {
    let mut p = Page::new();
    assert_eq!(p.login("pwd").0, 200);
    p.env.now_ms += 1801 * 1000;
    assert_eq!(p.call("GET", "/admin/api/settings", Value::Null).0, 401);
    for _ in 0..4 {
        assert_eq!(p.login("guess").0, 401);
    }
    // The fifth try, even with the right password, must wait.
    let (status, body) = p.login("pwd");
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("try again in"));
    p.env.now_ms += body["retry_after_s"].as_u64().unwrap() * 1000;
    assert_eq!(p.login("pwd").0, 200);
}

#[test]
fn settings_are_checked_saved_sealed_and_never_shown() {
    let mut p = Page::new();
    p.login("pwd");
    let bad = json!({"values": {
        "presence.client-id": "not-a-guid",
        "presence.tenant": "contoso.onmicrosoft.com",
    }});
    let (status, body, _) = p.call("PUT", "/admin/api/settings", bad);
    assert_eq!(status, 400);
    assert!(
        body["errors"]["presence.client-id"]
            .as_str()
            .unwrap()
            .contains("GUID")
    );
    // Nothing saved: the good value in the same form waits for the bad one to be fixed.
    assert!(p.env.kv_keys("settings/").is_empty());
    let good = json!({"values": {
        "presence.client-id": "0b5e8c0a-1111-4a4a-9b9b-0123456789ab",
        "presence.tenant": "contoso.onmicrosoft.com",
        "calendar.client-secret": "Sup3r-S3cret~value",
    }});
    assert_eq!(p.call("PUT", "/admin/api/settings", good).0, 200);
    let (_, body, _) = p.call("GET", "/admin/api/settings", Value::Null);
    let text = body.to_string();
    assert!(!text.contains("Sup3r"));
    let secret = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "calendar.client-secret")
        .unwrap();
    assert_eq!(secret["set"], true);
    assert!(
        p.env
            .kv
            .values()
            .all(|v| !String::from_utf8_lossy(v).contains("Sup3r"))
    );
    assert!(!p.env.logged("Sup3r"));
    // Empty secret keeps the saved one.
    let keep = json!({"values": {"calendar.client-secret": ""}});
    assert_eq!(p.call("PUT", "/admin/api/settings", keep).0, 200);
    assert_eq!(
        crate::settings::value(&mut p.env, "calendar.client-secret").as_deref(),
        Some("Sup3r-S3cret~value")
    );
}

#[test]
fn an_added_account_signs_in_and_its_password_stays_hidden() {
    let mut p = Page::new();
    p.login("pwd");
    let values = json!({"values": {
        "presence.client-id": "0b5e8c0a-1111-4a4a-9b9b-0123456789ab",
        "presence.tenant": "contoso.onmicrosoft.com",
    }});
    p.call("PUT", "/admin/api/settings", values);
    let (status, body, _) = p.call(
        "POST",
        "/admin/api/accounts",
        json!({"name": "teams1", "username": "nobody"}),
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("User:"));
    let requests = p.env.requests.len();
    let add = json!({"name": "teams1", "username": "svc@contoso.com", "password": "pa$$-W0rd"});
    let (status, body, _) = p.call("POST", "/admin/api/accounts", add);
    assert_eq!(status, 200);
    assert_eq!(body["accounts"][0]["password"], "set");
    assert!(!body.to_string().contains("pa$$"));
    // Re-applied at once: the account asks for a token.
    let token = &p.env.requests[requests..];
    assert!(
        token
            .iter()
            .any(|(_, r)| r.url.ends_with("/oauth2/v2.0/token"))
    );
    assert_eq!(p.c.accounts, vec!["teams1".to_string()]);
    let (_, overview, _) = p.call("GET", "/admin/api/overview", Value::Null);
    assert!(overview.to_string().contains("Teams account teams1"));
    assert_eq!(
        p.call("DELETE", "/admin/api/accounts/teams1", Value::Null)
            .0,
        200
    );
    assert!(p.c.accounts.is_empty());
}

#[test]
fn trace_switches_and_live_log() {
    let mut p = Page::new();
    p.login("pwd");
    let (status, body, _) = p.call(
        "PUT",
        "/admin/api/trace",
        json!({"target": "config", "on": true}),
    );
    assert_eq!(status, 200);
    assert!(
        body["switches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["target"] == "config" && s["on"] == true)
    );
    let (_, log, _) = p.call("GET", "/admin/api/log", Value::Null);
    assert!(log["lines"].to_string().contains("trace switch config on"));
    assert!(log["audit"].is_array());
}

/// The real myApps user login captured in innovaphone.md §2.3 (GOMYAPPS, password `go`).
const MYAPPS_LOGIN: &str = r#"{"mt":"AppLogin","app":"searchapi","domain":"fritz.box","sip":"rico","guid":"f48b06484a8a61015853009033400109",
 "dn":"Schulte, Rico","info":{"appobj":"go-search","appdn":"go-search",
 "appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi","pbx":"pbx-main","cn":"rico",
 "testmode":true,"groups":[],"apps":[]},"digest":"378b82aa7508eb53866e3f4de054cdc0f7b5229e9742593e9359db3845681eb6",
 "pbxObj":"go-search","challenge":"7c4fc2e477f69233"}"#;

fn myapps_attempt(p: &mut Page) -> u16 {
    p.env.random_queue.push_back(0x7c4f_c2e4_77f6_9233);
    let (_, ch, _) = p.call("POST", "/admin/api/challenge", Value::Null);
    assert_eq!(ch["challenge"], "7c4fc2e477f69233");
    p.next += 1;
    let mut req = request("POST", "/admin/api/login", Value::Null, vec![]);
    req.body = MYAPPS_LOGIN.as_bytes().to_vec();
    p.c.handle(&mut p.env, Event::HttpRequest(p.next, req));
    p.env.responses.last().unwrap().1.status
}

#[test]
fn a_myapps_user_of_the_admin_app_object_logs_in() {
    let mut p = Page::new();
    p.env.set_config("instance.domain", "fritz.box");
    p.env.set_config("instance.password", "go");
    // Without admin.app-object no myApps user is an administrator.
    assert_eq!(myapps_attempt(&mut p), 401);
    p.env.set_config("admin.app-object", "another-object");
    assert_eq!(myapps_attempt(&mut p), 401);
    p.env.set_config("admin.app-object", "go-search");
    assert_eq!(myapps_attempt(&mut p), 200);
    assert!(p.env.logged("with myApps user rico"));
}

#[test]
fn the_cookie_is_secure_when_the_page_came_over_https() {
    let mut p = Page::new();
    p.login("pwd");
    p.env.responses.clear();
    p.extra = vec![Header::new("origin", "https://ap.example.com")];
    let plain = p.call("POST", "/admin/api/logout", Value::Null).2;
    assert!(header(&plain, "set-cookie").unwrap().ends_with("; Secure"));
    assert_eq!(p.login("pwd").0, 200);
    let set = p.env.responses.last().unwrap().1.headers.clone();
    assert!(header(&set, "set-cookie").unwrap().contains("; Secure"));
}

#[test]
fn a_flood_of_challenges_is_refused_and_head_has_no_body() {
    let mut p = Page::new();
    for _ in 0..100 {
        assert_eq!(p.call("POST", "/admin/api/challenge", Value::Null).0, 200);
    }
    assert_eq!(p.call("POST", "/admin/api/challenge", Value::Null).0, 429);
    // Unused challenges expire, and logins work again.
    p.env.now_ms += 121_000;
    assert_eq!(p.login("pwd").0, 200);
    p.call("HEAD", "/admin/", Value::Null);
    assert!(p.env.responses.last().unwrap().1.body.is_empty());
}

#[test]
fn matching_preview_names_every_user_and_exports_csv() {
    use crate::matching::{Matched, Problem, Reason};
    use crate::pbx::users::{self, UserRow};
    let mut p = Page::new();
    p.login("pwd");
    let row = |guid: &str, h323: &str, dn: &str| UserRow {
        guid: guid.into(),
        h323: h323.into(),
        dn: dn.into(),
        loc: "master".into(),
        ..Default::default()
    };
    users::put(&mut p.env, "master", &row("g1", "ada", "Ada Berg"));
    users::put(&mut p.env, "master", &row("g2", "=cmd", "Eve Formula"));
    let m = Matched {
        id: "entra-1".into(),
        guid: "g1".into(),
        loc: "master".into(),
        name: "ada".into(),
    };
    crate::store::set_json(&mut p.env, "match/user/entra-1", &m);
    let problem = Problem {
        guid: "g2".into(),
        name: "=cmd".into(),
        reason: Reason::NoCandidate,
        candidates: vec![],
    };
    crate::store::set_json(&mut p.env, "match/problem/g2", &problem);
    let (_, body, _) = p.call("GET", "/admin/api/matching", Value::Null);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["name"], "Ada Berg");
    assert_eq!(rows[1]["entra_id"], "entra-1");
    assert_eq!(rows[0]["reason"], "No Entra user has this name");
    // Search looks at values only.
    p.next += 1;
    let mut req = request(
        "GET",
        "/admin/api/matching",
        Value::Null,
        vec![Header::new(
            "cookie",
            &format!("m365admin={}", p.cookie.clone().unwrap()),
        )],
    );
    req.query = "q=Ada%20B".into();
    p.c.handle(&mut p.env, Event::HttpRequest(p.next, req.clone()));
    let found: Value = serde_json::from_slice(&p.env.responses.last().unwrap().1.body).unwrap();
    assert_eq!(found["rows"].as_array().unwrap().len(), 1);
    req.query = "q=status".into();
    p.next += 1;
    p.c.handle(&mut p.env, Event::HttpRequest(p.next, req.clone()));
    let none: Value = serde_json::from_slice(&p.env.responses.last().unwrap().1.body).unwrap();
    assert!(none["rows"].as_array().unwrap().is_empty());
    req.query = "format=csv".into();
    p.next += 1;
    p.c.handle(&mut p.env, Event::HttpRequest(p.next, req));
    let csv = String::from_utf8(p.env.responses.last().unwrap().1.body.clone()).unwrap();
    assert!(csv.starts_with("name,h323,pbx_user,"));
    assert!(csv.contains("\"Ada Berg\",\"ada\""));
    // A value a spreadsheet would run as a formula is defused.
    assert!(csv.contains("\"'=cmd\""));
}
