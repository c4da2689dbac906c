//! The sans-IO core: all state, one entry point for requests, and the side effects it wants the
//! driver (socket binary or simulation host) to perform.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::{Clock, inner_error_date};
use crate::config::Config;
use crate::http::{Request, Response, graph_error_body};
use crate::tenant::{AppReg, User, guid};

/// What the core answers to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Answer now.
    Response(Response),
    /// The answer comes later (e.g. POST /subscriptions waits for the validation handshake);
    /// collect it with [`Fake::take_completed`] under this ticket.
    Pending(u64),
    /// Never answer (injected timeout): the driver holds the connection until the client gives up.
    Hang,
}

impl Handled {
    /// The response, panicking if there is none (test helper).
    pub fn unwrap_response(self) -> Response {
        match self {
            Handled::Response(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// Why the core wants an outbound HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// Subscription validation handshake.
    Validation,
    /// Change notifications.
    Notification,
    /// Lifecycle notifications.
    Lifecycle,
}

/// A side effect: "POST this to that URL within `timeout_ms`".
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// Id to report the result under ([`Fake::outbound_result`]).
    pub id: u64,
    /// Always POST for Graph's webhooks.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Give up after this long and report [`OutboundResult::Timeout`].
    pub timeout_ms: i64,
    /// Why.
    pub purpose: Purpose,
}

/// Result of an [`Outbound`] as observed by the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundResult {
    /// An HTTP answer arrived after `elapsed_ms`.
    Status {
        /// Status code.
        status: u16,
        /// Content-Type header.
        content_type: Option<String>,
        /// Body.
        body: Vec<u8>,
        /// Time from send to answer.
        elapsed_ms: i64,
    },
    /// No answer within the timeout.
    Timeout,
    /// Connection failed; `tls` is true for certificate/handshake failures.
    Failed {
        /// TLS (trust) failure.
        tls: bool,
        /// Detail.
        message: String,
    },
}

/// A request the fake received, for read-back by tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenRequest {
    /// Fake time (ms).
    pub at_ms: i64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers (Authorization kept: tests check it).
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy).
    pub body: String,
    /// Status answered (0 when pending).
    pub status: u16,
}

/// A Graph error on its way out.
#[derive(Debug, Clone)]
pub struct GraphErr {
    /// Status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// Extra headers (Retry-After).
    pub headers: Vec<(String, String)>,
}

/// Build a [`GraphErr`].
pub fn gerr(status: u16, code: &str, message: &str) -> GraphErr {
    GraphErr {
        status,
        code: code.into(),
        message: message.into(),
        headers: vec![],
    }
}

/// Result of a Graph route.
pub(crate) enum Reply {
    Resp(Response),
    Pending(u64),
}

pub(crate) type GResult = Result<Reply, GraphErr>;

/// Who is calling, from the bearer token.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// App (client) id.
    pub app_id: String,
    /// Signed-in user (delegated tokens only).
    pub user_id: Option<String>,
    /// Delegated scopes.
    pub scp: Vec<String>,
    /// Application roles.
    pub roles: Vec<String>,
    /// Expiry of the presented access token (ms); subscriptions are bound to it.
    pub token_exp_ms: i64,
}

impl Caller {
    /// App-only token.
    pub fn is_app_only(&self) -> bool {
        self.user_id.is_none()
    }
    /// True if any of `delegated` (for delegated tokens) or `app` (for app tokens) is held.
    pub fn has(&self, delegated: &[&str], app: &[&str]) -> bool {
        if self.is_app_only() {
            self.roles
                .iter()
                .any(|r| app.iter().any(|a| a.eq_ignore_ascii_case(r)))
        } else {
            self.scp
                .iter()
                .any(|r| delegated.iter().any(|a| a.eq_ignore_ascii_case(r)))
        }
    }
}

/// Kinds of injectable faults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultKind {
    /// 429 TooManyRequests with Retry-After.
    Throttle {
        /// Seconds.
        retry_after_s: u32,
    },
    /// 503 ServiceUnavailable, optional Retry-After.
    Unavailable {
        /// Seconds.
        retry_after_s: Option<u32>,
    },
    /// Another 5xx.
    ServerError {
        /// Status (500, 502, 504).
        status: u16,
    },
    /// Never answer.
    Timeout,
}

/// An injected fault rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Applies when the path contains this (None = every path).
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Applies only to this method.
    #[serde(default)]
    pub method: Option<String>,
    /// What to do.
    pub fault: FaultKind,
    /// How many more times (None = until cleared).
    #[serde(default)]
    pub remaining: Option<u32>,
}

pub(crate) struct Inflight {
    pub purpose: Purpose,
    pub deadline: i64,
    pub sent_at: i64,
}

/// The fake Microsoft 365 tenant. Drive it with [`Fake::handle`], [`Fake::take_effects`],
/// [`Fake::outbound_result`] and [`Fake::take_completed`].
pub struct Fake {
    pub(crate) cfg: Config,
    clock: Arc<dyn Clock>,
    pub(crate) skew_ms: i64,
    pub(crate) rng: StdRng,
    pub(crate) tenant_id: String,
    pub(crate) domain: String,
    pub(crate) users: crate::users::Directory,
    pub(crate) apps: BTreeMap<String, AppReg>,
    pub(crate) tokens: crate::token::TokenState,
    pub(crate) presence: crate::presence::PresenceBook,
    pub(crate) subs: crate::subscriptions::SubState,
    pub(crate) delivery: crate::delivery::DeliveryState,
    pub(crate) keys: crate::crypto::KeySet,
    pub(crate) throttle: crate::throttle::Throttle,
    pub(crate) faults: Vec<Fault>,
    pub(crate) seen: Vec<SeenRequest>,
    pub(crate) calendars: HashMap<String, Vec<crate::calendar::Event>>,
    pub(crate) contacts: HashMap<String, Vec<crate::contacts::Contact>>,
    pub(crate) effects: Vec<Outbound>,
    pub(crate) inflight: HashMap<u64, Inflight>,
    pub(crate) completed: Vec<(u64, Response)>,
    pub(crate) next_id: u64,
    pending_log: HashMap<u64, usize>,
}

impl Fake {
    /// A fake with an empty tenant `contoso.onmicrosoft.com`.
    pub fn new(cfg: Config, clock: Arc<dyn Clock>) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let tenant_id = guid(&mut rng);
        let token_secret: [u8; 32] = rand::Rng::r#gen(&mut rng);
        let key_seed: u64 = rand::Rng::r#gen(&mut rng);
        Self {
            keys: crate::crypto::KeySet::new(key_seed),
            cfg,
            clock,
            skew_ms: 0,
            rng,
            tenant_id,
            domain: "contoso.onmicrosoft.com".into(),
            users: Default::default(),
            apps: BTreeMap::new(),
            tokens: crate::token::TokenState::new(token_secret),
            presence: Default::default(),
            subs: Default::default(),
            delivery: Default::default(),
            throttle: Default::default(),
            faults: vec![],
            seen: vec![],
            calendars: HashMap::new(),
            contacts: HashMap::new(),
            effects: vec![],
            inflight: HashMap::new(),
            completed: vec![],
            next_id: 1,
            pending_log: HashMap::new(),
        }
    }

    /// The fake's notion of now (injected clock plus the skew set by tests).
    pub fn now(&self) -> i64 {
        self.clock.now_ms() + self.skew_ms
    }

    /// Shift the fake's clock by `ms` relative to the injected clock (skew tests).
    pub fn set_skew(&mut self, ms: i64) {
        self.skew_ms = ms;
    }

    /// Tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Verified domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Current configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Change the configuration (switches).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }

    /// Base URL used in links.
    pub fn graph_base(&self) -> String {
        self.cfg
            .graph_base
            .clone()
            .unwrap_or_else(|| self.cfg.cloud.graph_host().to_string())
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn new_guid(&mut self) -> String {
        guid(&mut self.rng)
    }

    /// Every request seen so far.
    pub fn requests(&self) -> &[SeenRequest] {
        &self.seen
    }

    /// Add an injected fault.
    pub fn add_fault(&mut self, f: Fault) {
        self.faults.push(f);
    }

    /// Remove all injected faults.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Register an app.
    pub fn add_app(&mut self, app: AppReg) {
        self.apps.insert(app.client_id.clone(), app);
    }

    /// Look up a user by id or UPN.
    pub fn user(&self, id_or_upn: &str) -> Option<&User> {
        self.users.find(id_or_upn).map(|e| &e.user)
    }

    /// Handle one HTTP request (token endpoint, JWKS or Graph).
    pub fn handle(&mut self, req: Request) -> Handled {
        self.tick();
        let idx = self.seen.len();
        self.seen.push(SeenRequest {
            at_ms: self.now(),
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            status: 0,
        });
        let out = self.route(&req);
        match &out {
            Handled::Response(r) => self.seen[idx].status = r.status,
            Handled::Pending(t) => {
                self.pending_log.insert(*t, idx);
            }
            Handled::Hang => {}
        }
        out
    }

    fn route(&mut self, req: &Request) -> Handled {
        let path = req.path().to_string();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // Login host paths.
        if segs.len() == 4
            && segs[1] == "oauth2"
            && segs[2] == "v2.0"
            && (segs[3] == "token" || segs[3] == "devicecode")
        {
            if let Some(h) = self.fault_for(req) {
                return h;
            }
            return Handled::Response(self.token_endpoint(segs[0], segs[3], req));
        }
        if path.ends_with("/discovery/v2.0/keys") || path.ends_with("/discovery/keys") {
            return Handled::Response(Response::json(200, &self.jwks()));
        }
        if path.ends_with("/v2.0/.well-known/openid-configuration") {
            return Handled::Response(Response::json(200, &self.openid_configuration(segs[0])));
        }
        let Some(rest) = path.strip_prefix("/v1.0") else {
            return Handled::Response(self.graph_error_response(
                req,
                gerr(
                    400,
                    "BadRequest",
                    "Invalid version: only v1.0 is served by the fake.",
                ),
            ));
        };
        let rest = rest.to_string();
        self.graph_entry(req, &rest)
    }

    /// Authentication, faults, throttling and dispatch for one Graph request (also used by $batch).
    pub(crate) fn graph_entry(&mut self, req: &Request, rest: &str) -> Handled {
        if let Some(h) = self.fault_for(req) {
            return h;
        }
        let caller = match self.authenticate(req) {
            Ok(c) => c,
            Err(e) => return Handled::Response(self.graph_error_response(req, e)),
        };
        if let Err(e) = self.throttle_check(&caller, &req.method, rest) {
            return Handled::Response(self.graph_error_response(req, e));
        }
        match self.graph(req, rest, &caller) {
            Ok(Reply::Resp(r)) => Handled::Response(self.decorate(req, r)),
            Ok(Reply::Pending(t)) => Handled::Pending(t),
            Err(e) => Handled::Response(self.graph_error_response(req, e)),
        }
    }

    fn graph(&mut self, req: &Request, rest: &str, caller: &Caller) -> GResult {
        let mut segs: Vec<String> = rest
            .trim_start_matches('/')
            .split('/')
            .map(crate::http::pct_decode_path)
            .collect();
        // `/me/...` mailbox paths are the signed-in user's (presence keeps its own rules).
        if let Some(uid) = caller
            .user_id
            .as_ref()
            .filter(|_| segs.len() > 1 && segs[0] == "me" && segs[1] != "presence")
        {
            segs.splice(0..1, ["users".to_string(), uid.clone()]);
        }
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = req.method.as_str();
        match (m, s.as_slice()) {
            ("POST", ["$batch"]) => self.batch(req, caller),
            ("GET", ["users"]) => self.list_users(req, caller),
            ("GET", ["users", "$count"]) => self.count_users(req, caller),
            ("GET", ["users", "delta"]) => self.users_delta(req, caller),
            ("GET", ["me"]) => {
                let uid = caller.user_id.clone().ok_or_else(|| {
                    gerr(
                        400,
                        "BadRequest",
                        "/me request is only valid with delegated authentication flow.",
                    )
                })?;
                self.get_user(&uid, req, caller)
            }
            ("GET", ["users", id]) => self.get_user(id, req, caller),
            ("GET", ["me", "presence"]) => {
                let uid = caller.user_id.clone().ok_or_else(|| {
                    gerr(
                        400,
                        "BadRequest",
                        "/me request is only valid with delegated authentication flow.",
                    )
                })?;
                self.get_presence(&uid, caller, true)
            }
            ("GET", ["users", id, "presence"]) | ("GET", ["communications", "presences", id]) => {
                self.get_presence(id, caller, false)
            }
            ("POST", ["communications", "getPresencesByUserId"]) => {
                self.get_presences_by_user_id(req, caller)
            }
            ("POST", ["users", id, "presence", action]) => {
                self.presence_action(id, action, req, caller)
            }
            ("POST", ["me", "presence", action]) => {
                let uid = caller.user_id.clone().ok_or_else(|| {
                    gerr(
                        400,
                        "BadRequest",
                        "/me request is only valid with delegated authentication flow.",
                    )
                })?;
                self.presence_action(&uid, action, req, caller)
            }
            ("POST", ["subscriptions"]) => self.create_subscription(req, caller),
            ("GET", ["subscriptions"]) => self.list_subscriptions(caller),
            ("GET", ["subscriptions", id]) => self.get_subscription(id, caller),
            ("PATCH", ["subscriptions", id]) => self.patch_subscription(id, req, caller),
            ("DELETE", ["subscriptions", id]) => self.delete_subscription(id, caller),
            ("POST", ["subscriptions", id, "reauthorize"]) => {
                self.reauthorize_subscription(id, caller)
            }
            ("GET", ["users", id, "calendarView"]) => self.calendar_view(id, req, caller),
            ("GET", ["users", id, "events"]) => self.list_events(id, req, caller),
            ("GET", ["users", id, "events", eid]) => self.get_event(id, eid, req, caller),
            ("GET", ["users", id, "contacts"]) => self.list_contacts(id, req, caller),
            ("GET", ["users", id, "contacts", cid]) => self.get_contact(id, cid, caller),
            // The fake keeps every contact in the default folder.
            ("GET", ["users", id, "contactFolders", _, "contacts"]) => {
                self.list_contacts(id, req, caller)
            }
            _ => Err(gerr(
                400,
                "BadRequest",
                &format!(
                    "Resource not found for the segment '{}'.",
                    s.last().copied().unwrap_or("")
                ),
            )),
        }
    }

    /// Graph error envelope with request-id headers.
    pub(crate) fn graph_error_response(&mut self, req: &Request, e: GraphErr) -> Response {
        let rid = self.new_guid();
        let crid = req
            .get_header("client-request-id")
            .map(str::to_string)
            .unwrap_or_else(|| rid.clone());
        let body = graph_error_body(
            &e.code,
            &e.message,
            &inner_error_date(self.now()),
            &rid,
            &crid,
        );
        let mut r = Response::json(e.status, &body);
        r.headers.extend(e.headers);
        r.headers.push(("request-id".into(), rid));
        r.headers.push(("client-request-id".into(), crid));
        r
    }

    pub(crate) fn decorate(&mut self, req: &Request, mut r: Response) -> Response {
        if r.get_header("request-id").is_none() {
            let rid = self.new_guid();
            let crid = req
                .get_header("client-request-id")
                .map(str::to_string)
                .unwrap_or_else(|| rid.clone());
            r.headers.push(("request-id".into(), rid));
            r.headers.push(("client-request-id".into(), crid));
        }
        r
    }

    fn fault_for(&mut self, req: &Request) -> Option<Handled> {
        let path = req.path().to_string();
        let pos = self.faults.iter().position(|f| {
            f.path_contains
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
                && f.method
                    .as_ref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&req.method))
                && f.remaining != Some(0)
        })?;
        let f = self.faults[pos].clone();
        if let Some(n) = self.faults[pos].remaining.as_mut() {
            *n -= 1;
        }
        let e = match f.fault {
            FaultKind::Timeout => return Some(Handled::Hang),
            FaultKind::Throttle { retry_after_s } => {
                let mut e = gerr(
                    429,
                    "TooManyRequests",
                    "Too many requests from Identifier:fake under category:throttle.injected. Please try again later.",
                );
                e.headers
                    .push(("Retry-After".into(), retry_after_s.to_string()));
                e
            }
            FaultKind::Unavailable { retry_after_s } => {
                let mut e = gerr(
                    503,
                    "ServiceNotAvailable",
                    "The service is temporarily unavailable. Please try again later.",
                );
                if let Some(s) = retry_after_s {
                    e.headers.push(("Retry-After".into(), s.to_string()));
                }
                e
            }
            FaultKind::ServerError { status } => {
                gerr(status, "UnknownError", "An internal server error occurred.")
            }
        };
        Some(Handled::Response(self.graph_error_response(req, e)))
    }

    /// Advance time-driven state: presence fades and expiries, subscription expiry and lifecycle
    /// events, notification batching and retries, handshake timeouts, key rotation.
    pub fn tick(&mut self) {
        let now = self.now();
        // Outbound requests the driver never reported on time out here, so a virtual-time host
        // needs only report answers.
        let overdue: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.outbound_result(id, OutboundResult::Timeout);
        }
        self.presence_tick();
        self.subscriptions_tick();
        self.delivery_tick();
        self.keys.maybe_rotate(now, self.cfg.jwks_rotation_ms);
    }

    /// Take the outbound requests the driver should perform now.
    pub fn take_effects(&mut self) -> Vec<Outbound> {
        self.tick();
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn emit(
        &mut self,
        purpose: Purpose,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: i64,
    ) -> u64 {
        let id = self.next_id();
        let now = self.now();
        // Drivers may take a little longer than the timeout to notice; give them slack before the
        // core declares the timeout itself.
        self.inflight.insert(
            id,
            Inflight {
                purpose,
                deadline: now + timeout_ms + 1_000,
                sent_at: now,
            },
        );
        self.effects.push(Outbound {
            id,
            method: "POST".into(),
            url,
            headers,
            body,
            timeout_ms,
            purpose,
        });
        id
    }

    /// Report the result of an [`Outbound`].
    pub fn outbound_result(&mut self, id: u64, res: OutboundResult) {
        let Some(f) = self.inflight.remove(&id) else {
            return;
        };
        // The driver measures elapsed time; if it did not, use fake time.
        let res = match res {
            OutboundResult::Status {
                status,
                content_type,
                body,
                elapsed_ms,
            } if elapsed_ms < 0 => OutboundResult::Status {
                status,
                content_type,
                body,
                elapsed_ms: self.now() - f.sent_at,
            },
            r => r,
        };
        match f.purpose {
            Purpose::Validation => self.validation_result(id, res),
            Purpose::Notification | Purpose::Lifecycle => self.delivery_result(id, res),
        }
    }

    /// Responses to earlier [`Handled::Pending`] requests that are now complete.
    pub fn take_completed(&mut self) -> Vec<(u64, Response)> {
        self.tick();
        let done = std::mem::take(&mut self.completed);
        // Record the final status of the request log entry (it was 0 while pending).
        for (ticket, r) in &done {
            if let Some(e) = self
                .pending_log
                .remove(ticket)
                .and_then(|i| self.seen.get_mut(i))
            {
                e.status = r.status;
            }
        }
        done
    }

    /// Earliest time at which [`Fake::tick`] has work (for virtual-time hosts); None if idle.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut d: Option<i64> = self.inflight.values().map(|f| f.deadline).min();
        for t in [
            self.delivery.next_due(),
            self.subs.next_due(),
            self.presence.next_due(self.cfg.presence_idle_fade_ms),
        ]
        .into_iter()
        .flatten()
        {
            d = Some(d.map_or(t, |x| x.min(t)));
        }
        d
    }

    /// Look up a user id from an id or UPN path segment.
    pub(crate) fn resolve_user(&self, id_or_upn: &str) -> Result<String, GraphErr> {
        self.users
            .find(id_or_upn)
            .map(|e| e.user.id.clone())
            .ok_or_else(|| gerr(404, "Request_ResourceNotFound", &format!("Resource '{id_or_upn}' does not exist or one of its queried reference-property objects are not present.")))
    }
}

/// Shorthand for a JSON 200.
pub(crate) fn ok_json(v: Value) -> GResult {
    Ok(Reply::Resp(Response::json(200, &v)))
}

/// `{"value": [...]}` helper.
pub(crate) fn value_list(items: Vec<Value>) -> Value {
    json!({ "value": items })
}
