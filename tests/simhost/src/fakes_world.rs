//! The world of a simulation run: the fake Microsoft 365 and the fake PBX, both sans-IO cores,
//! joined to the guest by a simulated network in virtual time.
//!
//! - Guest outbound HTTP goes to the fake Microsoft 365 (every host: login and Graph share one
//!   fake) after a network latency; its answer comes back after another one.
//! - The fake's own POSTs (validation handshakes, notifications, lifecycle events) become inbound
//!   requests into the guest below `/<domain>/<instance>`; the guest's answers, and when they
//!   arrived, go back to the fake through `outbound_result`, so Graph's 3 s / 10 s windows play
//!   out in virtual time.
//! - The fake PBX's dials become inbound WebSocket opens, frames flow both ways in order per
//!   connection, closes travel both ways.
//!
//! Both fakes read the run's true virtual time ([`FakeClock`]); only the guest sees the skew.
//! Every random choice comes from seeded generators, and every collection that drives behaviour
//! is ordered, so a seed replays identically.

use std::collections::{BTreeMap, BTreeSet};

use fake_m365::{Fake, Fault, Handled, OutboundResult, Request};
use fake_pbx::{Output, Pbx, Rng};

use crate::bindings::{
    Header, HttpError, HttpRequest, HttpResponse, InboundRequest, WsDirection, WsFrame, WsOpen,
};
use crate::clock::VirtualClock;
use crate::world::{Ids, Incoming, World};

/// The fakes' clock: the run's true virtual time.
#[derive(Clone, Debug)]
pub struct FakeClock(pub VirtualClock);

impl fake_pbx::Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

impl fake_m365::Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms() as i64
    }
}

/// Network conditions that faults switch on and off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFaults {
    /// Percent of guest requests to Microsoft that fail with a connection reset.
    pub http_reset_percent: u64,
    /// Up to this much extra delay (ms) on each notification POST to the guest (slow path).
    pub notify_slow_ms: u64,
    /// Percent of notification POSTs lost on the way to the guest.
    pub notify_drop_percent: u64,
    /// Percent of notification POSTs delivered twice.
    pub notify_dup_percent: u64,
    /// Up to this much random extra delay (ms) per POST, so that they overtake each other.
    pub notify_reorder_ms: u64,
}

/// Something the world does at a planned time (faults and their repair).
#[derive(Clone, Debug)]
pub enum WorldAction {
    /// Inject a Graph/Entra fault rule (429, 5xx, timeout).
    GraphFault(Fault),
    /// Remove every fault rule.
    ClearGraphFaults,
    /// Change the network conditions.
    Net(NetFaults),
    /// Cut a PBX node's connection and keep it down.
    KillPbx(String),
    /// Let a killed PBX node dial again.
    RestorePbx(String),
    /// Drop a PBX node's connection mid-frame; it redials after its backoff.
    DropPbx(String),
    /// Change the lifetime of new access tokens (seconds).
    TokenLifetime(i64),
    /// Revoke every refresh token of a user (password reset, admin revoke).
    RevokeRefreshTokens(String),
    /// Put one live presence subscription (chosen by the seed) into silent outage.
    SubscriptionOutage,
    /// End every silent outage.
    EndOutages,
}

impl WorldAction {
    /// Short name for the fault counters.
    pub fn kind(&self) -> &'static str {
        match self {
            WorldAction::GraphFault(f) => match f.fault {
                fake_m365::FaultKind::Throttle { .. } => "graph-429",
                fake_m365::FaultKind::Unavailable { .. } => "graph-503",
                fake_m365::FaultKind::ServerError { .. } => "graph-5xx",
                fake_m365::FaultKind::Timeout => "graph-timeout",
            },
            WorldAction::ClearGraphFaults => "graph-faults-cleared",
            WorldAction::Net(n) if *n == NetFaults::default() => "net-normal",
            WorldAction::Net(_) => "net-degraded",
            WorldAction::KillPbx(_) => "pbx-kill",
            WorldAction::RestorePbx(_) => "pbx-restore",
            WorldAction::DropPbx(_) => "pbx-drop",
            WorldAction::TokenLifetime(_) => "token-lifetime",
            WorldAction::RevokeRefreshTokens(_) => "token-revoke",
            WorldAction::SubscriptionOutage => "subscription-outage",
            WorldAction::EndOutages => "subscription-outage-end",
        }
    }
}

/// A PBX user that is also a Teams user (same address), as the invariants need it.
#[derive(Clone, Debug)]
pub struct Matched {
    /// PBX user guid.
    pub pbx_guid: String,
    /// Teams user principal name (= the PBX user's e-mail).
    pub upn: String,
    /// Teams user id.
    pub uid: String,
    /// Holds the connector's PBX licence.
    pub licensed: bool,
}

/// Teams presence pairs the simulated users' Teams clients set.
pub const TEAMS_PAIRS: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Away", "Away"),
    ("BeRightBack", "BeRightBack"),
    ("Busy", "Busy"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Busy", "InAMeeting"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("DoNotDisturb", "Presenting"),
    ("Offline", "OffWork"),
];

/// In-flight traffic of the simulated network.
#[derive(Debug)]
enum Net {
    /// A guest request reaches the fake Microsoft 365.
    ToFake(u64, HttpRequest),
    /// Something reaches the guest.
    ToGuest(Incoming),
    /// The guest's request `id` times out (if still open).
    GuestTimeout(u64),
    /// A PBX dial reaches the guest's listener.
    PbxConnect(u64, String),
    /// A fake POST reaches the guest.
    FakePost(u64, InboundRequest),
    /// The guest's answer to fake POST `.0` (sent at `.2`) reaches the fake.
    AnswerToFake(u64, HttpResponse, u64),
    /// Fake POST `.0` gives up.
    FakePostTimeout(u64),
    /// A guest frame reaches the PBX.
    ToPbx(u64, String),
    /// The guest's close reaches the PBX.
    GuestClosed(u64),
}

/// Counters of what the world did.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Guest requests to Microsoft.
    pub http_requests: u64,
    /// Fake POSTs to the guest (notifications, lifecycle, validation), duplicates included.
    pub fake_posts: u64,
    /// Fake POSTs lost by a fault.
    pub posts_dropped: u64,
    /// PBX connections opened.
    pub pbx_dials: u64,
    /// Teams presence changes made by the workload.
    pub teams_changes: u64,
    /// PBX presence changes made by the PBX workload (users setting their own `tel:` item).
    pub pbx_changes: u64,
    /// Faults applied, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Guest requests by method and path shape (ids and queries left out).
    pub requests_by_kind: BTreeMap<String, u64>,
}

/// The fakes in virtual time.
pub struct FakesWorld {
    /// The fake Microsoft 365.
    pub fake: Fake,
    /// The fake PBX.
    pub pbx: Pbx,
    /// Users present on both sides.
    pub matched: Vec<Matched>,
    /// Teams user id -> when the workload last changed its presence (true time).
    pub teams_changed_at: BTreeMap<String, u64>,
    /// PBX user guid -> when the PBX workload last changed its own presence (true time).
    pub pbx_changed_at: BTreeMap<String, u64>,
    /// Every secret handed out by the fake (access and refresh tokens), for the log check.
    pub issued_secrets: BTreeSet<String>,
    /// Counters.
    pub stats: WorldStats,
    prefix: String,
    net: NetFaults,
    rng: Rng,
    workload_rng: Rng,
    latency_ms: u64,
    queue: BTreeMap<(u64, u64), Net>,
    seq: u64,
    actions: BTreeMap<(u64, u64), WorldAction>,
    workload_mean_ms: u64,
    workload_next: Option<u64>,
    /// Guest request id -> deadline.
    open_requests: BTreeMap<u64, u64>,
    /// Fake ticket -> guest request id.
    tickets: BTreeMap<u64, u64>,
    /// Inbound request id -> (fake POST id, sent at).
    posts: BTreeMap<u64, (u64, u64)>,
    /// Fake POSTs still waiting for an answer.
    open_posts: BTreeSet<u64>,
    conn_to_ws: BTreeMap<u64, u64>,
    ws_to_conn: BTreeMap<u64, u64>,
    /// Per connection and direction: when the last frame arrives (frames keep their order).
    fifo: BTreeMap<(u64, bool), u64>,
    fake_ticked_at: u64,
    /// `fake.next_deadline()` as of the last interaction: it walks every user, and the fake
    /// only changes when this world touches it (always followed by `pump_fake`).
    fake_deadline: Option<i64>,
    pbx_ticked_at: u64,
    pbx_workload: Option<PbxWorkload>,
}

/// PBX users changing their own presence on the phone (the PBX -> Teams direction).
struct PbxWorkload {
    rng: Rng,
    mean_ms: u64,
    next: u64,
}

/// What PBX users set on their phones (`""` = back to available).
const PBX_ACTIVITIES: &[&str] = &["", "away", "busy", "dnd", "lunch", "vacation"];

impl FakesWorld {
    /// A world around two prepared fakes. `prefix` is the instance prefix `/<domain>/<instance>`
    /// under which the fakes address the guest; `workload_mean_ms` is the mean time between two
    /// Teams presence changes of matched users (0 = none).
    pub fn new(
        fake: Fake,
        pbx: Pbx,
        matched: Vec<Matched>,
        prefix: &str,
        seed: u64,
        workload_mean_ms: u64,
    ) -> Self {
        let mut rng = Rng::new(seed ^ 0x6e65_7477);
        // One base latency per run: some runs are a LAN, some a slow WAN.
        let latency_ms = 1 + rng.below(60);
        let now = fake.now() as u64;
        let fake_deadline = fake.next_deadline();
        Self {
            fake,
            pbx,
            matched,
            teams_changed_at: BTreeMap::new(),
            pbx_changed_at: BTreeMap::new(),
            issued_secrets: BTreeSet::new(),
            stats: WorldStats::default(),
            prefix: prefix.trim_end_matches('/').to_string(),
            net: NetFaults::default(),
            rng,
            workload_rng: Rng::new(seed ^ 0x776f_726b),
            latency_ms,
            queue: BTreeMap::new(),
            seq: 0,
            actions: BTreeMap::new(),
            workload_mean_ms,
            workload_next: (workload_mean_ms > 0).then_some(now + workload_mean_ms),
            open_requests: BTreeMap::new(),
            tickets: BTreeMap::new(),
            posts: BTreeMap::new(),
            open_posts: BTreeSet::new(),
            conn_to_ws: BTreeMap::new(),
            ws_to_conn: BTreeMap::new(),
            fifo: BTreeMap::new(),
            fake_ticked_at: 0,
            fake_deadline,
            pbx_ticked_at: 0,
            pbx_workload: None,
        }
    }

    /// Starts PBX users changing their own presence, one change every `mean_ms` on average
    /// (its own random stream: runs without it draw exactly as before).
    pub fn start_pbx_workload(&mut self, seed: u64, mean_ms: u64) {
        let now = self.fake.now() as u64;
        self.pbx_workload = Some(PbxWorkload {
            rng: Rng::new(seed ^ 0x7062_782d_776f_726b),
            mean_ms: mean_ms.max(1),
            next: now + mean_ms.max(1),
        });
    }

    /// The user's own PBX presence: the activity of the `tel:` item (`""` without one).
    pub fn own_pbx_activity(&self, guid: &str) -> String {
        self.pbx
            .stored_presence(guid)
            .iter()
            .find(|i| i.contact == "tel:")
            .map(|i| i.activity.clone())
            .unwrap_or_default()
    }

    /// Whether PBX users change their presence in this run.
    pub fn has_pbx_workload(&self) -> bool {
        self.pbx_workload.is_some()
    }

    /// One PBX presence change of a random matched user; plans the next one.
    fn pbx_workload_step(&mut self, now: u64) {
        let Some(w) = self.pbx_workload.as_mut() else {
            return;
        };
        w.next = now + 1 + w.rng.below(2 * w.mean_ms);
        if self.matched.is_empty() {
            return;
        }
        let m = &self.matched[w.rng.below(self.matched.len() as u64) as usize];
        let activity = PBX_ACTIVITIES[w.rng.below(PBX_ACTIVITIES.len() as u64) as usize];
        let guid = m.pbx_guid.clone();
        let before = self.own_pbx_activity(&guid);
        if self.pbx.set_user_presence(&guid, activity, "") {
            self.stats.pbx_changes += 1;
            // Only a real change makes the connector write to Teams (and restarts the
            // preferred presence's lifetime there).
            if before != activity {
                self.pbx_changed_at.insert(guid, now);
            }
        }
        self.pump_pbx(now);
    }

    /// Plans `action` at virtual time `at`.
    pub fn plan(&mut self, at: u64, action: WorldAction) {
        self.seq += 1;
        self.actions.insert((at, self.seq), action);
    }

    /// The current network conditions.
    pub fn net(&self) -> &NetFaults {
        &self.net
    }

    /// Stops the Teams presence workload (e.g. to let everything settle).
    pub fn stop_workload(&mut self) {
        self.workload_next = None;
    }

    fn latency(&mut self) -> u64 {
        self.latency_ms + self.rng.below(self.latency_ms + 1)
    }

    fn schedule(&mut self, at: u64, item: Net) {
        self.seq += 1;
        self.queue.insert((at, self.seq), item);
    }

    /// Schedules in order behind earlier frames of the same connection and direction.
    fn schedule_fifo(&mut self, conn: u64, to_guest: bool, at: u64, item: Net) {
        let last = self.fifo.entry((conn, to_guest)).or_insert(0);
        let at = at.max(*last);
        *last = at;
        self.schedule(at, item);
    }

    fn apply(&mut self, now: u64, action: WorldAction) {
        *self.stats.faults.entry(action.kind()).or_default() += 1;
        match action {
            WorldAction::GraphFault(f) => self.fake.add_fault(f),
            WorldAction::ClearGraphFaults => self.fake.clear_faults(),
            WorldAction::Net(n) => self.net = n,
            WorldAction::KillPbx(node) => self.pbx.kill(&node),
            WorldAction::RestorePbx(node) => self.pbx.restore(&node),
            WorldAction::DropPbx(node) => self.pbx.close_mid_message(&node),
            WorldAction::TokenLifetime(s) => self.fake.config_mut().access_token_lifetime_s = s,
            WorldAction::RevokeRefreshTokens(user) => self.fake.revoke_refresh_tokens(&user),
            WorldAction::SubscriptionOutage => {
                let ids: Vec<String> = self
                    .fake
                    .subscriptions()
                    .iter()
                    .filter(|s| matches!(s.kind, fake_m365::subscriptions::SubKind::Presence(_)))
                    .map(|s| s.id.clone())
                    .collect();
                if !ids.is_empty() {
                    let pick = self.rng.below(ids.len() as u64) as usize;
                    self.fake.set_subscription_outage(&ids[pick], true);
                }
            }
            WorldAction::EndOutages => {
                let ids: Vec<String> = self
                    .fake
                    .subscriptions()
                    .iter()
                    .map(|s| s.id.clone())
                    .collect();
                for id in ids {
                    self.fake.set_subscription_outage(&id, false);
                }
            }
        }
        self.pump_fake(now);
        self.pump_pbx(now);
    }

    /// One Teams presence change of a random matched user.
    fn workload_step(&mut self, now: u64) {
        if self.matched.is_empty() {
            return;
        }
        let m = &self.matched[self.workload_rng.below(self.matched.len() as u64) as usize];
        let (availability, activity) =
            TEAMS_PAIRS[self.workload_rng.below(TEAMS_PAIRS.len() as u64) as usize];
        let (upn, uid) = (m.upn.clone(), m.uid.clone());
        if self
            .fake
            .teams_client_presence(&upn, None, availability, activity)
            .is_ok()
        {
            self.stats.teams_changes += 1;
            self.teams_changed_at.insert(uid, now);
        }
        self.pump_fake(now);
    }

    /// Collects what the fake Microsoft 365 wants to do after an interaction.
    fn pump_fake(&mut self, now: u64) {
        self.fake_ticked_at = now;
        for post in self.fake.take_effects() {
            self.stats.fake_posts += 1;
            self.open_posts.insert(post.id);
            self.schedule(
                now + post.timeout_ms.max(1) as u64,
                Net::FakePostTimeout(post.id),
            );
            let Some(path) = self.path_below_prefix(&post.url) else {
                // Not addressed to this instance: nobody answers.
                continue;
            };
            let (path, query) = match path.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (path, String::new()),
            };
            let req = InboundRequest {
                method: post.method.clone(),
                path,
                query,
                headers: post
                    .headers
                    .iter()
                    .map(|(name, value)| Header {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                body: post.body.clone(),
                peer: "52.114.0.1:443".into(),
            };
            let n = &self.net;
            let (drop, dup, slow, reorder) = (
                n.notify_drop_percent,
                n.notify_dup_percent,
                n.notify_slow_ms,
                n.notify_reorder_ms,
            );
            if self.rng.percent(drop) {
                self.stats.posts_dropped += 1;
                continue;
            }
            let copies = if self.rng.percent(dup) { 2 } else { 1 };
            for _ in 0..copies {
                let extra = self.rng.below(slow + 1) + self.rng.below(reorder + 1);
                let at = now + self.latency() + extra;
                self.schedule(at, Net::FakePost(post.id, req.clone()));
            }
        }
        for (ticket, resp) in self.fake.take_completed() {
            if let Some(id) = self.tickets.remove(&ticket) {
                let at = now + self.latency();
                self.schedule(
                    at,
                    Net::ToGuest(Incoming::HttpResponse(id, Ok(to_wit(resp)))),
                );
            }
        }
        self.fake_deadline = self.fake.next_deadline();
    }

    /// Collects what the fake PBX wants to do.
    fn pump_pbx(&mut self, now: u64) {
        self.pbx_ticked_at = now;
        for out in self.pbx.drain() {
            match out {
                Output::Dial { conn, url, .. } => {
                    self.stats.pbx_dials += 1;
                    let at = now + self.latency();
                    self.schedule_fifo(conn, true, at, Net::PbxConnect(conn, url));
                }
                Output::Send { conn, text } => {
                    if let Some(&ws) = self.conn_to_ws.get(&conn) {
                        let at = now + self.latency();
                        let msg = Incoming::WsMessage(ws, WsFrame::Text(text));
                        self.schedule_fifo(conn, true, at, Net::ToGuest(msg));
                    }
                }
                Output::Close { conn } | Output::CloseMidMessage { conn } => {
                    self.pbx.on_closed(conn);
                    if let Some(ws) = self.conn_to_ws.remove(&conn) {
                        self.ws_to_conn.remove(&ws);
                        let at = now + self.latency();
                        let closed = Incoming::WsClosed(ws, 1006, "connection lost".into());
                        self.schedule_fifo(conn, true, at, Net::ToGuest(closed));
                    }
                }
            }
        }
        // The frame log is for interactive debugging; in a week-long run it would only grow.
        self.pbx.clear_log();
    }

    /// The path below the instance prefix of an absolute URL, if it is addressed to us.
    fn path_below_prefix(&self, url: &str) -> Option<String> {
        let rest = url.split_once("://")?.1;
        let path = &rest[rest.find('/')?..];
        let below = path.strip_prefix(&self.prefix)?;
        if below.is_empty() {
            Some("/".into())
        } else if below.starts_with('/') {
            Some(below.to_string())
        } else if below.starts_with('?') {
            Some(format!("/{below}"))
        } else {
            None
        }
    }

    fn process(&mut self, now: u64, item: Net, ids: &mut Ids, out: &mut Vec<Incoming>) {
        match item {
            Net::ToFake(id, req) => {
                if !self.open_requests.contains_key(&id) {
                    return;
                }
                let target = url_target(&req.url);
                let mut r = Request::new(&req.method, &target).body(req.body.clone());
                for h in &req.headers {
                    r = r.header(&h.name, &h.value);
                }
                match self.fake.handle(r) {
                    Handled::Response(resp) => {
                        self.harvest_secrets(&resp.body);
                        let at = now + self.latency();
                        let inc = Incoming::HttpResponse(id, Ok(to_wit(resp)));
                        self.schedule(at, Net::ToGuest(inc));
                    }
                    Handled::Pending(ticket) => {
                        self.tickets.insert(ticket, id);
                    }
                    // The guest's own timeout answers it.
                    Handled::Hang => {}
                }
                self.pump_fake(now);
            }
            Net::ToGuest(inc) => {
                if let Incoming::HttpResponse(id, _) = &inc
                    && self.open_requests.remove(id).is_none()
                {
                    return;
                }
                out.push(inc);
            }
            Net::GuestTimeout(id) => {
                if self.open_requests.remove(&id).is_some() {
                    out.push(Incoming::HttpResponse(id, Err(HttpError::Timeout)));
                }
            }
            Net::PbxConnect(conn, url) => {
                let path = self.path_below_prefix(&url);
                match path {
                    Some(path) if self.pbx.node_status().iter().any(|n| n.conn == Some(conn)) => {
                        let ws = ids.fresh();
                        self.conn_to_ws.insert(conn, ws);
                        self.ws_to_conn.insert(ws, conn);
                        out.push(Incoming::WsOpen(WsOpen {
                            id: ws,
                            direction: WsDirection::Inbound,
                            path,
                            headers: vec![],
                            peer: format!("10.0.0.{}:{}", 1 + conn % 200, 40_000 + conn % 20_000),
                        }));
                        self.pbx.on_connected(conn);
                    }
                    _ => self.pbx.on_closed(conn),
                }
                self.pump_pbx(now);
            }
            Net::FakePost(post, req) => {
                if !self.open_posts.contains(&post) {
                    return;
                }
                let id = ids.fresh();
                self.posts.insert(id, (post, now));
                out.push(Incoming::HttpRequest(id, req));
            }
            Net::AnswerToFake(post, resp, sent_at) => {
                if self.open_posts.remove(&post) {
                    let content_type = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                        .map(|h| h.value.clone());
                    self.fake.outbound_result(
                        post,
                        OutboundResult::Status {
                            status: resp.status,
                            content_type,
                            body: resp.body,
                            elapsed_ms: now.saturating_sub(sent_at) as i64,
                        },
                    );
                    self.pump_fake(now);
                }
            }
            Net::FakePostTimeout(post) => {
                if self.open_posts.remove(&post) {
                    self.fake.outbound_result(post, OutboundResult::Timeout);
                    self.pump_fake(now);
                }
            }
            Net::ToPbx(conn, text) => {
                self.pbx.on_frame(conn, &text);
                self.pump_pbx(now);
            }
            Net::GuestClosed(conn) => {
                self.pbx.on_closed(conn);
                self.pump_pbx(now);
            }
        }
    }

    /// Remembers tokens the fake hands out: they must never show up in a guest log.
    fn harvest_secrets(&mut self, body: &[u8]) {
        if !body.starts_with(b"{") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        for key in ["access_token", "refresh_token", "id_token"] {
            if let Some(t) = v.get(key).and_then(|t| t.as_str())
                && t.len() >= 16
            {
                self.issued_secrets.insert(t.to_string());
            }
        }
    }

    /// When the fakes next need a tick: never earlier than just after the last one, so a stale
    /// deadline cannot spin the loop (a second later it is asked again).
    fn fakes_due(&self) -> Option<u64> {
        let fake = self.fake_deadline.map(|d| {
            let d = d.max(0) as u64;
            if d <= self.fake_ticked_at {
                self.fake_ticked_at + 1_000
            } else {
                d
            }
        });
        let pbx = self
            .pbx
            .next_deadline()
            .map(|d| d.max(self.pbx_ticked_at + 1));
        min_opt(fake, pbx)
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `POST /v1.0/subscriptions/{id}` style: the first three path segments, long ones elided.
fn request_kind(req: &HttpRequest) -> String {
    let target = url_target(&req.url);
    let path = target.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .take(3)
        .map(|s| if s.len() > 24 { "{id}" } else { s })
        .collect();
    format!("{} /{}", req.method, segs.join("/"))
}

/// `https://host/path?q` -> `/path?q`.
fn url_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

fn to_wit(resp: fake_m365::Response) -> HttpResponse {
    HttpResponse {
        status: resp.status,
        headers: resp
            .headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
        body: resp.body,
    }
}

impl World for FakesWorld {
    fn http_start(&mut self, now: u64, id: u64, req: HttpRequest) {
        self.stats.http_requests += 1;
        *self
            .stats
            .requests_by_kind
            .entry(request_kind(&req))
            .or_default() += 1;
        let deadline = now + u64::from(req.timeout_ms.max(1));
        self.open_requests.insert(id, deadline);
        self.schedule(deadline, Net::GuestTimeout(id));
        if self.rng.percent(self.net.http_reset_percent) {
            let at = now + self.latency();
            let err = Err(HttpError::Connection("connection reset by peer".into()));
            self.schedule(at, Net::ToGuest(Incoming::HttpResponse(id, err)));
            return;
        }
        let at = now + self.latency();
        self.schedule(at, Net::ToFake(id, req));
    }

    fn http_cancel(&mut self, _now: u64, id: u64) {
        self.open_requests.remove(&id);
    }

    fn respond(&mut self, now: u64, id: u64, resp: HttpResponse) {
        if let Some((post, sent_at)) = self.posts.remove(&id) {
            let at = now + self.latency();
            // `sent_at` is when the POST reached the guest; the fake measures from its own send,
            // so add the way there (one latency, roughly).
            let sent = sent_at.saturating_sub(self.latency_ms);
            self.schedule(at, Net::AnswerToFake(post, resp, sent));
        }
    }

    fn ws_connect(&mut self, now: u64, id: u64, url: String) {
        // The connector dials nothing in this world: refuse like an unreachable host.
        let at = now + self.latency();
        let closed = Incoming::WsClosed(id, 1006, format!("connect to {url} refused"));
        self.schedule(at, Net::ToGuest(closed));
    }

    fn ws_send(&mut self, now: u64, id: u64, frame: WsFrame) {
        if let (Some(&conn), WsFrame::Text(text)) = (self.ws_to_conn.get(&id), frame) {
            let at = now + self.latency();
            self.schedule_fifo(conn, false, at, Net::ToPbx(conn, text));
        }
    }

    fn ws_close(&mut self, now: u64, id: u64, _code: u16, _reason: String) {
        if let Some(conn) = self.ws_to_conn.remove(&id) {
            self.conn_to_ws.remove(&conn);
            let at = now + self.latency();
            self.schedule_fifo(conn, false, at, Net::GuestClosed(conn));
        }
    }

    fn next_wakeup(&self) -> Option<u64> {
        let queue = self.queue.keys().next().map(|(t, _)| *t);
        let action = self.actions.keys().next().map(|(t, _)| *t);
        let pbx_workload = self.pbx_workload.as_ref().map(|w| w.next);
        [
            queue,
            action,
            self.workload_next,
            pbx_workload,
            self.fakes_due(),
        ]
        .into_iter()
        .fold(None, min_opt)
    }

    fn poll(&mut self, now: u64, ids: &mut Ids) -> Vec<Incoming> {
        let mut out = Vec::new();
        loop {
            if let Some(entry) = self.actions.first_entry()
                && entry.key().0 <= now
            {
                let action = entry.remove();
                self.apply(now, action);
                continue;
            }
            if let Some(entry) = self.queue.first_entry()
                && entry.key().0 <= now
            {
                let item = entry.remove();
                self.process(now, item, ids, &mut out);
                continue;
            }
            if let Some(at) = self.workload_next
                && at <= now
            {
                self.workload_step(now);
                // Uniform in [0, 2 * mean]: a Poisson-like rhythm without floats.
                let gap = 1 + self.workload_rng.below(2 * self.workload_mean_ms);
                self.workload_next = Some(now + gap);
                continue;
            }
            if self.pbx_workload.as_ref().is_some_and(|w| w.next <= now) {
                self.pbx_workload_step(now);
                continue;
            }
            if self.fakes_due().is_some_and(|d| d <= now) {
                self.pbx.tick();
                self.pump_pbx(now);
                self.pump_fake(now);
                continue;
            }
            break;
        }
        out
    }
}
