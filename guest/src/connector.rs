//! The connector's heart: `Connector::handle(env, event)` dispatches one event to the module
//! that owns it. It keeps no I/O of its own; everything goes through [`Env`].

use crate::calendar::{self, CalendarSettings, CalendarSync};
use crate::contact_search::{self, ContactSearch};
use crate::env::{Env, Level, target};
use crate::event::{Event, HttpResponse, InitInfo, WsDirection};
use crate::graph::tokens::{TokenEvent, Tokens};
use crate::http::{self, StatusInput};
use crate::pbx::{Pbx, PbxEvent};
use crate::presence_in::sync::{self, PresenceSync};
use crate::presence_out::{self, PresenceOut};
use crate::settings::{PresenceSettings, Settings};
use crate::store;

/// The whole guest state of one instance.
#[derive(Debug, Default)]
pub struct Connector {
    started_ms: u64,
    initialised: bool,
    /// The PBX connections (AppWebsocket).
    pub pbx: Pbx,
    /// Events from the PBX side of the last handled event (features will consume them).
    pub pbx_events: Vec<PbxEvent>,
    /// Access tokens of the configured accounts.
    pub tokens: Tokens,
    /// Names of the Teams accounts (F1) whose tokens are kept.
    pub accounts: Vec<String>,
    /// Token events of the last handled event (features will consume them).
    pub token_events: Vec<TokenEvent>,
    /// Teams -> PBX presence (F1), when configured.
    pub presence: Option<PresenceSync>,
    /// Contact search from the Phone App (F4), when configured.
    pub contact_search: Option<ContactSearch>,
    /// Calendar presence (F3), when configured.
    pub calendar: Option<CalendarSync>,
    /// PBX -> Teams presence (F2), when configured.
    pub presence_out: Option<PresenceOut>,
}

impl Connector {
    /// A connector that has not seen `init` yet.
    pub fn new() -> Self {
        Connector::default()
    }

    /// Handles one event. Never fails: bad input is logged and ignored, because an error
    /// would discard the whole batch of events the host delivered with it.
    pub fn handle(&mut self, env: &mut impl Env, event: Event) {
        // Every line logged while handling goes to the admin page's live log too.
        let env = &mut crate::admin::LogTap(env);
        let kind = event.kind();
        if !self.initialised && !matches!(event, Event::Init(_)) {
            // A host must send init first; recover rather than lose the event.
            env.log(
                Level::Warn,
                target::APP,
                &format!("{kind} before init; initialising now"),
            );
            self.init(env, &InitInfo::default_start());
        }
        store::count_event(env, kind);
        env.counter_add("guest_events_total", &[("kind", kind)], 1);
        if let Event::HttpResponse(_, result) = &event {
            crate::metrics::http_completed(env, result);
        }
        self.pbx_events.clear();
        self.token_events.clear();
        // F1 re-matches users on its timers; the calendar then looks at the matches again.
        let f1_timer =
            matches!(&event, Event::Timer(_, tag) if tag.starts_with(sync::TIMER_PREFIX));
        match event {
            Event::Init(info) => self.init(env, &info),
            Event::HttpRequest(id, req)
                if req.method == "POST"
                    && matches!(
                        req.path.trim_end_matches('/'),
                        "/subscriptions" | "/lifecycle"
                    ) =>
            {
                let now = env.now_ms();
                store::set_u64(env, crate::admin::LAST_NOTIFICATION_KEY, now);
                let resp = match &mut self.presence {
                    Some(p) => p.on_notification(env, &mut self.pbx, &self.tokens, &req),
                    // Not configured: nothing of ours can be notified; acknowledge and drop.
                    None => HttpResponse {
                        status: 202,
                        headers: vec![],
                        body: vec![],
                    },
                };
                env.respond(id, resp);
            }
            Event::HttpRequest(id, req) if CalendarSync::is_notification(&req) => {
                let resp = match &mut self.calendar {
                    Some(c) => c.on_notification(env, &self.tokens, &req),
                    // Not configured: nothing of ours can be notified; acknowledge and drop.
                    None => HttpResponse {
                        status: 202,
                        headers: vec![],
                        body: vec![],
                    },
                };
                env.respond(id, resp);
            }
            Event::HttpRequest(id, req) => {
                let presence = self.presence.as_ref().map(|p| p.status(env));
                let calendar = self.calendar.as_ref().map(|c| c.status(env));
                let status = StatusInput {
                    version: &crate::version(),
                    started_ms: self.started_ms,
                    pbx: &self.pbx,
                    tokens: &self.tokens,
                    accounts: &self.accounts,
                    presence,
                    calendar,
                    presence_out: self.presence_out.as_ref().map(|p| p.status(&self.tokens)),
                    contact_search: self.contact_search.as_ref().map(|c| c.status(env.now_ms())),
                };
                if crate::admin::is_admin_path(&req.path) {
                    let outcome = crate::admin::route(env, &req, &status);
                    env.respond(id, outcome.response);
                    if outcome.reconfigure {
                        self.reconfigure(env);
                    }
                } else {
                    let resp = http::route(env, &req, &status);
                    env.respond(id, resp);
                }
            }
            Event::HttpResponse(id, result) => match self.tokens.on_response(env, id, &result) {
                Some(events) => self.token_events = events,
                None if self.presence.as_mut().is_some_and(|p| {
                    p.on_response(env, &mut self.pbx, &self.tokens, id, &result)
                }) => {}
                None if self.calendar.as_mut().is_some_and(|c| {
                    c.on_response(env, &mut self.pbx, &self.tokens, id, &result)
                }) => {}
                None if self
                    .contact_search
                    .as_mut()
                    .is_some_and(|c| c.on_response(env, id, &result)) => {}
                None if self
                    .presence_out
                    .as_mut()
                    .is_some_and(|p| p.on_response(env, &self.tokens, id, &result)) => {}
                // A completion nobody waits for (e.g. started by a previous guest version).
                None => env.log(
                    Level::Debug,
                    target::APP,
                    &format!("completion of request {id} ignored: nobody waits for it"),
                ),
            },
            Event::WsOpen(open) => match open.direction {
                WsDirection::Inbound => self.pbx.open(env, &open),
                WsDirection::Outbound => {
                    // The guest dials nothing yet: a stray outbound socket is not ours to keep.
                    env.log(
                        Level::Debug,
                        target::APP,
                        &format!("outbound WebSocket {} not used; closing", open.id),
                    );
                    env.ws_close(open.id, 1000, "not used");
                }
            },
            Event::WsMessage(ws, frame) => {
                let events = self.pbx.message(env, ws, &frame);
                self.pbx_events = events;
            }
            Event::WsClosed(closed) => {
                let events = self.pbx.closed(env, closed.id);
                self.pbx_events = events;
            }
            Event::Timer(id, tag) => match self.tokens.on_timer(env, id, &tag) {
                Some(events) => self.token_events = events,
                None if tag.starts_with(sync::TIMER_PREFIX) => {
                    if let Some(p) = &mut self.presence {
                        p.on_timer(env, &mut self.pbx, &self.tokens, id, &tag);
                    }
                }
                None if tag.starts_with(presence_out::TIMER_PREFIX) => {
                    if let Some(p) = &mut self.presence_out {
                        p.on_timer(env, &mut self.pbx, &self.tokens, id, &tag);
                    }
                }
                None if tag.starts_with(calendar::TIMER_PREFIX) => {
                    if let Some(c) = &mut self.calendar {
                        c.on_timer(env, &mut self.pbx, &self.tokens, id, &tag);
                    }
                }
                None if self
                    .contact_search
                    .as_mut()
                    .is_some_and(|c| c.on_timer(env, id, &tag)) => {}
                None => env.log(
                    Level::Debug,
                    target::APP,
                    &format!("timer {id} `{tag}` ignored: nobody waits for it"),
                ),
            },
        }
        self.feed_presence(env);
        self.feed_presence_out(env);
        self.feed_contact_search(env);
        self.feed_calendar(env, f1_timer);
        crate::metrics::after_event(env, self);
        env.gauge_set(
            "pbx_connections",
            &[],
            self.pbx.connections().filter(|c| c.is_pbx()).count() as f64,
        );
    }

    /// Hands this event's token and PBX events to the presence feature.
    fn feed_presence(&mut self, env: &mut impl Env) {
        let Some(p) = &mut self.presence else {
            return;
        };
        for ev in &self.token_events {
            p.on_token(env, &self.tokens, ev);
        }
        for ev in &self.pbx_events {
            p.on_pbx(env, &mut self.pbx, &self.tokens, ev);
        }
    }

    /// Hands this event's token and PBX events to the calendar feature, and F1's matches
    /// after one of F1's timers (where it matches again).
    fn feed_calendar(&mut self, env: &mut impl Env, f1_timer: bool) {
        let Some(c) = &mut self.calendar else {
            return;
        };
        if f1_timer {
            c.on_matches_changed(env, &mut self.pbx, &self.tokens);
        }
        for ev in &self.token_events {
            c.on_token(env, &self.tokens, ev);
        }
        for ev in &self.pbx_events {
            c.on_pbx(env, &mut self.pbx, ev);
        }
    }

    /// Hands this event's token and PBX events to the PBX -> Teams presence feature.
    fn feed_presence_out(&mut self, env: &mut impl Env) {
        if let Some(p) = &mut self.presence_out {
            for ev in &self.token_events {
                p.on_token(env, &self.tokens, ev);
            }
            for ev in &self.pbx_events {
                p.on_pbx(env, &mut self.pbx, &self.tokens, ev);
            }
            p.after_event(env, &mut self.pbx);
        }
    }

    /// Hands this event's PBX events (searches) to the contact-search feature.
    fn feed_contact_search(&mut self, env: &mut impl Env) {
        if let Some(c) = &mut self.contact_search {
            for ev in &self.pbx_events {
                c.on_pbx(env, ev);
            }
        }
    }

    /// Re-applies the settings after the admin page saved them: every feature starts again
    /// from its stored state, as after a hot swap, and the PBX connections stay up.
    pub fn reconfigure(&mut self, env: &mut impl Env) {
        let open: Vec<crate::event::WsOpen> = self
            .pbx
            .connections()
            .map(|c| crate::event::WsOpen {
                id: c.ws,
                direction: WsDirection::Inbound,
                path: "/".into(),
                headers: vec![],
                peer: c.peer.clone(),
            })
            .collect();
        let started_ms = self.started_ms;
        self.init(
            env,
            &InitInfo {
                reason: crate::event::InitReason::Upgrade,
                from_version: Some(crate::version()),
                snapshot: None,
                open_websockets: open,
            },
        );
        self.started_ms = started_ms;
    }

    fn init(&mut self, env: &mut impl Env, info: &InitInfo) {
        self.started_ms = env.now_ms();
        self.initialised = true;
        let from = store::migrate(env);
        let settings = Settings::read(env);
        let overriding = crate::settings::overriding_host(env);
        if !overriding.is_empty() {
            env.log(
                Level::Warn,
                target::CONFIG,
                &format!(
                    "values saved on the admin page override apphost.toml for: {}",
                    overriding.join(", ")
                ),
            );
        }
        env.log(
            Level::Info,
            target::APP,
            &format!(
                "{} initialised ({:?}{}), schema {from} -> {}, {} open connections",
                crate::version(),
                info.reason,
                info.from_version
                    .as_deref()
                    .map(|v| format!(" from {v}"))
                    .unwrap_or_default(),
                store::SCHEMA_VERSION,
                info.open_websockets.len()
            ),
        );
        self.pbx = Pbx::new(settings.clone());
        self.pbx.restore(env, &info.open_websockets);
        // Timers and requests of a previous instance are not ours to track: start afresh.
        // Stored (sealed) refresh tokens make this cheap and need no password.
        self.tokens = Tokens::new();
        self.accounts.clear();
        if let Some(presence) = PresenceSettings::read(env) {
            for account in presence.accounts {
                self.tokens.add(
                    env,
                    &account.name,
                    presence.client.clone(),
                    account.sign_in,
                    &presence.scope,
                );
                self.token_events
                    .extend(self.tokens.start(env, &account.name));
                self.accounts.push(account.name);
            }
            let cfg = sync::Config::read(env, &settings.domain, &settings.instance);
            let mut p = PresenceSync::new(cfg, self.accounts.clone());
            p.init(env);
            // A removed Teams account signs in once more, from its stored refresh token only
            // (never by password or device code), so its subscription can be deleted.
            for name in p.retired_accounts() {
                if PresenceSync::can_sign_in_alone(env, &name) {
                    let sign_in = crate::graph::tokens::SignIn::DeviceCode;
                    self.tokens.add(
                        env,
                        &name,
                        presence.client.clone(),
                        sign_in,
                        &presence.scope,
                    );
                    self.token_events.extend(self.tokens.start(env, &name));
                }
            }
            self.presence = Some(p);
        } else {
            self.presence = None;
        }
        if let Some(old) = &mut self.contact_search {
            old.stop(env);
        }
        self.contact_search = contact_search::Config::read(env).map(|cfg| {
            let mut c = ContactSearch::new(cfg);
            c.start(env);
            c
        });
        self.presence_out = PresenceOut::configure(
            env,
            &settings,
            &mut self.tokens,
            &self.pbx,
            &mut self.token_events,
        );
        self.calendar = None;
        if let Some(cal) = CalendarSettings::read(env, &settings.domain, &settings.instance) {
            let events = cal.sign_in(env, &mut self.tokens);
            self.token_events.extend(events);
            let mut c = CalendarSync::new(cal.cfg);
            c.init(env, &mut self.pbx);
            self.calendar = Some(c);
        }
    }
}

impl InitInfo {
    /// The init a host would send on a plain start.
    pub fn default_start() -> Self {
        InitInfo {
            reason: crate::event::InitReason::Start,
            from_version: None,
            snapshot: None,
            open_websockets: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Header, InboundRequest, InitReason, WsFrame, WsOpen};
    use crate::testenv::TestEnv;

    fn get(path: &str) -> InboundRequest {
        InboundRequest {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            headers: vec![Header::new("accept", "application/json")],
            body: vec![],
            peer: "127.0.0.1:1".into(),
        }
    }

    fn started() -> (Connector, TestEnv) {
        let mut env = TestEnv::new();
        let mut c = Connector::new();
        c.handle(&mut env, Event::Init(InitInfo::default_start()));
        (c, env)
    }

    #[test]
    fn init_migrates_schema() {
        let (_, env) = started();
        assert_eq!(env.kv_text("meta/schema-version").as_deref(), Some("1"));
        assert!(env.logged("schema 0 -> 1"));
    }

    #[test]
    fn status_reports_version_uptime_and_event_counts() {
        let (mut c, mut env) = started();
        env.now_ms += 65_000;
        c.handle(&mut env, Event::Timer(7, "x".into()));
        c.handle(&mut env, Event::HttpRequest(1, get("/status")));
        let (id, resp) = env.responses.last().unwrap();
        assert_eq!((*id, resp.status), (1, 200));
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["version"], crate::version());
        assert_eq!(body["api_version"], "0.1.0");
        assert_eq!(body["schema_version"], 1);
        assert_eq!(body["uptime_s"], 65);
        assert_eq!(body["events"]["init"], 1);
        assert_eq!(body["events"]["timer"], 1);
        // The request being answered is counted before the answer is built.
        assert_eq!(body["events"]["http-request"], 1);
        assert_eq!(env.kv_text("stats/events/timer").as_deref(), Some("1"));
        assert_eq!(env.counters.get("guest_events_total{kind=timer}"), Some(&1));
    }

    #[test]
    fn status_lists_pbx_connections() {
        let (mut c, mut env) = started();
        c.handle(
            &mut env,
            Event::WsOpen(WsOpen {
                id: 4,
                direction: WsDirection::Inbound,
                path: "/".into(),
                headers: vec![],
                peer: "10.0.0.1:9".into(),
            }),
        );
        c.handle(&mut env, Event::HttpRequest(2, get("/status/")));
        let body: serde_json::Value =
            serde_json::from_slice(&env.responses.last().unwrap().1.body).unwrap();
        assert_eq!(body["pbx"][0]["id"], 4);
        assert_eq!(body["pbx"][0]["logged_in"], false);
        assert_eq!(body["master"], serde_json::Value::Null);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        let (mut c, mut env) = started();
        c.handle(&mut env, Event::HttpRequest(1, get("/subscriptions")));
        c.handle(&mut env, Event::HttpRequest(2, get("/")));
        let mut post = get("/status");
        post.method = "POST".into();
        c.handle(&mut env, Event::HttpRequest(3, post));
        let statuses: Vec<u16> = env.responses.iter().map(|(_, r)| r.status).collect();
        assert_eq!(statuses, vec![404, 404, 405]);
    }

    #[test]
    fn events_before_init_initialise_first() {
        let mut env = TestEnv::new();
        let mut c = Connector::new();
        c.handle(&mut env, Event::WsMessage(1, WsFrame::Text("x".into())));
        assert_eq!(env.kv_text("meta/schema-version").as_deref(), Some("1"));
        assert!(env.sent.is_empty());
    }

    #[test]
    fn restart_keeps_counts_and_drops_state_of_closed_sockets() {
        let (mut c, mut env) = started();
        c.handle(
            &mut env,
            Event::WsOpen(WsOpen {
                id: 4,
                direction: WsDirection::Inbound,
                path: "/".into(),
                headers: vec![],
                peer: "p".into(),
            }),
        );
        assert!(env.kv.contains_key("pbx/conn/4"));
        let mut again = Connector::new();
        again.handle(
            &mut env,
            Event::Init(InitInfo {
                reason: InitReason::Start,
                ..InitInfo::default_start()
            }),
        );
        assert!(!env.kv.contains_key("pbx/conn/4"));
        assert_eq!(env.kv_text("stats/events/init").as_deref(), Some("2"));
    }

    #[test]
    fn configured_accounts_sign_in_at_init_and_show_in_status() {
        let mut env = TestEnv::new();
        env.set_config("presence.tenant", "contoso");
        env.set_config("presence.client-id", "cid");
        env.set_config(
            "presence.accounts",
            r#"[{"name":"teams1","username":"svc@contoso.com","password":"pw+1"}]"#,
        );
        let mut c = Connector::new();
        c.handle(&mut env, Event::Init(InitInfo::default_start()));
        assert_eq!(env.requests.len(), 1);
        let (id, req) = env.requests[0].clone();
        assert!(req.url.ends_with("/contoso/oauth2/v2.0/token"));
        assert!(
            String::from_utf8(req.body)
                .unwrap()
                .contains("password=pw%2B1")
        );
        c.handle(
            &mut env,
            Event::HttpResponse(
                id,
                Ok(crate::event::HttpResponse::json(
                    200,
                    &serde_json::json!({"access_token":"AT","refresh_token":"RT","expires_in":3600}),
                )),
            ),
        );
        assert_eq!(c.token_events.len(), 1);
        assert_eq!(c.tokens.access_token("teams1", env.now_ms), Some("AT"));
        // The refresh timer reaches the token manager through the connector.
        let (timer, tag) = env
            .timers
            .iter()
            .find(|(_, (_, tag))| tag.starts_with("token:"))
            .map(|(id, (_, tag))| (*id, tag.clone()))
            .unwrap();
        // The ready token started the presence feature: Entra users are read.
        assert!(env.requests[1].1.url.contains("/v1.0/users?"));
        c.handle(&mut env, Event::Timer(timer, tag));
        assert_eq!(env.requests.len(), 3);
        assert!(env.requests[2].1.url.ends_with("/oauth2/v2.0/token"));
        c.handle(&mut env, Event::HttpRequest(5, get("/status")));
        let body: serde_json::Value =
            serde_json::from_slice(&env.responses.last().unwrap().1.body).unwrap();
        assert_eq!(body["accounts"][0]["name"], "teams1");
        assert_eq!(body["accounts"][0]["state"], "requesting");
        assert!(!String::from_utf8_lossy(&env.responses.last().unwrap().1.body).contains("AT"));
    }

    #[test]
    fn stray_outbound_socket_is_closed() {
        let (mut c, mut env) = started();
        c.handle(
            &mut env,
            Event::WsOpen(WsOpen {
                id: 8,
                direction: WsDirection::Outbound,
                path: "wss://x".into(),
                headers: vec![],
                peer: "p".into(),
            }),
        );
        assert_eq!(env.closed, vec![(8, 1000, "not used".to_string())]);
        assert!(c.pbx.connection(8).is_none());
    }
}
