//! PBX -> Teams presence (product.md F2): the PBX presence of every matched user is monitored
//! and written to Teams with an application token (client credentials,
//! `Presence.ReadWrite.All`).
//!
//! - PBX on-the-phone -> the app's call session (`setPresence` Busy/InACall, PT10M), renewed
//!   every `presence-out.call-renew-s` while the call lasts, `clearPresence` when it ends or the
//!   PBX connection that showed it drops.
//! - Other PBX activities -> `setUserPreferredPresence` (see [`mapping`]); available -> clear.
//! - Only the newest PBX item the connector did not write itself counts ([`mapping`]), and
//!   what the connector asserts in Teams is recorded ([`echo`]) so the Teams -> PBX direction
//!   does not carry it back: no echo in either direction.
//! - Writes are coalesced per user (only the latest state is sent), packed into `$batch`es of
//!   20, a user's writes ordered with `dependsOn` and never two batches in flight for one user;
//!   a request budget per 30 s and `Retry-After` keep it out of throttling.
//!
//! KV: `presence-out/pbx/<entra id>` the PBX activity that counts (absent or `null`: unknown),
//! `presence-out/teams/<entra id>` what Teams holds from us ([`Applied`]),
//! `presence-out/mon/<pbx guid>` the connection a user's presence monitor runs on,
//! `presence-out/inflight/<entra id>` the state a batch in flight leads to,
//! `presence-out/own/<entra id>` (see [`echo`]), `presence-out/alien*` (see [`alien`]).

pub mod alien;
pub mod batch;
pub mod echo;
pub mod mapping;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::env::{Env, Level, target};
use crate::event::{HttpError, HttpResponse, RequestId, TimerId, WsId};
use crate::graph::api;
use crate::graph::token::{self, Client};
use crate::graph::tokens::{AuthState, SignIn, TokenEvent, Tokens};
use crate::matching::{self, Matched};
use crate::pbx::{ImpersonationResult, Pbx, PbxError, PbxEvent, monitor, users};
use crate::settings::{self, Settings};
use crate::store;
use batch::Op;
use mapping::{DO_NOT_DISTURB, IN_A_CALL, Target};

/// Timer tags of this module start with this.
pub const TIMER_PREFIX: &str = "f2:";
/// Name of the app registration's token in [`Tokens`].
pub const ACCOUNT: &str = "presence-out";

const SEEN_PREFIX: &str = "presence-out/pbx/";
const APPLIED_PREFIX: &str = "presence-out/teams/";
const MONITOR_PREFIX: &str = "presence-out/mon/";
/// Users with writes in flight and the state they lead to (a restart cannot see the answer).
const INFLIGHT_PREFIX: &str = "presence-out/inflight/";
/// Batches in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// The budget window (graph.md 7.2: presence writes are limited per 30 s).
const WINDOW_MS: u64 = 30_000;

/// Settings of the feature (see guest/README.md).
#[derive(Debug, Clone)]
pub struct Config {
    /// The app registration (a confidential client).
    pub client: Client,
    /// `<resource>/.default`.
    pub scope: String,
    /// Graph base URL.
    pub graph_url: String,
    /// `presence-out.dnd-during-calls`: Do Not Disturb in Teams while a PBX call lasts.
    pub dnd_during_calls: bool,
    /// `presence-out.alien-calls`: a Teams call makes the PBX user busy (not built yet).
    pub alien_calls: bool,
    /// Renewal rhythm of the call session.
    pub renew_ms: u64,
    /// How long changes are collected before a batch leaves.
    pub batch_delay_ms: u64,
    /// How often the matched users are checked for new or lost monitors.
    pub scan_ms: u64,
    /// Graph requests allowed per 30 s.
    pub budget: usize,
    /// Contacts whose PBX items never count (the connector's own and `im:`).
    pub excluded: Vec<String>,
}

fn seconds(env: &mut impl Env, name: &str, default_s: f64) -> u64 {
    match settings::value(env, name) {
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => (s * 1000.0) as u64,
            _ => {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("{name} `{v}` is not a number of seconds; using {default_s}"),
                );
                (default_s * 1000.0) as u64
            }
        },
        None => (default_s * 1000.0) as u64,
    }
}

fn flag(env: &mut impl Env, name: &str) -> bool {
    match settings::value(env, name).map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => true,
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => false,
        Some(v) => {
            env.log(
                Level::Error,
                target::CONFIG,
                &format!("{name} `{v}` is not true or false; using false"),
            );
            false
        }
    }
}

impl Config {
    /// Reads the settings; `None` (with the reason logged) when the feature is not configured.
    pub fn read(env: &mut impl Env, s: &Settings) -> Option<Self> {
        let tenant = settings::value(env, "presence-out.tenant");
        let client_id = settings::value(env, "presence-out.client-id");
        let secret = settings::value(env, "presence-out.client-secret");
        let (Some(tenant), Some(client_id), Some(secret)) = (tenant, client_id, secret) else {
            let any = ["tenant", "client-id", "client-secret"]
                .iter()
                .any(|n| settings::value(env, &format!("presence-out.{n}")).is_some());
            if any {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    "PBX -> Teams presence needs presence-out.tenant, presence-out.client-id and presence-out.client-secret; it is off",
                );
            }
            return None;
        };
        let login = settings::value(env, "graph.login-url")
            .unwrap_or_else(|| token::DEFAULT_LOGIN_BASE.into());
        let graph_url = settings::value(env, "graph.url")
            .unwrap_or_else(|| token::DEFAULT_GRAPH_RESOURCE.into());
        let resource = settings::value(env, "graph.resource").unwrap_or_else(|| graph_url.clone());
        let budget = match settings::value(env, "presence-out.budget-per-30s") {
            None => 1500,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or_else(|| {
                    env.log(
                        Level::Error,
                        target::CONFIG,
                        &format!(
                            "presence-out.budget-per-30s `{v}` is not a positive number; using 1500"
                        ),
                    );
                    1500
                }),
        };
        Some(Config {
            client: Client {
                login_base: login,
                tenant,
                client_id,
                client_secret: Some(secret),
            },
            scope: format!("{}/.default", resource.trim_end_matches('/')),
            graph_url,
            dnd_during_calls: flag(env, "presence-out.dnd-during-calls"),
            alien_calls: flag(env, "presence-out.alien-calls"),
            renew_ms: seconds(env, "presence-out.call-renew-s", 300.0).max(1),
            batch_delay_ms: seconds(env, "presence-out.batch-delay-s", 0.2),
            scan_ms: seconds(env, "presence-out.scan-s", 5.0).max(100),
            budget,
            excluded: vec![
                s.presence_contact.clone(),
                s.calendar_contact.clone(),
                "im:".into(),
            ],
        })
    }
}

/// What Teams holds from the connector for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// When the call session was last set (ms); `None`: no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_at_ms: Option<u64>,
    /// The preferred presence set, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<(String, String)>,
    /// When the preferred presence was set (ms): it lapses in Teams after its lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_at_ms: Option<u64>,
}

impl Applied {
    /// What Teams shows because of us, and until when: the preferred presence wins over
    /// sessions (graph.md 4.9); each lapses in Teams after its lifetime unless renewed.
    fn shown(&self) -> Option<(&str, &str, u64)> {
        let preferred = self.preferred.as_ref().map(|(a, b)| {
            let until = self.preferred_at_ms.unwrap_or(0) + mapping::preferred_lifetime_ms(a);
            (a.as_str(), b.as_str(), until)
        });
        let call = self
            .call_at_ms
            .map(|at| (IN_A_CALL.0, IN_A_CALL.1, at + batch::CALL_EXPIRATION_MS));
        preferred.or(call)
    }

    fn after(&self, op: Op, now: u64) -> Applied {
        let mut a = self.clone();
        match op {
            Op::SetCall => a.call_at_ms = Some(now),
            Op::ClearCall => a.call_at_ms = None,
            Op::SetPreferred((x, y)) => {
                a.preferred = Some((x.into(), y.into()));
                a.preferred_at_ms = Some(now);
            }
            Op::ClearPreferred => {
                a.preferred = None;
                a.preferred_at_ms = None;
            }
        }
        a
    }
}

/// The writes that bring Teams from `applied` to what the PBX activity `seen` asks for, in the
/// order they must happen. `seen` `None`: the PBX state is unknown (monitor lost), so a call
/// session is cleared and a preferred presence kept.
pub fn plan(cfg: &Config, seen: Option<&str>, applied: &Applied, now: u64) -> Vec<Op> {
    enum Pref {
        Keep,
        Clear,
        Set(mapping::Pair),
    }
    let (call, pref) = match seen.map(mapping::target) {
        None | Some(None) => (false, Pref::Keep),
        Some(Some(Target::Call)) if cfg.dnd_during_calls => (true, Pref::Set(DO_NOT_DISTURB)),
        Some(Some(Target::Call)) => (true, Pref::Clear),
        Some(Some(Target::Preferred(p))) => (false, Pref::Set(p)),
        Some(Some(Target::Clear)) => (false, Pref::Clear),
    };
    let mut ops = Vec::new();
    match (call, applied.call_at_ms) {
        (true, None) => ops.push(Op::SetCall),
        (true, Some(at)) if now.saturating_sub(at) >= cfg.renew_ms => ops.push(Op::SetCall),
        (false, Some(_)) => ops.push(Op::ClearCall),
        _ => {}
    }
    match pref {
        Pref::Set(p)
            if applied
                .preferred
                .as_ref()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                != Some(p) =>
        {
            ops.push(Op::SetPreferred(p))
        }
        Pref::Clear if applied.preferred.is_some() => ops.push(Op::ClearPreferred),
        _ => {}
    }
    ops
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Monitor {
    ws: WsId,
    /// `PresenceState` said up (`None`: not answered yet).
    #[serde(default)]
    up: Option<bool>,
}

/// One request of a batch in flight.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    user: String,
    op: Op,
}

/// Counters for the status page.
#[derive(Debug, Clone, Default)]
struct Stats {
    writes: u64,
    batches: u64,
    throttled: u64,
    refused: u64,
}

fn seen_key(id: &str) -> String {
    format!("{SEEN_PREFIX}{}", store::segment(id))
}

fn applied_key(id: &str) -> String {
    format!("{APPLIED_PREFIX}{}", store::segment(id))
}

fn inflight_key(id: &str) -> String {
    format!("{INFLIGHT_PREFIX}{}", store::segment(id))
}

fn monitor_key(guid: &str) -> String {
    format!("{MONITOR_PREFIX}{}", store::segment(guid))
}

/// The feature's state.
#[derive(Debug)]
pub struct PresenceOut {
    cfg: Config,
    /// Matched users by PBX guid.
    users: BTreeMap<String, Matched>,
    monitors: BTreeMap<String, Monitor>,
    /// Users with a call session and when it was set (renewals).
    calls: BTreeMap<String, u64>,
    /// Users (Entra ids) whose Teams state may differ from what their PBX state asks for.
    dirty: BTreeSet<String>,
    /// Users with a batch in flight: their next writes wait for its answer.
    busy: BTreeSet<String>,
    pending: BTreeMap<RequestId, Vec<Sent>>,
    flush_timer: Option<TimerId>,
    /// No batch leaves before this (throttling, failures).
    not_before_ms: u64,
    /// Requests sent within the budget window: (when, how many).
    window: VecDeque<(u64, usize)>,
    timers: BTreeSet<TimerId>,
    failures: u32,
    stats: Stats,
    /// Problems already logged (unknown PBX activities, monitors that cannot be set up).
    unknown_logged: BTreeSet<String>,
}

impl PresenceOut {
    /// The feature when it is configured: registers its token with `tokens` and starts it.
    /// Token events of the start are appended to `events`.
    pub fn configure(
        env: &mut impl Env,
        settings: &Settings,
        tokens: &mut Tokens,
        pbx: &Pbx,
        events: &mut Vec<TokenEvent>,
    ) -> Option<Self> {
        let cfg = Config::read(env, settings)?;
        tokens.add(
            env,
            ACCOUNT,
            cfg.client.clone(),
            SignIn::ClientCredentials,
            &cfg.scope,
        );
        events.extend(tokens.start(env, ACCOUNT));
        if settings::value(env, "presence.accounts").is_none() {
            // The users to sync are F1's matches: without F1 there is nobody to monitor.
            env.log(
                Level::Warn,
                target::CONFIG,
                "PBX -> Teams presence syncs the users matched by Teams -> PBX presence; presence.accounts is not set, so no user is matched",
            );
        }
        let mut me = PresenceOut::new(cfg);
        me.init(env, pbx);
        Some(me)
    }

    /// A stopped feature with `cfg`.
    pub fn new(cfg: Config) -> Self {
        PresenceOut {
            cfg,
            users: BTreeMap::new(),
            monitors: BTreeMap::new(),
            calls: BTreeMap::new(),
            dirty: BTreeSet::new(),
            busy: BTreeSet::new(),
            pending: BTreeMap::new(),
            flush_timer: None,
            not_before_ms: 0,
            window: VecDeque::new(),
            timers: BTreeSet::new(),
            failures: 0,
            stats: Stats::default(),
            unknown_logged: BTreeSet::new(),
        }
    }

    /// Restores sessions and monitors that survived (a restart or hot swap) and starts the
    /// timers.
    fn init(&mut self, env: &mut impl Env, pbx: &Pbx) {
        // Writes a previous instance left in flight may have happened: assume they did (a
        // session we believe in is renewed or cleared; a clear of one that is gone gets 404,
        // which is fine) and look at those users again.
        let mut inflight = Vec::new();
        store::for_each(env, INFLIGHT_PREFIX, |k, v| {
            if let Ok(a) = serde_json::from_slice::<Applied>(v) {
                inflight.push((k[INFLIGHT_PREFIX.len()..].to_string(), a));
            }
        });
        for (user, after) in inflight {
            store::set_json(env, &applied_key(&user), &after);
            env.kv_delete(&inflight_key(&user));
            self.dirty.insert(user);
        }
        let mut calls = BTreeMap::new();
        store::for_each(env, APPLIED_PREFIX, |k, v| {
            if let Ok(a) = serde_json::from_slice::<Applied>(v)
                && let Some(at) = a.call_at_ms
            {
                calls.insert(k[APPLIED_PREFIX.len()..].to_string(), at);
            }
        });
        self.calls = calls;
        // A monitor lives as long as its connection: the host keeps sockets across a hot swap.
        let mut monitors = BTreeMap::new();
        let mut gone = Vec::new();
        store::for_each(env, MONITOR_PREFIX, |k, v| {
            match serde_json::from_slice::<Monitor>(v) {
                Ok(m) if pbx.connection(m.ws).is_some_and(|c| c.is_pbx()) => {
                    monitors.insert(k[MONITOR_PREFIX.len()..].to_string(), m);
                }
                _ => gone.push(k.to_string()),
            }
        });
        for k in gone {
            env.kv_delete(&k);
        }
        self.monitors = monitors;
        self.users = matching::load(env)
            .into_values()
            .map(|m| (m.guid.clone(), m))
            .collect();
        // Users whose monitor is gone keep their Teams state until their PBX reports again
        // (a restart must not make a call flap); a call nobody confirms is cleared at its
        // next renewal instead of being renewed.
        self.set_timer(env, self.renew_check_ms(), "renew");
        self.set_timer(env, self.cfg.scan_ms, "scan");
    }

    fn renew_check_ms(&self) -> u64 {
        (self.cfg.renew_ms / 5).clamp(100, 60_000)
    }

    fn set_timer(&mut self, env: &mut impl Env, after_ms: u64, kind: &str) -> TimerId {
        let id = env.timer_set(after_ms, &format!("{TIMER_PREFIX}{kind}"));
        self.timers.insert(id);
        id
    }

    /// Schedules a flush after `delay_ms` unless one is scheduled already.
    fn schedule(&mut self, env: &mut impl Env, delay_ms: u64) {
        if self.flush_timer.is_none() && !self.dirty.is_empty() {
            let id = self.set_timer(env, delay_ms, "flush");
            self.flush_timer = Some(id);
        }
    }

    /// A token manager event.
    pub fn on_token(&mut self, env: &mut impl Env, tokens: &Tokens, ev: &TokenEvent) {
        match ev {
            TokenEvent::Ready { account } if account == ACCOUNT => self.flush(env, tokens),
            TokenEvent::Failed { account, error } if account == ACCOUNT => env.log(
                Level::Error,
                target::GRAPH,
                &format!(
                    "PBX -> Teams presence: sign-in of the app registration failed: {error:?}"
                ),
            ),
            _ => {}
        }
    }

    /// A PBX event (the token is not needed: writes leave from the flush timer).
    pub fn on_pbx(&mut self, env: &mut impl Env, pbx: &mut Pbx, _tokens: &Tokens, ev: &PbxEvent) {
        match ev {
            PbxEvent::Connected { pbx: name, .. } => {
                // Users of this PBX watched elsewhere move to it: calls show only there.
                let moved: Vec<(String, WsId)> = self
                    .users
                    .values()
                    .filter(|m| m.loc == *name)
                    .filter_map(|m| {
                        self.monitors
                            .get(&m.guid)
                            .map(|mon| (m.guid.clone(), mon.ws))
                    })
                    .filter(|(_, ws)| {
                        pbx.connection(*ws).and_then(|c| c.pbx.as_deref()) != Some(name.as_str())
                    })
                    .collect();
                for (guid, ws) in moved {
                    if let Some(sip) = self.sip(env, pbx, &guid) {
                        let _ = pbx.unsubscribe_presence(env, ws, &sip, &guid);
                    }
                    self.monitors.remove(&guid);
                    env.kv_delete(&monitor_key(&guid));
                }
                self.scan(env, pbx);
                if self.cfg.alien_calls {
                    for guid in alien::teams_calls(env) {
                        alien::mark_due(env, &guid);
                    }
                }
            }
            PbxEvent::Disconnected { ws, .. } => {
                let lost: Vec<String> = self
                    .monitors
                    .iter()
                    .filter(|(_, m)| m.ws == *ws)
                    .map(|(g, _)| g.clone())
                    .collect();
                for guid in lost {
                    self.monitors.remove(&guid);
                    env.kv_delete(&monitor_key(&guid));
                    if let Some(m) = self.users.get(&guid).cloned() {
                        self.seen(env, &m.id, None);
                    }
                }
                for guid in alien::forget_connection(env, *ws) {
                    alien::mark_due(env, &guid);
                }
                // Another connection (the master) may take over at once.
                self.scan(env, pbx);
            }
            PbxEvent::UsersLoaded { .. } => self.scan(env, pbx),
            PbxEvent::Impersonation(r) => self.on_impersonation(env, pbx, r),
            PbxEvent::PresenceMonitor { guid, up, .. } => {
                if let Some(mon) = self.monitors.get_mut(guid) {
                    if mon.up != Some(*up) && !*up {
                        let name = self
                            .users
                            .get(guid)
                            .map(|m| m.name.clone())
                            .unwrap_or_default();
                        env.log(
                            Level::Warn,
                            target::APP,
                            &format!(
                                "PBX presence of {name} ({guid}) is not visible to the App object: allow it presence and on-the-phone"
                            ),
                        );
                    }
                    mon.up = Some(*up);
                    let mon = mon.clone();
                    store::set_json(env, &monitor_key(guid), &mon);
                }
            }
            PbxEvent::Presence { guid, items, .. } => {
                let Some(m) = self.users.get(guid).cloned() else {
                    return;
                };
                if !self.monitors.contains_key(guid) {
                    return;
                }
                let activity = mapping::counted_activity(items, &self.cfg.excluded).to_string();
                if activity == mapping::ON_THE_PHONE && alien::active(env, guid) {
                    // Our own alien call (a Teams call) must not come back as a PBX call.
                    return;
                }
                if mapping::target(&activity).is_none()
                    && self.unknown_logged.insert(activity.clone())
                {
                    env.log(
                        Level::Info,
                        target::APP,
                        &format!(
                            "PBX activity `{activity}` has no Teams presence; Teams unchanged"
                        ),
                    );
                }
                self.seen(env, &m.id, Some(activity));
            }
            _ => {}
        }
        self.flush_soon(env);
    }

    /// Work left by the event: alien calls of users whose Teams call started or ended.
    pub fn after_event(&mut self, env: &mut impl Env, pbx: &mut Pbx) {
        if !self.cfg.alien_calls {
            return;
        }
        for guid in alien::take_due(env, 100) {
            let want = alien::in_teams_call(env, &guid);
            let have = alien::get(env, &guid);
            match (want, have) {
                (true, None) => {
                    let Some(m) = self.users.get(&guid).cloned() else {
                        continue;
                    };
                    let Some(sip) = self.sip(env, pbx, &guid) else {
                        continue;
                    };
                    match pbx.create_user_api(env, Some(&m.loc), &sip, &guid) {
                        Ok(ws) => alien::put(
                            env,
                            &guid,
                            Some(&alien::AlienCall {
                                ws,
                                ..Default::default()
                            }),
                        ),
                        Err(e) => env.log(
                            Level::Warn,
                            target::APP,
                            &format!(
                                "{} is in a Teams call but cannot be made busy in the PBX: {e}",
                                m.name
                            ),
                        ),
                    }
                }
                (true, Some(mut c)) if c.removing => {
                    c.removing = false;
                    alien::put(env, &guid, Some(&c));
                }
                (false, Some(mut c)) => match (&c.target, c.id) {
                    (Some(target), Some(id)) => {
                        let _ = pbx.remove_alien_call(env, c.ws, target, id, &guid);
                        alien::put(env, &guid, None);
                    }
                    // Still being set up: removed as soon as it exists.
                    _ => {
                        c.removing = true;
                        alien::put(env, &guid, Some(&c));
                    }
                },
                _ => {}
            }
        }
    }

    fn on_impersonation(&mut self, env: &mut impl Env, pbx: &mut Pbx, r: &ImpersonationResult) {
        let Some(guid) = r.msg["src"].as_str().and_then(monitor::parse_src) else {
            return;
        };
        let guid = guid.to_string();
        let Some(mut c) = alien::get(env, &guid) else {
            return;
        };
        let error = crate::pbx::presence::error_of(&r.msg);
        let name = self
            .users
            .get(&guid)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| guid.clone());
        match r.mt.as_str() {
            "CreateApiResult" => {
                let target = r.msg["target"].as_str().filter(|t| !t.is_empty());
                match (error, target) {
                    (None, Some(target)) => {
                        c.target = Some(target.to_string());
                        if c.removing {
                            let _ = pbx.delete_user_api(env, c.ws, target, &guid);
                            alien::put(env, &guid, None);
                        } else {
                            let _ = pbx.add_alien_call(env, c.ws, target, &guid);
                            alien::put(env, &guid, Some(&c));
                        }
                    }
                    (e, _) => {
                        env.log(
                            Level::Warn,
                            target::APP,
                            &format!(
                                "{name}: PbxImpersonation refused ({}); enable impersonation on the App object",
                                e.unwrap_or_else(|| "no target".into())
                            ),
                        );
                        alien::put(env, &guid, None);
                    }
                }
            }
            "AddAlienCallResult" => {
                let target = c.target.clone().unwrap_or_default();
                match (error, r.msg["id"].as_u64()) {
                    (None, Some(id)) if c.removing => {
                        let _ = pbx.remove_alien_call(env, c.ws, &target, id, &guid);
                        alien::put(env, &guid, None);
                    }
                    (None, Some(id)) => {
                        c.id = Some(id);
                        alien::put(env, &guid, Some(&c));
                        env.log(
                            Level::Info,
                            target::APP,
                            &format!("{name} is in a Teams call: busy for PBX calls"),
                        );
                    }
                    (e, _) => {
                        env.log(
                            Level::Warn,
                            target::APP,
                            &format!("{name}: AddAlienCall refused ({})", e.unwrap_or_default()),
                        );
                        let _ = pbx.delete_user_api(env, c.ws, &target, &guid);
                        alien::put(env, &guid, None);
                    }
                }
            }
            _ => {
                if let Some(e) = error {
                    env.log(
                        Level::Warn,
                        target::APP,
                        &format!("{name}: {} failed: {e}", r.mt),
                    );
                }
            }
        }
    }

    /// Records the PBX activity that counts for a user; a change makes the user dirty.
    fn seen(&mut self, env: &mut impl Env, id: &str, activity: Option<String>) {
        let key = seen_key(id);
        let old: Option<Option<String>> = store::get_json(env, &key);
        if old.as_ref() != Some(&activity) {
            store::set_json(env, &key, &activity);
            self.dirty.insert(id.to_string());
        }
    }

    /// Lets a burst of changes collect for `presence-out.batch-delay-s`, then flushes.
    fn flush_soon(&mut self, env: &mut impl Env) {
        let delay = self.cfg.batch_delay_ms;
        self.schedule(env, delay);
    }

    /// The SIP name (h323) of a PBX user, from the replicated rows.
    fn sip(&self, env: &mut impl Env, pbx: &Pbx, guid: &str) -> Option<String> {
        let loc = self
            .users
            .get(guid)
            .map(|m| m.loc.clone())
            .unwrap_or_default();
        let mut names: Vec<String> = vec![loc];
        names.extend(pbx.connections().filter_map(|c| c.pbx.clone()));
        names
            .iter()
            .filter(|n| !n.is_empty())
            .find_map(|n| users::get(env, n, guid))
            .map(|r| r.h323)
            .filter(|h| !h.is_empty())
    }

    /// Brings the monitors in line with the matched users (F1's `match/user/`).
    fn scan(&mut self, env: &mut impl Env, pbx: &mut Pbx) {
        let now: BTreeMap<String, Matched> = matching::load(env)
            .into_values()
            .map(|m| (m.guid.clone(), m))
            .collect();
        let gone: Vec<Matched> = self
            .users
            .values()
            .filter(|m| !now.contains_key(&m.guid))
            .cloned()
            .collect();
        for m in gone {
            if let Some(mon) = self.monitors.remove(&m.guid) {
                if let Some(sip) = self.sip(env, pbx, &m.guid) {
                    let _ = pbx.unsubscribe_presence(env, mon.ws, &sip, &m.guid);
                }
                env.kv_delete(&monitor_key(&m.guid));
            }
            // No longer synced: take back what we set.
            self.seen(env, &m.id, Some(String::new()));
        }
        self.users = now;
        let unwatched: Vec<String> = self
            .users
            .keys()
            .filter(|g| !self.monitors.contains_key(*g))
            .cloned()
            .collect();
        for guid in unwatched {
            let Some(sip) = self.sip(env, pbx, &guid) else {
                continue;
            };
            let loc = self.users[&guid].loc.clone();
            match pbx.subscribe_presence(env, Some(&loc), &sip, &guid) {
                Ok(ws) => {
                    let mon = Monitor { ws, up: None };
                    store::set_json(env, &monitor_key(&guid), &mon);
                    self.monitors.insert(guid, mon);
                }
                Err(PbxError::NotConnected) => break,
                Err(e) => {
                    // Said once, not at every scan: it needs the administrator.
                    if self.unknown_logged.insert(format!("monitor: {e}")) {
                        env.log(
                            Level::Warn,
                            target::APP,
                            &format!("PBX presence of {sip} cannot be monitored: {e}"),
                        );
                    }
                    break;
                }
            }
        }
        env.gauge_set(
            "presence_out_monitored_users",
            &[],
            self.monitors.len() as f64,
        );
    }

    /// A timer of this module.
    pub fn on_timer(
        &mut self,
        env: &mut impl Env,
        pbx: &mut Pbx,
        tokens: &Tokens,
        id: TimerId,
        tag: &str,
    ) {
        if !self.timers.remove(&id) {
            return; // a timer of a previous guest instance
        }
        match tag.strip_prefix(TIMER_PREFIX).unwrap_or("") {
            "flush" => {
                self.flush_timer = None;
                self.flush(env, tokens);
            }
            "renew" => {
                let now = env.now_ms();
                let due: Vec<String> = self
                    .calls
                    .iter()
                    .filter(|(_, at)| now.saturating_sub(**at) >= self.cfg.renew_ms)
                    .map(|(u, _)| u.clone())
                    .collect();
                for user in due {
                    let watched = self
                        .users
                        .values()
                        .any(|m| m.id == user && self.monitors.contains_key(&m.guid));
                    if watched {
                        self.dirty.insert(user);
                    } else {
                        // No PBX confirms the call any more: end it rather than renew it.
                        self.seen(env, &user, None);
                        self.dirty.insert(user);
                    }
                }
                self.flush(env, tokens);
                self.set_timer(env, self.renew_check_ms(), "renew");
            }
            "scan" => {
                self.scan(env, pbx);
                self.flush_soon(env);
                self.set_timer(env, self.cfg.scan_ms, "scan");
            }
            _ => {}
        }
    }

    /// Requests still allowed in the budget window, and when the window frees up.
    fn budget_left(&mut self, now: u64) -> (usize, u64) {
        while self
            .window
            .front()
            .is_some_and(|(at, _)| at + WINDOW_MS <= now)
        {
            self.window.pop_front();
        }
        let used: usize = self.window.iter().map(|(_, n)| n).sum();
        let frees_at = self
            .window
            .front()
            .map(|(at, _)| at + WINDOW_MS)
            .unwrap_or(now);
        (self.cfg.budget.saturating_sub(used), frees_at)
    }

    /// Sends what the dirty users need, in batches of up to 20 requests.
    fn flush(&mut self, env: &mut impl Env, tokens: &Tokens) {
        let now = env.now_ms();
        if self.dirty.is_empty() {
            return;
        }
        if now < self.not_before_ms {
            let wait = self.not_before_ms - now;
            self.schedule(env, wait);
            return;
        }
        let Some(token) = tokens.access_token(ACCOUNT, now).map(str::to_string) else {
            return; // the Ready event flushes
        };
        while self.pending.len() < MAX_IN_FLIGHT {
            let (left, frees_at) = self.budget_left(now);
            let mut requests = Vec::new();
            let mut sent = Vec::new();
            let mut done = Vec::new();
            for user in self.dirty.iter().filter(|u| !self.busy.contains(*u)) {
                let seen: Option<String> =
                    store::get_json::<Option<String>>(env, &seen_key(user)).flatten();
                let applied: Applied = store::get_json(env, &applied_key(user)).unwrap_or_default();
                let ops = plan(&self.cfg, seen.as_deref(), &applied, now);
                if ops.is_empty() {
                    done.push(user.clone());
                    continue;
                }
                if requests.len() + ops.len() > batch::MAX_REQUESTS.min(left) {
                    break;
                }
                let mut prev: Option<String> = None;
                let mut after = applied.clone();
                for op in ops {
                    let id = (requests.len() + 1).to_string();
                    requests.push(op.batch_request(
                        &id,
                        user,
                        prev.as_deref(),
                        &self.cfg.client.client_id,
                    ));
                    sent.push(Sent {
                        id: id.clone(),
                        user: user.clone(),
                        op,
                    });
                    after = after.after(op, now);
                    prev = Some(id);
                }
                done.push(user.clone());
                // Announce the state before it can come back in a notification.
                echo::assert_state(env, user, after.shown());
                store::set_json(env, &inflight_key(user), &after);
            }
            for u in &done {
                self.dirty.remove(u);
            }
            if requests.is_empty() {
                // Users left over that are not waiting for a batch wait for the budget.
                if self.dirty.iter().any(|u| !self.busy.contains(u)) {
                    let wait = frees_at.saturating_sub(now).max(1);
                    self.schedule(env, wait);
                }
                break;
            }
            for s in &sent {
                self.busy.insert(s.user.clone());
            }
            self.window.push_back((now, requests.len()));
            let url = format!("{}/$batch", api::root(&self.cfg.graph_url));
            let body = json!({ "requests": requests });
            let id = env.http_start(api::request("POST", url, &token, Some(&body)));
            self.stats.batches += 1;
            env.counter_add("presence_out_batches_total", &[], 1);
            self.pending.insert(id, sent);
        }
    }

    /// An HTTP completion; `false` if it is not ours.
    pub fn on_response(
        &mut self,
        env: &mut impl Env,
        tokens: &Tokens,
        id: RequestId,
        result: &Result<HttpResponse, HttpError>,
    ) -> bool {
        let Some(sent) = self.pending.remove(&id) else {
            return false;
        };
        let now = env.now_ms();
        for s in &sent {
            self.busy.remove(&s.user);
            env.kv_delete(&inflight_key(&s.user));
        }
        let answers = match result {
            Ok(resp) if resp.status == 200 => batch::answers(&resp.body),
            _ => None,
        };
        let Some(answers) = answers else {
            // The whole batch failed: everyone in it is tried again after a pause.
            let why = match result {
                Ok(resp) => match api::check(resp) {
                    Err(e) => {
                        if let Some(ra) = e.retry_after_ms {
                            self.not_before_ms = self.not_before_ms.max(now + ra);
                        }
                        e.to_string()
                    }
                    Ok(_) => format!("unreadable $batch answer (HTTP {})", resp.status),
                },
                Err(e) => format!("{e:?}"),
            };
            self.failures += 1;
            let pause = api::backoff_ms(self.failures, 1_000, 60_000, env.random_u64());
            self.not_before_ms = self.not_before_ms.max(now + pause);
            env.log(
                Level::Warn,
                target::GRAPH,
                &format!("PBX -> Teams presence batch failed ({why}); retrying"),
            );
            for s in sent {
                self.dirty.insert(s.user);
            }
            self.schedule(env, self.not_before_ms.saturating_sub(now));
            return true;
        };
        self.failures = 0;
        let mut refused = 0u32;
        let by_id: BTreeMap<&str, &batch::Answer> =
            answers.iter().map(|a| (a.id.as_str(), a)).collect();
        for s in &sent {
            let Some(a) = by_id.get(s.id.as_str()) else {
                self.dirty.insert(s.user.clone());
                continue;
            };
            // A session or preference that is already gone is what a clear wanted.
            let gone_ok = a.status == 404 && matches!(s.op, Op::ClearCall | Op::ClearPreferred);
            if (200..300).contains(&a.status) || gone_ok {
                let key = applied_key(&s.user);
                let applied: Applied = store::get_json(env, &key).unwrap_or_default();
                let after = applied.after(s.op, now);
                store::set_json(env, &key, &after);
                match after.call_at_ms {
                    Some(at) => self.calls.insert(s.user.clone(), at),
                    None => self.calls.remove(&s.user),
                };
                self.stats.writes += 1;
                env.counter_add("presence_out_writes_total", &[("call", s.op.action())], 1);
                self.audit(env, s, "ok".into());
            } else if matches!(a.status, 401 | 424 | 429 | 500..=599) {
                // 401: the token ran out on Microsoft's clock; the manager renews it.
                if a.status == 429 {
                    self.stats.throttled += 1;
                    env.counter_add("graph_throttled_total", &[("call", s.op.action())], 1);
                }
                if let Some(ra) = a.retry_after_ms {
                    self.not_before_ms = self.not_before_ms.max(now + ra);
                } else if a.status == 401 {
                    self.not_before_ms = self.not_before_ms.max(now + 5_000);
                } else if a.status != 424 {
                    self.not_before_ms = self.not_before_ms.max(now + 2_000);
                }
                self.dirty.insert(s.user.clone());
            } else {
                // Retrying cannot help (permissions, unknown user): say so once per batch
                // (a missing permission refuses every write); a new PBX state tries again.
                self.stats.refused += 1;
                refused += 1;
                if refused == 1 {
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!(
                            "{} for {} refused: {} {} (check Presence.ReadWrite.All of {})",
                            s.op.action(),
                            s.user,
                            a.status,
                            a.error,
                            self.cfg.client.client_id
                        ),
                    );
                }
                self.audit(env, s, format!("refused: {} {}", a.status, a.error));
            }
        }
        // Where a write failed, the echo record follows what Teams really holds.
        for s in &sent {
            let applied: Applied = store::get_json(env, &applied_key(&s.user)).unwrap_or_default();
            if !self.dirty.contains(&s.user) {
                echo::assert_state(env, &s.user, applied.shown());
            }
        }
        let wait = self.not_before_ms.saturating_sub(now);
        if wait > 0 {
            self.schedule(env, wait);
        } else {
            self.flush(env, tokens);
        }
        true
    }

    fn audit(&self, env: &mut impl Env, s: &Sent, result: String) {
        let seen: Option<String> =
            store::get_json::<Option<String>>(env, &seen_key(&s.user)).flatten();
        let why = match seen {
            Some(a) if a.is_empty() => "PBX presence available".to_string(),
            Some(a) => format!("PBX presence {a}"),
            None => "PBX presence unknown (monitor lost)".to_string(),
        };
        let name = self
            .users
            .values()
            .find(|m| m.id == s.user)
            .map(|m| format!("{} ({})", m.name, m.id))
            .unwrap_or_else(|| s.user.clone());
        crate::audit::record(
            env,
            &crate::audit::Entry {
                at_ms: env.now_ms(),
                direction: crate::audit::TO_TEAMS.into(),
                user: name,
                what: s.op.describe(),
                why,
                result,
            },
        );
    }

    /// The status view: sign-in, monitors (and the users the App object cannot see), calls,
    /// backlog and counters.
    pub fn status(&self, tokens: &Tokens) -> Value {
        let auth = match tokens.state(ACCOUNT) {
            Some(AuthState::Ready) => "ready".to_string(),
            Some(AuthState::Failed(e)) => format!("failed: {e:?}"),
            Some(s) => format!("{s:?}").to_ascii_lowercase(),
            None => "none".into(),
        };
        let invisible: Vec<Value> = self
            .monitors
            .iter()
            .filter(|(_, m)| m.up == Some(false))
            .map(|(g, _)| {
                json!({"guid": g, "name": self.users.get(g).map(|m| m.name.clone()).unwrap_or_default()})
            })
            .collect();
        json!({
            "auth": auth,
            "monitored": self.monitors.len(),
            "not_visible": invisible,
            "calls": self.calls.len(),
            "backlog": self.dirty.len(),
            "in_flight": self.pending.len(),
            "writes": self.stats.writes,
            "batches": self.stats.batches,
            "throttled": self.stats.throttled,
            "refused": self.stats.refused,
            "dnd_during_calls": self.cfg.dnd_during_calls,
        })
    }
}

#[cfg(test)]
mod tests;
