//! The in-process world both presence tests drive: the connector core in a `TestEnv`, the
//! fake Microsoft 365 and the fake PBX, in virtual time. It only shuttles bytes and time; each
//! test file adds what its feature needs (settings, app registrations) before `start`.
// Each test crate uses a different part of the harness.
#![allow(dead_code)]

pub mod pbx;

use std::collections::BTreeMap;
use std::sync::Arc;

use fake_m365::{AppReg, Config, Fake, Handled, OutboundResult, Request, UserSpec};
use fake_pbx::login::AppObject;
use fake_pbx::pbx::{NodeConfig, Output, default_apis};
use fake_pbx::users::User;
use microsoft365::event::{
    Header, HttpError, HttpResponse, InboundRequest, InitInfo, RequestId, WsClosed, WsDirection,
    WsFrame, WsOpen,
};
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event};

pub const START_MS: u64 = 1_750_000_000_000;
pub const LICENCE: &str = "App(innovaphone-microsoft365)";
pub const PUBLIC: &str = "https://connector.example.com";
pub const PREFIX: &str = "https://connector.example.com/example.com/m365";

pub struct World {
    pub fake: Fake,
    pub mclock: fake_m365::ManualClock,
    pub pbx: fake_pbx::Pbx,
    pub pclock: fake_pbx::ManualClock,
    pub env: TestEnv,
    pub c: Connector,
    pub answered: usize,
    pub tickets: BTreeMap<u64, RequestId>,
    pub timers: BTreeMap<u64, (u64, String)>,
    pub inbound: u64,
    /// Graph's answers carry no `Date` header (as in the simulator's world).
    pub no_date: bool,
}

pub fn node(name: &str) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        dns: format!("{name}.example.com"),
        app: AppObject {
            sip: "m365".into(),
            dn: "Microsoft 365 Connector".into(),
            guid: "3954ae7854c96301c9dd009033400109".into(),
            url: "https://ap.example.com/example.com/m365/innovaphone-microsoft365".into(),
            password: "pwd".into(),
            lics: None,
            apps: vec![],
        },
        dial_url: None,
        apis: default_apis(),
        version: "14r2".into(),
        build: "143104".into(),
    }
}

pub fn person(name: &str) -> UserSpec {
    UserSpec {
        display_name: name.into(),
        user_principal_name: Some(format!(
            "{}@contoso.onmicrosoft.com",
            name.replace(' ', ".").to_lowercase()
        )),
        mail: None,
        password: Some("Passw0rd!".into()),
        teams: Some(true),
        id: None,
        account_enabled: None,
        mfa_required: false,
        on_premises_sam_account_name: None,
    }
}

pub fn target(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_default()
}

impl World {
    /// `people` exist on both sides (PBX cn = Entra displayName); `unlicensed` lack the PBX
    /// licence; `accounts` service accounts sign in with passwords.
    pub fn new(people: &[String], unlicensed: &[&str], accounts: usize) -> Self {
        let mclock = fake_m365::ManualClock::new(START_MS as i64);
        let cfg = Config {
            delivery_latency_ms: 0,
            ..Default::default()
        };
        let mut fake = Fake::new(cfg, Arc::new(mclock.clone()));
        fake.add_app(AppReg {
            client_id: "f1-client".into(),
            display_name: "Connector presence".into(),
            public_client: true,
            delegated: vec!["Presence.Read.All".into(), "User.Read.All".into()],
            ..Default::default()
        });
        let pclock = fake_pbx::ManualClock::new(START_MS);
        let mut pbx = fake_pbx::Pbx::new("example.com", Arc::new(pclock.clone()), 7);
        pbx.set_licence(LICENCE, 100_000);
        let mut rows = Vec::new();
        for (i, p) in people.iter().enumerate() {
            fake.add_user(person(p));
            let mut u = User::new(
                &format!("{:032x}", i + 1),
                &p.replace(' ', ".").to_lowercase(),
                p,
                if i % 3 == 2 { "slave" } else { "master" },
            );
            if !unlicensed.contains(&p.as_str()) {
                u.lics.push(LICENCE.into());
            }
            rows.push(u);
        }
        pbx.add_users(rows);
        pbx.add_node(node("master"));
        pbx.add_node(node("slave"));
        let mut list = Vec::new();
        for i in 0..accounts {
            let name = format!("Service Account {i}");
            fake.add_user(UserSpec {
                teams: Some(true),
                ..person(&name)
            });
            list.push(serde_json::json!({
                "name": format!("teams{i}"),
                "username": format!("service.account.{i}@contoso.onmicrosoft.com"),
                "password": "Passw0rd!",
            }));
        }
        let mut env = TestEnv::new();
        env.now_ms = START_MS;
        env.set_config("presence.tenant", fake.tenant_id());
        env.set_config("presence.client-id", "f1-client");
        env.set_config(
            "presence.accounts",
            &serde_json::Value::from(list).to_string(),
        );
        env.set_config("presence.public-url", PUBLIC);
        World {
            fake,
            mclock,
            pbx,
            pclock,
            env,
            c: Connector::new(),
            answered: 0,
            tickets: BTreeMap::new(),
            timers: BTreeMap::new(),
            inbound: 1_000_000,
            no_date: false,
        }
    }

    pub fn start(&mut self) {
        self.c = Connector::new();
        self.c
            .handle(&mut self.env, Event::Init(InitInfo::default_start()));
        self.pbx.tick();
        self.pump();
        // Let licence answers and replication settle.
        self.advance(5_000);
    }

    /// A host restart: sockets, timers and requests of the old guest are gone, KV stays.
    pub fn restart(&mut self) {
        self.pbx.kill("master");
        self.pbx.kill("slave");
        let _ = self.pbx.drain();
        self.env.sent.clear();
        self.env.timers.clear();
        self.timers.clear();
        self.tickets.clear();
        self.answered = self.env.requests.len();
        self.pbx.restore("master");
        self.pbx.restore("slave");
        self.set_time(self.env.now_ms + 60_000);
        self.start();
    }

    /// A Graph answer as the network delivers it, with Microsoft's `Date`.
    pub fn graph_response(&self, resp: fake_m365::Response) -> HttpResponse {
        let mut headers: Vec<Header> = resp
            .headers
            .iter()
            .map(|(n, v)| Header::new(n, v))
            .collect();
        if !self.no_date {
            headers.push(Header::new(
                "Date",
                &microsoft365::graph::subscriptions::http_date(self.fake.now() as u64),
            ));
        }
        HttpResponse {
            status: resp.status,
            headers,
            body: resp.body,
        }
    }

    /// Posts to the connector as Graph would; returns status, content type and body.
    pub fn post_to_connector(
        &mut self,
        url: &str,
        body: Vec<u8>,
    ) -> (u16, Option<String>, Vec<u8>) {
        let rest = url.strip_prefix(PREFIX).expect("our notification URL");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        self.inbound += 1;
        let id = self.inbound;
        self.c.handle(
            &mut self.env,
            Event::HttpRequest(
                id,
                InboundRequest {
                    method: "POST".into(),
                    path: path.into(),
                    query: query.into(),
                    headers: vec![Header::new("content-type", "application/json")],
                    body,
                    peer: "52.1.2.3:443".into(),
                },
            ),
        );
        let (_, r) = self
            .env
            .responses
            .iter()
            .find(|(i, _)| *i == id)
            .cloned()
            .expect("answered in the same event");
        let ct = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map(|h| h.value.clone());
        (r.status, ct, r.body)
    }

    /// Shuttles PBX frames, Graph calls, webhooks and completions until all is quiet.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            // PBX side.
            let outs = self.pbx.drain();
            let from_guest = std::mem::take(&mut self.env.sent);
            let closed = std::mem::take(&mut self.env.closed);
            busy |= !outs.is_empty() || !from_guest.is_empty() || !closed.is_empty();
            for (ws, _, _) in closed {
                self.pbx.on_closed(ws);
            }
            for (ws, f) in from_guest {
                if let WsFrame::Text(t) = f {
                    self.pbx.on_frame(ws, &t);
                }
            }
            for o in outs {
                match o {
                    Output::Dial { conn, .. } => {
                        self.c.handle(
                            &mut self.env,
                            Event::WsOpen(WsOpen {
                                id: conn,
                                direction: WsDirection::Inbound,
                                path: "/innovaphone-microsoft365".into(),
                                headers: vec![],
                                peer: "127.0.0.1:1".into(),
                            }),
                        );
                        self.pbx.on_connected(conn);
                    }
                    Output::Send { conn, text } => {
                        self.c
                            .handle(&mut self.env, Event::WsMessage(conn, WsFrame::Text(text)));
                    }
                    Output::Close { conn } | Output::CloseMidMessage { conn } => {
                        self.c.handle(
                            &mut self.env,
                            Event::WsClosed(WsClosed {
                                id: conn,
                                code: 1006,
                                reason: String::new(),
                            }),
                        );
                        self.pbx.on_closed(conn);
                    }
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }
            // Graph calls.
            while self.answered < self.env.requests.len() {
                busy = true;
                let (id, req) = self.env.requests[self.answered].clone();
                self.answered += 1;
                let mut r = Request::new(&req.method, &target(&req.url)).body(req.body.clone());
                for h in &req.headers {
                    r = r.header(&h.name, &h.value);
                }
                match self.fake.handle(r) {
                    Handled::Response(resp) => {
                        let resp = self.graph_response(resp);
                        self.c
                            .handle(&mut self.env, Event::HttpResponse(id, Ok(resp)));
                    }
                    Handled::Pending(ticket) => {
                        self.tickets.insert(ticket, id);
                    }
                    Handled::Hang => {
                        self.c.handle(
                            &mut self.env,
                            Event::HttpResponse(id, Err(HttpError::Timeout)),
                        );
                    }
                }
            }
            // Webhooks (validation, notifications, lifecycle).
            for o in self.fake.take_effects() {
                busy = true;
                let (status, content_type, body) = self.post_to_connector(&o.url, o.body.clone());
                self.fake.outbound_result(
                    o.id,
                    OutboundResult::Status {
                        status,
                        content_type,
                        body,
                        elapsed_ms: 5,
                    },
                );
            }
            for (ticket, resp) in self.fake.take_completed() {
                busy = true;
                if let Some(id) = self.tickets.remove(&ticket) {
                    let resp = self.graph_response(resp);
                    self.c
                        .handle(&mut self.env, Event::HttpResponse(id, Ok(resp)));
                }
            }
            // Timers the connector set are due relative to when they were set.
            for (id, (after, tag)) in &self.env.timers {
                self.timers
                    .entry(*id)
                    .or_insert((self.env.now_ms + after, tag.clone()));
            }
            if !busy {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Moves every clock forward, firing due timers in order.
    pub fn advance(&mut self, ms: u64) {
        // What the fakes queued so far happens now, not at the end of the interval.
        self.pbx.tick();
        self.pump();
        let end = self.env.now_ms + ms;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(id, _)| self.env.timers.contains_key(id))
                .map(|(id, (due, tag))| (*due, *id, tag.clone()))
                .filter(|(due, _, _)| *due <= end)
                .min();
            let Some((due, id, tag)) = next else {
                break;
            };
            self.set_time(due.max(self.env.now_ms));
            self.env.timers.remove(&id);
            self.timers.remove(&id);
            self.c.handle(&mut self.env, Event::Timer(id, tag));
            self.pump();
        }
        self.set_time(end);
        self.pbx.tick();
        self.pump();
    }

    pub fn set_time(&mut self, ms: u64) {
        let d = ms - self.env.now_ms;
        self.env.now_ms = ms;
        self.mclock.advance(d as i64);
        self.pclock.advance(d);
    }

    pub fn pbx_activity(&self, guid_index: usize) -> Option<String> {
        self.pbx
            .stored_presence(&format!("{:032x}", guid_index + 1))
            .iter()
            .find(|p| p.contact == "teams:")
            .map(|p| p.activity.clone())
    }

    pub fn status(&mut self) -> serde_json::Value {
        self.inbound += 1;
        let id = self.inbound;
        self.c.handle(
            &mut self.env,
            Event::HttpRequest(
                id,
                InboundRequest {
                    method: "GET".into(),
                    path: "/status".into(),
                    query: String::new(),
                    headers: vec![],
                    body: vec![],
                    peer: "127.0.0.1:2".into(),
                },
            ),
        );
        let body = &self.env.responses.last().unwrap().1.body;
        serde_json::from_slice(body).unwrap()
    }
}
