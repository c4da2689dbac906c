//! Shared test setup: a small tenant on a manual clock.

use std::sync::Arc;

use fake_m365::clock::TEST_EPOCH_MS;
use fake_m365::http::pct_encode;
use fake_m365::{
    AppReg, Config, Fake, Handled, ManualClock, Outbound, OutboundResult, Request, Response, User,
    UserSpec,
};
use serde_json::{Value, json};

pub struct T {
    pub fake: Fake,
    pub clock: ManualClock,
    /// Public client (ROPC/device code) with delegated scopes.
    pub app: String,
    /// Confidential daemon with application roles.
    pub daemon: String,
    pub daemon_secret: String,
    /// Communication (service) user.
    pub svc: User,
    pub alice: User,
    pub bob: User,
    /// Unlicensed user.
    pub carol: User,
}

pub const SVC_PASSWORD: &str = "P@ss&w+rd%! #=<";

pub fn setup_with(cfg: Config) -> T {
    let clock = ManualClock::new(TEST_EPOCH_MS);
    let mut fake = Fake::new(cfg, Arc::new(clock.clone()));
    let app = "11111111-1111-1111-1111-111111111111".to_string();
    let daemon = "22222222-2222-2222-2222-222222222222".to_string();
    let daemon_secret = "s3cr3t+/=&value~".to_string();
    fake.add_app(AppReg {
        client_id: app.clone(),
        display_name: "connector".into(),
        public_client: true,
        delegated: [
            "Presence.Read.All",
            "Presence.ReadWrite",
            "User.Read.All",
            "Calendars.Read",
            "Contacts.Read",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    fake.add_app(AppReg {
        client_id: daemon.clone(),
        display_name: "daemon".into(),
        secret: Some(daemon_secret.clone()),
        roles: [
            "Presence.ReadWrite.All",
            "User.Read.All",
            "Calendars.Read",
            "Contacts.Read",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let svc = fake.add_user(UserSpec {
        display_name: "PBX Service".into(),
        user_principal_name: Some("pbx-svc@contoso.com".into()),
        password: Some(SVC_PASSWORD.into()),
        ..Default::default()
    });
    let alice = fake.add_user(UserSpec {
        display_name: "Adele Vance".into(),
        user_principal_name: Some("adelev@contoso.com".into()),
        ..Default::default()
    });
    let bob = fake.add_user(UserSpec {
        display_name: "Jürgen Müller".into(),
        user_principal_name: Some("juergen@contoso.com".into()),
        ..Default::default()
    });
    let carol = fake.add_user(UserSpec {
        display_name: "Carol NoTeams".into(),
        user_principal_name: Some("carol@contoso.com".into()),
        mail: Some(String::new()),
        teams: Some(false),
        ..Default::default()
    });
    T {
        fake,
        clock,
        app,
        daemon,
        daemon_secret,
        svc,
        alice,
        bob,
        carol,
    }
}

pub fn setup() -> T {
    setup_with(Config::default())
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct_encode(k), pct_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl T {
    pub fn tenant(&self) -> String {
        self.fake.tenant_id().to_string()
    }

    pub fn token_raw(&mut self, tenant: &str, body: &str) -> Response {
        let r = Request::new("POST", &format!("/{tenant}/oauth2/v2.0/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec());
        self.fake.handle(r).unwrap_response()
    }

    pub fn token(&mut self, pairs: &[(&str, &str)]) -> Response {
        let t = self.tenant();
        self.token_raw(&t, &form(pairs))
    }

    /// Delegated token of the service user via ROPC.
    pub fn svc_token(&mut self) -> String {
        let app = self.app.clone();
        let r = self.token(&[("client_id", &app), ("grant_type", "password"), ("username", "pbx-svc@contoso.com"), ("password", SVC_PASSWORD), ("scope", "https://graph.microsoft.com/Presence.Read.All https://graph.microsoft.com/User.Read.All https://graph.microsoft.com/Calendars.Read https://graph.microsoft.com/Contacts.Read offline_access")]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.body_json()["access_token"].as_str().unwrap().to_string()
    }

    /// Application token of the daemon via client credentials.
    pub fn app_token(&mut self) -> String {
        let (d, s) = (self.daemon.clone(), self.daemon_secret.clone());
        let r = self.token(&[
            ("client_id", &d),
            ("client_secret", &s),
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.body_json()["access_token"].as_str().unwrap().to_string()
    }

    pub fn get(&mut self, tok: &str, path: &str) -> Response {
        self.fake
            .handle(Request::new("GET", &format!("/v1.0{path}")).bearer(tok))
            .unwrap_response()
    }

    pub fn get_h(&mut self, tok: &str, path: &str, h: (&str, &str)) -> Response {
        self.fake
            .handle(
                Request::new("GET", &format!("/v1.0{path}"))
                    .bearer(tok)
                    .header(h.0, h.1),
            )
            .unwrap_response()
    }

    pub fn send(&mut self, tok: &str, method: &str, path: &str, body: Value) -> Handled {
        self.fake.handle(
            Request::new(method, &format!("/v1.0{path}"))
                .bearer(tok)
                .json(&body),
        )
    }

    pub fn post(&mut self, tok: &str, path: &str, body: Value) -> Response {
        self.send(tok, "POST", path, body).unwrap_response()
    }

    /// Answer every pending outbound with `f`, returning them.
    pub fn answer_all(&mut self, mut f: impl FnMut(&Outbound) -> OutboundResult) -> Vec<Outbound> {
        let effects = self.fake.take_effects();
        for e in &effects {
            let r = f(e);
            self.fake.outbound_result(e.id, r);
        }
        effects
    }

    /// Create a subscription, answering the handshake correctly; returns the final response.
    pub fn subscribe(&mut self, tok: &str, body: Value) -> Response {
        match self.send(tok, "POST", "/subscriptions", body) {
            Handled::Response(r) => r,
            Handled::Pending(ticket) => {
                self.answer_all(echo_validation);
                let done = self.fake.take_completed();
                done.into_iter()
                    .find(|(t, _)| *t == ticket)
                    .map(|x| x.1)
                    .expect("completed")
            }
            Handled::Hang => panic!("hang"),
        }
    }
}

/// A correct webhook: echo the decoded validation token, ack notifications with 202.
pub fn echo_validation(e: &Outbound) -> OutboundResult {
    if let Some(q) = e.url.split_once("validationToken=") {
        let tok = fake_m365::http::pct_decode(q.1, false);
        OutboundResult::Status {
            status: 200,
            content_type: Some("text/plain; charset=utf-8".into()),
            body: tok.into_bytes(),
            elapsed_ms: 5,
        }
    } else {
        OutboundResult::Status {
            status: 202,
            content_type: None,
            body: vec![],
            elapsed_ms: 5,
        }
    }
}

pub fn presence_sub_body(ids: &[&str]) -> Value {
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    json!({"changeType": "updated", "notificationUrl": "https://connector.example/notify?tenant=contoso",
           "resource": format!("/communications/presences?$filter=id in ({list})"),
           "expirationDateTime": fake_m365::clock::iso_z(fake_m365::clock::TEST_EPOCH_MS + 3_600_000), "clientState": "secret-state"})
}
