//! The token manager against the project's independent fake Entra ID (`tests/fakes/m365`),
//! both sans-IO and in-process: requests the core builds are handed to the fake's router and
//! its answers fed back as completions. Checks the form encoding, grants, AADSTS handling and
//! rotation against a second reading of the spec.

use std::sync::Arc;

use fake_m365::{AppReg, Config, Fake, Handled, ManualClock, Request, UserSpec};
use microsoft365::env::Env;
use microsoft365::event::{HttpError, HttpResponse};
use microsoft365::graph::aadsts::Action;
use microsoft365::graph::token::{self, Client};
use microsoft365::graph::tokens::{AuthState, SignIn, TokenEvent, Tokens};
use microsoft365::graph::{presence, users};
use microsoft365::testenv::TestEnv;

const START_MS: u64 = 1_750_000_000_000;
const PASSWORD: &str = "P@ss&w+rd%! #<=*()";

struct World {
    fake: Fake,
    clock: ManualClock,
    env: TestEnv,
    tokens: Tokens,
    client: Client,
    answered: usize,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new(START_MS as i64);
        let mut fake = Fake::new(Config::default(), Arc::new(clock.clone()));
        fake.add_app(AppReg {
            client_id: "f1-client".into(),
            display_name: "Connector presence".into(),
            public_client: true,
            delegated: vec!["Presence.Read.All".into(), "User.Read.All".into()],
            ..Default::default()
        });
        let spec = |name: &str, password: &str, mfa: bool| UserSpec {
            display_name: name.into(),
            user_principal_name: Some(format!("{name}@contoso.onmicrosoft.com")),
            mail: None,
            password: Some(password.into()),
            teams: Some(true),
            id: None,
            account_enabled: None,
            mfa_required: mfa,
            on_premises_sam_account_name: None,
        };
        fake.add_user(spec("svc1", PASSWORD, false));
        fake.add_user(spec("svcmfa", "Passw0rd!", true));
        let mut env = TestEnv::new();
        env.now_ms = START_MS;
        let client = Client {
            login_base: token::DEFAULT_LOGIN_BASE.into(),
            tenant: fake.tenant_id().to_string(),
            client_id: "f1-client".into(),
            client_secret: None,
        };
        World {
            fake,
            clock,
            env,
            tokens: Tokens::new(),
            client,
            answered: 0,
        }
    }

    fn add(&mut self, name: &str, sign_in: SignIn) {
        let scope = token::delegated_scope(token::DEFAULT_GRAPH_RESOURCE);
        self.tokens
            .add(&mut self.env, name, self.client.clone(), sign_in, &scope);
    }

    /// Answers every request started since the last call; returns the manager's events.
    fn serve(&mut self) -> Vec<TokenEvent> {
        let mut events = Vec::new();
        while self.answered < self.env.requests.len() {
            let (id, req) = self.env.requests[self.answered].clone();
            self.answered += 1;
            let target = req
                .url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap();
            let mut r = Request::new(&req.method, &target).body(req.body.clone());
            for h in &req.headers {
                r = r.header(&h.name, &h.value);
            }
            let result = match self.fake.handle(r) {
                Handled::Response(resp) => Ok(HttpResponse {
                    status: resp.status,
                    headers: vec![],
                    body: resp.body,
                }),
                _ => Err(HttpError::Timeout),
            };
            events.extend(
                self.tokens
                    .on_response(&mut self.env, id, &result)
                    .expect("the manager's request"),
            );
        }
        events
    }

    /// Sends one Graph request to the fake and returns its answer.
    fn call(&mut self, req: microsoft365::event::HttpRequest) -> HttpResponse {
        let target = req
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap();
        let mut r = Request::new(&req.method, &target).body(req.body.clone());
        for h in &req.headers {
            r = r.header(&h.name, &h.value);
        }
        match self.fake.handle(r) {
            Handled::Response(resp) => HttpResponse {
                status: resp.status,
                headers: resp
                    .headers
                    .iter()
                    .map(|(n, v)| microsoft365::event::Header::new(n, v))
                    .collect(),
                body: resp.body,
            },
            _ => panic!("no answer"),
        }
    }

    /// Fires the earliest timer after moving both clocks to it.
    fn fire_next_timer(&mut self) -> Vec<TokenEvent> {
        let (id, after, tag) = self
            .env
            .timers
            .iter()
            .min_by_key(|(_, (after, _))| *after)
            .map(|(id, (after, tag))| (*id, *after, tag.clone()))
            .expect("a timer");
        self.env.timers.remove(&id);
        self.env.now_ms += after;
        self.clock.advance(after as i64);
        let mut ev = self.tokens.on_timer(&mut self.env, id, &tag).unwrap();
        ev.extend(self.serve());
        ev
    }
}

#[test]
fn password_with_special_characters_signs_in_and_rotates() {
    let mut w = World::new();
    w.add(
        "teams1",
        SignIn::Password {
            username: "svc1@contoso.onmicrosoft.com".into(),
            password: PASSWORD.into(),
        },
    );
    w.tokens.start(&mut w.env, "teams1");
    let ev = w.serve();
    assert_eq!(
        ev,
        vec![TokenEvent::Ready {
            account: "teams1".into()
        }]
    );
    let first = w
        .tokens
        .access_token("teams1", w.env.now_ms)
        .unwrap()
        .to_string();
    let sealed = w.env.kv.get("token/teams1/refresh").unwrap().clone();
    let rt1 = w.env.unseal(&sealed).unwrap();

    // The refresh timer fires before expiry and a refresh-token grant rotates both tokens.
    let ev = w.fire_next_timer();
    assert_eq!(
        ev,
        vec![TokenEvent::Ready {
            account: "teams1".into()
        }]
    );
    let last_body = String::from_utf8(w.env.requests.last().unwrap().1.body.clone()).unwrap();
    assert!(last_body.contains("grant_type=refresh_token"));
    let second = w.tokens.access_token("teams1", w.env.now_ms).unwrap();
    assert_ne!(first, second);
    let sealed = w.env.kv.get("token/teams1/refresh").unwrap().clone();
    assert_ne!(w.env.unseal(&sealed).unwrap(), rt1);
}

#[test]
fn wrong_password_and_mfa_get_actionable_errors() {
    let mut w = World::new();
    w.add(
        "bad",
        SignIn::Password {
            username: "svc1@contoso.onmicrosoft.com".into(),
            password: "P@ss&w+rd%! #<=*(".into(),
        },
    );
    w.add(
        "mfa",
        SignIn::Password {
            username: "svcmfa@contoso.onmicrosoft.com".into(),
            password: "Passw0rd!".into(),
        },
    );
    w.tokens.start(&mut w.env, "bad");
    w.tokens.start(&mut w.env, "mfa");
    w.serve();
    match w.tokens.state("bad") {
        Some(AuthState::Failed(e)) => {
            assert!(e.codes.contains(&50126), "{e:?}");
            assert_eq!(e.action, Action::FixConfiguration);
        }
        other => panic!("{other:?}"),
    }
    match w.tokens.state("mfa") {
        Some(AuthState::Failed(e)) => {
            assert!(e.codes.contains(&50076), "{e:?}");
            assert_eq!(e.action, Action::SignInAgain);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn device_code_signs_in_an_mfa_account() {
    let mut w = World::new();
    w.add("mfa", SignIn::DeviceCode);
    w.tokens.start(&mut w.env, "mfa");
    let ev = w.serve();
    let user_code = match &ev[..] {
        [TokenEvent::DeviceCode { user_code, .. }] => user_code.clone(),
        other => panic!("{other:?}"),
    };
    // Not yet approved: polling continues.
    assert!(w.fire_next_timer().is_empty());
    assert!(matches!(
        w.tokens.state("mfa"),
        Some(AuthState::AwaitingDeviceSignIn { .. })
    ));
    assert!(
        w.fake
            .approve_device_code(&user_code, "svcmfa@contoso.onmicrosoft.com")
    );
    let mut ready = false;
    for _ in 0..5 {
        if w.fire_next_timer().contains(&TokenEvent::Ready {
            account: "mfa".into(),
        }) {
            ready = true;
            break;
        }
    }
    assert!(ready, "{:?}", w.tokens.state("mfa"));
    assert!(w.env.kv.contains_key("token/mfa/refresh"));
}

#[test]
fn users_are_paged_and_presence_read_in_chunks() {
    let mut w = World::new();
    w.fake.populate(1_200, 3);
    w.add(
        "teams1",
        SignIn::Password {
            username: "svc1@contoso.onmicrosoft.com".into(),
            password: PASSWORD.into(),
        },
    );
    w.tokens.start(&mut w.env, "teams1");
    w.serve();
    let token = w
        .tokens
        .access_token("teams1", w.env.now_ms)
        .unwrap()
        .to_string();

    let mut all = Vec::new();
    let mut req = users::list_request(token::DEFAULT_GRAPH_RESOURCE, &token);
    let mut pages = 0;
    loop {
        let page = users::parse_page(&w.call(req)).unwrap();
        pages += 1;
        all.extend(page.users);
        match page.next_link {
            Some(link) => req = users::next_request(&link, &token),
            None => break,
        }
    }
    assert!(pages >= 2, "1,202 users need two pages of 999");
    assert_eq!(all.len(), 1_202);
    assert!(all.iter().any(|u| u.teams));
    let svc = all
        .iter()
        .find(|u| u.user_principal_name == "svc1@contoso.onmicrosoft.com")
        .unwrap();
    assert!(svc.teams);

    let ids: Vec<String> = all
        .iter()
        .filter(|u| u.teams)
        .map(|u| u.id.clone())
        .collect();
    let mut seen = 0;
    for req in presence::requests(token::DEFAULT_GRAPH_RESOURCE, &token, &ids) {
        let p = presence::parse(&w.call(req)).unwrap();
        assert!(p.iter().all(|p| !p.availability.is_empty()));
        seen += p.len();
    }
    assert_eq!(seen, ids.len());
}
