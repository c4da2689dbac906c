//! The Teams -> PBX presence feature (product.md F1) as one state machine: Entra users are read
//! and matched to licensed PBX users, their presence is watched with one subscription per Teams
//! account (at most 650 ids each), notifications and reconciliation reads are mapped into the
//! PBX.
//!
//! KV: `sub/<account>` (the account's subscription, [`Record`]), `presence/<entra id>` (the last
//! applied presence and sequence number), `inbox/presence/<entra id>` (users whose notification
//! was acknowledged but whose presence is not read yet), `inbox/rich/<n>` (rich notification
//! bodies waiting for the JWKS), `match/` (see [`crate::matching`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PbxPresence, map};
use crate::env::{Env, Level, OaepHash, PublicKey, target};
use crate::event::{HttpError, HttpResponse, InboundRequest, RequestId, TimerId};
use crate::graph::api::{self, GraphError};
use crate::graph::notifications::{self as notif, Collection};
use crate::graph::presence::{self, Presence};
use crate::graph::subscriptions::{self as subs, Certificate, Record, Urls};
use crate::graph::token;
use crate::graph::tokens::{TokenEvent, Tokens};
use crate::graph::users::{self, EntraUser};
use crate::matching::{self, Matched};
use crate::pbx::{Pbx, PbxEvent, UserRow, licence};
use crate::store;

/// Timer tags of this module start with this.
pub const TIMER_PREFIX: &str = "f1:";
/// Host key pair used for rich notifications.
pub const CERT_KEY: &str = "presence-notifications";
const SUB_PREFIX: &str = "sub/";
const APPLIED_PREFIX: &str = "presence/";
const INBOX_IDS: &str = "inbox/presence/";
const INBOX_RICH: &str = "inbox/rich/";
/// `getPresencesByUserId` calls in flight at most. Graph documents a rate (1,500 per 30 s per
/// app and tenant, graph.md 7.2), not a concurrency; a few in flight keep the pipeline busy
/// while later notifications gather into the next call (up to 650 ids each).
const MAX_READS_IN_FLIGHT: usize = 4;
/// The user-change subscription ([`UsersSub`]); outside `sub/`, which holds accounts.
const USERS_SUB_KEY: &str = "users-sub";
/// Graph's maximum lifetime of a user subscription is 41,760 minutes (graph.md §3.7).
const USERS_SUB_MAX_MS: u64 = 41_000 * 60_000;
/// Local clock further off Microsoft's than this is reported.
const SKEW_WARN_MS: i64 = 60_000;

/// Settings of the feature (see guest/README.md for the names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Graph resource URL.
    pub graph_url: String,
    /// Login base URL (JWKS location).
    pub login_url: String,
    /// Our app's client id (`aud` of validation tokens).
    pub client_id: String,
    /// `presence.tenant`; when it is a tenant id (GUID), notifications of other tenants are
    /// rejected.
    pub tenant: String,
    /// Where Graph posts; `None` without `presence.public-url` (then reconciliation only).
    pub urls: Option<Urls>,
    /// Rich notifications (default) or plain (`presence.notifications = "plain"`).
    pub rich: bool,
    /// Renewal rhythm.
    pub renew_ms: u64,
    /// Requested subscription lifetime.
    pub lifetime_ms: u64,
    /// Reconciliation period.
    pub reconcile_ms: u64,
    /// Licence check period.
    pub licence_ms: u64,
    /// Entra users re-read period.
    pub users_ms: u64,
    /// How long bursts of changes (licence answers, replication) are collected before
    /// matching and reading again.
    pub settle_ms: u64,
    /// Matching options.
    pub matching: matching::Options,
    /// F2's option `presence-out.alien-calls`: Teams calls are passed on to it.
    pub alien_calls: bool,
}

fn seconds(env: &mut impl Env, name: &str, default_s: u64) -> u64 {
    match crate::settings::value(env, name) {
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => (s * 1000.0) as u64,
            _ => {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("{name} `{v}` is not a positive number of seconds; using {default_s}"),
                );
                default_s * 1000
            }
        },
        _ => default_s * 1000,
    }
}

impl Config {
    /// Reads the settings, defaults applied.
    pub fn read(env: &mut impl Env, domain: &str, instance: &str) -> Self {
        let mut get = |n: &str| crate::settings::value(env, n);
        let graph_url = get("graph.url").unwrap_or_else(|| token::DEFAULT_GRAPH_RESOURCE.into());
        let login_url = get("graph.login-url").unwrap_or_else(|| token::DEFAULT_LOGIN_BASE.into());
        let client_id = get("presence.client-id").unwrap_or_default();
        let tenant = get("presence.tenant").unwrap_or_default();
        let public = get("presence.public-url");
        let mode = get("presence.notifications").unwrap_or_else(|| "rich".into());
        let urls = public.map(|p| Urls::new(&p, domain, instance));
        if urls.is_none() {
            env.log(
                Level::Warn,
                target::CONFIG,
                "presence.public-url is not set: no presence subscriptions, only periodic reconciliation",
            );
        }
        let rich = !mode.eq_ignore_ascii_case("plain");
        if rich && !mode.eq_ignore_ascii_case("rich") {
            env.log(
                Level::Error,
                target::CONFIG,
                &format!("presence.notifications `{mode}` is not `rich` or `plain`; using rich"),
            );
        }
        Config {
            graph_url,
            login_url,
            client_id,
            tenant,
            urls,
            rich,
            renew_ms: seconds(env, "presence.renew-interval-s", 600),
            lifetime_ms: seconds(env, "presence.subscription-lifetime-s", 3600),
            reconcile_ms: seconds(env, "presence.reconcile-interval-s", 1800),
            licence_ms: seconds(env, "presence.licence-check-interval-s", 3600),
            users_ms: seconds(env, "presence.users-refresh-interval-s", 3600),
            settle_ms: seconds(env, "presence.settle-s", 2),
            matching: matching::Options::read(env),
            alien_calls: crate::presence_out::alien::enabled(env),
        }
    }
}

/// The last presence written for a user (`presence/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<String>,
    /// The PBX activity written (`""` = unset); `None` if never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activity: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Existing subscriptions not listed yet (needs a token).
    Unlisted,
    /// A request is in flight.
    Busy,
    /// Nothing in flight.
    Idle,
}

#[derive(Debug, Clone)]
struct Sub {
    phase: Phase,
    record: Option<Record>,
    /// Ids this account should watch.
    desired: Vec<String>,
    /// Deletions in flight during adoption.
    deleting: usize,
    attempt: u32,
    /// The access token of the create or PATCH in flight.
    sending_token: Option<String>,
    /// The access token Graph bound the subscription to at its last create or PATCH.
    bound_token: Option<String>,
    /// `reauthorizationRequired` arrived while the subscription was bound to this (current)
    /// token: the PATCH waits for the token manager's next token.
    reauth_after: Option<String>,
    /// Local time of the last successful create or PATCH.
    renewed_ms: Option<u64>,
    /// Its subscriptions were listed (and stale ones deleted) since this start.
    listed: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Users {
        account: String,
        so_far: Vec<EntraUser>,
    },
    Read {
        ids: Vec<String>,
        attempt: u32,
    },
    List {
        account: String,
    },
    Create {
        account: String,
        ids: Vec<String>,
        client_state: String,
        rich: bool,
    },
    Renew {
        account: String,
    },
    Delete {
        account: String,
    },
    /// Create of the user subscription.
    UsersSubCreate {
        account: String,
        client_state: String,
    },
    /// PATCH of the user subscription.
    UsersSubRenew,
    /// DELETE of the subscription of an account removed from the settings.
    Retire {
        account: String,
    },
    Jwks,
}

/// The feature's state.
#[derive(Debug)]
pub struct PresenceSync {
    cfg: Config,
    accounts: Vec<String>,
    entra: Option<Vec<EntraUser>>,
    users_fetching: bool,
    users_attempt: u32,
    matched: BTreeMap<String, Matched>,
    subs: BTreeMap<String, Sub>,
    pending: BTreeMap<RequestId, Pending>,
    retry_reads: BTreeMap<TimerId, (Vec<String>, u32)>,
    /// Users to read as soon as a read slot is free (notifications, reconciliations).
    read_queue: BTreeSet<String>,
    /// Users in a `getPresencesByUserId` in flight: never in two at once, so a notification
    /// that arrives meanwhile is read again after it (the read may predate the change).
    reading: BTreeSet<String>,
    /// `getPresencesByUserId` calls in flight.
    reads_in_flight: usize,
    skew_ms: i64,
    skew_warned: bool,
    jwks: Vec<(String, PublicKey)>,
    jwks_fetching: bool,
    jwks_fetched_ms: Option<u64>,
    /// Matching must run again at the next settle timer.
    rematch_due: bool,
    /// Users to read at the next settle timer (`None` in the set's place = everyone).
    read_due: BTreeSet<String>,
    read_all_due: bool,
    settle_timer: bool,
    /// Timers this instance set; timers of a previous guest (hot swap) are ignored.
    timers: BTreeSet<TimerId>,
    /// Accounts whose sign-in failed since their last token (a reconnect of the Graph side).
    failed: BTreeSet<String>,
    /// Force the next write of every user (the PBX may have lost our items).
    force: BTreeSet<String>,
    /// Subscriptions of accounts removed from the settings, until deleted or expired. Their
    /// users already moved to the configured accounts; their notifications still count
    /// until then, so the move has no gap.
    retired: BTreeMap<String, Retired>,
    users_sub: Option<UsersSub>,
    /// A create or PATCH of the user subscription is in flight (or waits for a retry).
    users_sub_busy: bool,
    users_sub_attempt: u32,
    /// The token of the user-subscription request in flight.
    users_sub_sending: Option<String>,
    /// The user subscription was checked (renewed or created) since this start.
    users_sub_checked: bool,
    /// `reauthorizationRequired` for the user subscription waits for a newer token.
    users_sub_reauth: bool,
    /// Local time of the user subscription's last successful create or PATCH.
    users_sub_renewed_ms: Option<u64>,
    /// A user changed: read the users again at the next settle timer.
    users_due: bool,
    /// Asked lifetimes are shortened by this much after Graph refused an expiry as too far
    /// (our idea of Microsoft's clock was ahead of it, e.g. without a `Date` header).
    expiry_cut_ms: u64,
}

/// The subscription to changes of Entra users (`users-sub`): a change makes the users be read
/// again at once instead of at the next hourly re-read (which stays, as the fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UsersSub {
    /// The account whose token created it (delegated: only it can renew it).
    account: String,
    id: String,
    expiry_ms: u64,
    client_state: String,
    /// The token of the last create or PATCH (see [`PresenceSync::reauthorize`]).
    #[serde(skip)]
    bound_token: Option<String>,
}

#[derive(Debug, Clone)]
struct Retired {
    record: Record,
    attempt: u32,
    /// A DELETE is in flight.
    busy: bool,
    /// A retry timer is set (one chain of retries, not one per trigger).
    waiting: bool,
}

impl Sub {
    /// A create or PATCH succeeded: Graph bound the subscription to the token it carried.
    fn bound(&mut self, now_ms: u64) {
        self.bound_token = self.sending_token.take();
        self.renewed_ms = Some(now_ms);
        if self.reauth_after.is_some() && self.reauth_after != self.bound_token {
            self.reauth_after = None;
        }
    }
}

fn timer_tag(kind: &str, account: &str) -> String {
    format!("{TIMER_PREFIX}{kind}:{account}")
}

fn applied_key(id: &str) -> String {
    format!("{APPLIED_PREFIX}{}", store::segment(id))
}

fn sub_key(account: &str) -> String {
    format!("{SUB_PREFIX}{}", store::segment(account))
}

/// The account name of a KV key segment (the inverse of [`store::segment`]).
fn unsegment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether sequence number `a` is newer than `b` (numeric strings compare by length first).
fn newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

impl PresenceSync {
    /// The feature for `accounts`; `init` starts it.
    pub fn new(cfg: Config, accounts: Vec<String>) -> Self {
        PresenceSync {
            cfg,
            accounts,
            entra: None,
            users_fetching: false,
            users_attempt: 0,
            matched: BTreeMap::new(),
            subs: BTreeMap::new(),
            pending: BTreeMap::new(),
            retry_reads: BTreeMap::new(),
            read_queue: BTreeSet::new(),
            reading: BTreeSet::new(),
            reads_in_flight: 0,
            skew_ms: 0,
            skew_warned: false,
            jwks: Vec::new(),
            jwks_fetching: false,
            jwks_fetched_ms: None,
            rematch_due: false,
            read_due: BTreeSet::new(),
            read_all_due: false,
            settle_timer: false,
            failed: BTreeSet::new(),
            timers: BTreeSet::new(),
            force: BTreeSet::new(),
            retired: BTreeMap::new(),
            users_sub: None,
            users_sub_busy: false,
            users_sub_attempt: 0,
            users_sub_sending: None,
            users_sub_checked: false,
            users_sub_reauth: false,
            users_sub_renewed_ms: None,
            users_due: false,
            expiry_cut_ms: 0,
        }
    }

    /// Restores stored subscriptions and matches, and starts the periodic timers.
    pub fn init(&mut self, env: &mut impl Env) {
        self.matched = matching::load(env);
        for a in self.accounts.clone() {
            let record: Option<Record> = store::get_json(env, &sub_key(&a));
            let desired = record.as_ref().map(|r| r.ids.clone()).unwrap_or_default();
            self.subs.insert(
                a,
                Sub {
                    phase: Phase::Unlisted,
                    record,
                    desired,
                    deleting: 0,
                    attempt: 0,
                    sending_token: None,
                    bound_token: None,
                    reauth_after: None,
                    renewed_ms: None,
                    listed: false,
                },
            );
        }
        self.load_retired(env);
        self.users_sub = store::get_json(env, USERS_SUB_KEY);
        if self.accounts.is_empty() {
            return;
        }
        self.set_timer(env, self.cfg.renew_ms, &timer_tag("renew", ""));
        self.set_timer(env, self.cfg.reconcile_ms, &timer_tag("reconcile", ""));
        self.set_timer(env, self.cfg.licence_ms, &timer_tag("licence", ""));
        self.set_timer(env, self.cfg.users_ms, &timer_tag("users", ""));
    }

    fn set_timer(&mut self, env: &mut impl Env, after_ms: u64, tag: &str) -> TimerId {
        let id = env.timer_set(after_ms, tag);
        self.timers.insert(id);
        id
    }

    /// Microsoft's clock as far as we know it.
    fn graph_now(&self, env: &impl Env) -> u64 {
        (env.now_ms() as i64 + self.skew_ms).max(0) as u64
    }

    fn note_date(&mut self, env: &mut impl Env, resp: &HttpResponse) {
        let Some(skew) = subs::skew_ms(&resp.headers, env.now_ms()) else {
            return;
        };
        self.skew_ms = skew;
        let off = skew.abs() > SKEW_WARN_MS;
        if off && !self.skew_warned {
            env.log(
                Level::Warn,
                target::GRAPH,
                &format!(
                    "local clock is {} s {} Microsoft's; subscription times use Microsoft's",
                    skew.abs() / 1000,
                    if skew > 0 { "behind" } else { "ahead of" }
                ),
            );
        }
        self.skew_warned = off;
        env.gauge_set("graph_clock_skew_seconds", &[], skew as f64 / 1000.0);
    }

    fn any_token<'t>(&self, tokens: &'t Tokens, env: &impl Env) -> Option<(String, &'t str)> {
        self.accounts
            .iter()
            .find_map(|a| tokens.access_token(a, env.now_ms()).map(|t| (a.clone(), t)))
    }

    /// A token manager event.
    pub fn on_token(&mut self, env: &mut impl Env, tokens: &Tokens, ev: &TokenEvent) {
        let (TokenEvent::Ready { account }
        | TokenEvent::Failed { account, .. }
        | TokenEvent::DeviceCode { account, .. }) = ev;
        // The other features' app registrations share the token manager; their sign-ins are
        // not ours (a calendar sign-in recovering must not cost F1 a reconciliation).
        if !self.accounts.contains(account) && !self.retired.contains_key(account) {
            return;
        }
        let account = match ev {
            TokenEvent::Ready { account } if self.retired.contains_key(account) => {
                self.retire(env, tokens, account);
                return;
            }
            TokenEvent::Ready { account } => account,
            TokenEvent::Failed { account, error } if self.retired.contains_key(account) => {
                env.log(
                    Level::Warn,
                    target::GRAPH,
                    &format!(
                        "removed account `{account}` cannot sign in to delete its subscription ({}); it expires by itself",
                        error.advice
                    ),
                );
                return;
            }
            TokenEvent::Failed { account, .. } => {
                self.failed.insert(account.clone());
                return;
            }
            TokenEvent::DeviceCode { .. } => return,
        };
        if self.users_sub_reauth
            && self
                .users_sub
                .as_ref()
                .is_some_and(|u| &u.account == account)
        {
            self.users_sub_reauth = false;
            self.users_subscription(env, tokens);
        }
        if self.failed.remove(account) {
            // Graph was unreachable for this account: notifications may have been lost.
            let ids = self.subs.get(account).map(|s| s.desired.clone());
            self.reconcile(env, tokens, ids);
        }
        if self.entra.is_none() && !self.users_fetching {
            self.fetch_users(env, tokens);
        }
        match self.subs.get(account).map(|s| s.phase) {
            Some(Phase::Unlisted) => self.list(env, tokens, account),
            // Work skipped while the account had no token.
            Some(Phase::Idle) => {
                self.converge(env, tokens, account);
                self.reauthorize_if_fresh(env, tokens, account);
            }
            _ => {}
        }
        // Notifications acknowledged before a restart and not read yet (nor being read).
        let waiting: Vec<String> = store::keys(env, INBOX_IDS)
            .iter()
            .map(|k| k[INBOX_IDS.len()..].to_string())
            .filter(|i| !self.reading.contains(i))
            .collect();
        self.read(env, tokens, waiting, 0);
    }

    fn fetch_users(&mut self, env: &mut impl Env, tokens: &Tokens) {
        let Some((account, token)) = self.any_token(tokens, env) else {
            return;
        };
        let id = env.http_start(users::list_request(&self.cfg.graph_url, token));
        self.pending.insert(
            id,
            Pending::Users {
                account,
                so_far: Vec::new(),
            },
        );
        self.users_fetching = true;
    }

    fn list(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let Some(token) = tokens.access_token(account, env.now_ms()) else {
            return;
        };
        if self.cfg.urls.is_none() {
            return;
        }
        let id = env.http_start(subs::list_request(&self.cfg.graph_url, token));
        self.pending.insert(
            id,
            Pending::List {
                account: account.to_string(),
            },
        );
        if let Some(s) = self.subs.get_mut(account) {
            s.phase = Phase::Busy;
        }
    }

    /// Reads the presence of `ids` and applies it: queued, then sent as soon as a read slot
    /// is free, together with whatever else is queued by then (up to 650 ids per call).
    /// Retries (`attempt > 0`) already waited for their turn and are sent at once.
    fn read(&mut self, env: &mut impl Env, tokens: &Tokens, ids: Vec<String>, attempt: u32) {
        if attempt > 0 {
            self.send_read(env, tokens, ids, attempt);
            return;
        }
        self.read_queue.extend(ids);
        self.pump_reads(env, tokens);
    }

    /// Sends queued users while read slots are free; a user already in a read in flight waits
    /// for its answer.
    fn pump_reads(&mut self, env: &mut impl Env, tokens: &Tokens) {
        while self.reads_in_flight < MAX_READS_IN_FLIGHT && self.any_token(tokens, env).is_some() {
            let ids: Vec<String> = self
                .read_queue
                .iter()
                .filter(|i| !self.reading.contains(*i))
                .take(presence::MAX_IDS)
                .cloned()
                .collect();
            if ids.is_empty() {
                return;
            }
            for i in &ids {
                self.read_queue.remove(i);
            }
            self.send_read(env, tokens, ids, 0);
        }
    }

    fn send_read(&mut self, env: &mut impl Env, tokens: &Tokens, ids: Vec<String>, attempt: u32) {
        let Some((_, token)) = self.any_token(tokens, env) else {
            // Read again once a token arrives (`on_token`).
            self.read_queue.extend(ids);
            return;
        };
        for (chunk, req) in
            ids.chunks(presence::MAX_IDS)
                .zip(presence::requests(&self.cfg.graph_url, token, &ids))
        {
            let id = env.http_start(req);
            self.reading.extend(chunk.iter().cloned());
            self.reads_in_flight += 1;
            self.pending.insert(
                id,
                Pending::Read {
                    ids: chunk.to_vec(),
                    attempt,
                },
            );
        }
    }

    /// A read answered (or failed): its users may be read again; the inbox entry of a user
    /// goes only if no notification for it arrived since the read was sent.
    fn read_done(&mut self, env: &mut impl Env, ids: &[String], forget: bool) {
        self.reads_in_flight = self.reads_in_flight.saturating_sub(1);
        for i in ids {
            self.reading.remove(i);
            if forget && !self.read_queue.contains(i) {
                env.kv_delete(&format!("{INBOX_IDS}{}", store::segment(i)));
            }
        }
    }

    /// Reconciles every matched user (or `only`) once the current burst of events settled,
    /// so that several reasons to read within a moment cost one read.
    fn reconcile(&mut self, env: &mut impl Env, _tokens: &Tokens, only: Option<Vec<String>>) {
        match only {
            Some(ids) => self.read_due.extend(ids),
            None => self.read_all_due = true,
        }
        self.settle(env);
    }

    fn settle(&mut self, env: &mut impl Env) {
        if !self.settle_timer {
            self.set_timer(env, self.cfg.settle_ms, &timer_tag("settle", ""));
            self.settle_timer = true;
        }
    }

    fn schedule_rematch(&mut self, env: &mut impl Env) {
        self.rematch_due = true;
        self.settle(env);
    }

    fn settled(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens) {
        self.settle_timer = false;
        if std::mem::take(&mut self.users_due) && !self.users_fetching {
            self.fetch_users(env, tokens);
        }
        if std::mem::take(&mut self.rematch_due) {
            self.rematch(env, pbx, tokens);
        }
        let ids: Vec<String> = if std::mem::take(&mut self.read_all_due) {
            self.read_due.clear();
            self.matched.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.read_due)
                .into_iter()
                .filter(|id| self.matched.contains_key(id))
                .collect()
        };
        if !ids.is_empty() {
            self.read(env, tokens, ids, 0);
        }
    }

    /// A PBX event.
    pub fn on_pbx(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens, ev: &PbxEvent) {
        match ev {
            PbxEvent::Connected { .. } => {
                // The PBX may have restarted and lost our items: write everyone again.
                self.force.extend(self.matched.keys().cloned());
                self.reconcile(env, tokens, None);
            }
            PbxEvent::UsersLoaded { pbx: name, .. } => {
                for row in crate::pbx::users::list(env, name) {
                    let _ = pbx.check_licence(env, &row.guid);
                }
                self.schedule_rematch(env);
            }
            PbxEvent::UserChanged { guid, .. } => {
                let _ = pbx.check_licence(env, guid);
                self.schedule_rematch(env);
            }
            PbxEvent::UserRemoved { .. } | PbxEvent::Licence { changed: true, .. } => {
                self.schedule_rematch(env)
            }
            _ => {}
        }
    }

    fn pbx_rows(env: &mut impl Env) -> Vec<UserRow> {
        // The same user may be replicated from several PBXs; one row per guid.
        let mut rows: BTreeMap<String, UserRow> = BTreeMap::new();
        store::for_each(env, "user/row/", |_, v| {
            if let Ok(r) = serde_json::from_slice::<UserRow>(v) {
                rows.entry(r.guid.clone()).or_insert(r);
            }
        });
        rows.into_values().collect()
    }

    /// Matches again and acts on the difference.
    fn rematch(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens) {
        let Some(entra) = &self.entra else {
            return;
        };
        let rows = Self::pbx_rows(env);
        let lic: BTreeMap<String, bool> = rows
            .iter()
            .map(|r| (r.guid.clone(), licence::get(env, &r.guid) == Some(true)))
            .collect();
        let outcome = matching::run(&self.cfg.matching, &rows, entra, |g| {
            lic.get(g).copied().unwrap_or(false)
        });
        matching::store(env, &outcome);
        env.gauge_set("presence_matched_users", &[], outcome.matched.len() as f64);
        env.gauge_set(
            "presence_unmatched_users",
            &[],
            outcome.problems.len() as f64,
        );
        let added: Vec<String> = outcome
            .matched
            .keys()
            .filter(|id| !self.matched.contains_key(*id))
            .cloned()
            .collect();
        let gone: Vec<Matched> = self
            .matched
            .values()
            .filter(|m| !outcome.matched.contains_key(&m.id))
            .cloned()
            .collect();
        // A user no longer synced keeps no Teams presence in the PBX.
        for m in &gone {
            let applied: Option<Applied> = store::get_json(env, &applied_key(&m.id));
            if applied
                .and_then(|a| a.activity)
                .is_some_and(|a| !a.is_empty())
            {
                let why = "no longer synced (not matched or not licensed)";
                let _ = pbx.set_presence_because(env, Some(&m.loc), &m.guid, "", "", why);
            }
            env.kv_delete(&applied_key(&m.id));
        }
        if !added.is_empty() || !gone.is_empty() {
            env.log(
                Level::Info,
                target::APP,
                &format!(
                    "matching: {} users synced ({} added, {} removed), {} not synced",
                    outcome.matched.len(),
                    added.len(),
                    gone.len(),
                    outcome.problems.len()
                ),
            );
        }
        self.matched = outcome.matched;
        if !added.is_empty() {
            self.reconcile(env, tokens, Some(added));
        }
        self.plan(env, tokens);
    }

    /// Spreads the matched users over the accounts (a user stays where it is) and brings each
    /// account's subscription in line.
    fn plan(&mut self, env: &mut impl Env, tokens: &Tokens) {
        if self.cfg.urls.is_none() || self.entra.is_none() {
            return;
        }
        let mut assigned: BTreeSet<String> = BTreeSet::new();
        for s in self.subs.values_mut() {
            s.desired.retain(|id| self.matched.contains_key(id));
            s.desired.retain(|id| assigned.insert(id.clone()));
        }
        // New users go to signed-in accounts (one waiting for a device-code sign-in would hold
        // them unwatched); if none is signed in, to any.
        let now = env.now_ms();
        let ready: BTreeSet<String> = self
            .accounts
            .iter()
            .filter(|a| tokens.access_token(a, now).is_some())
            .cloned()
            .collect();
        let any_ready = !ready.is_empty();
        let mut overflow = 0usize;
        for id in self.matched.keys() {
            if assigned.contains(id) {
                continue;
            }
            match self
                .subs
                .iter_mut()
                .filter(|(a, s)| {
                    (!any_ready || ready.contains(*a)) && s.desired.len() < subs::MAX_IDS
                })
                .map(|(_, s)| s)
                .min_by_key(|s| s.desired.len())
            {
                Some(s) => s.desired.push(id.clone()),
                None => overflow += 1,
            }
        }
        if overflow > 0 {
            env.log(
                Level::Warn,
                target::APP,
                &format!(
                    "{overflow} matched users exceed the capacity of {} Teams accounts (650 each); add an account",
                    self.accounts.len()
                ),
            );
        }
        env.gauge_set("presence_unwatched_users", &[], overflow as f64);
        for a in self.accounts.clone() {
            self.converge(env, tokens, &a);
        }
    }

    fn converge(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let Some(s) = self.subs.get_mut(account) else {
            return;
        };
        if s.phase != Phase::Idle {
            return;
        }
        s.desired.sort();
        let Some(token) = tokens.access_token(account, env.now_ms()) else {
            return;
        };
        let graph = self.cfg.graph_url.clone();
        match &s.record {
            Some(r) if r.ids == s.desired => {}
            // Never two subscriptions for one account: the old one goes first.
            Some(r) => {
                let req = subs::delete_request(&graph, token, &r.id);
                s.phase = Phase::Busy;
                let id = env.http_start(req);
                self.pending.insert(
                    id,
                    Pending::Delete {
                        account: account.to_string(),
                    },
                );
            }
            None if s.desired.is_empty() => {}
            None => {
                let ids = s.desired.clone();
                s.phase = Phase::Busy;
                s.sending_token = Some(token.to_string());
                let cert = if self.cfg.rich {
                    certificate(env)
                } else {
                    None
                };
                let client_state = format!("{:016x}{:016x}", env.random_u64(), env.random_u64());
                let expiry = self.graph_now(env) + self.lifetime_asked();
                let Some(urls) = &self.cfg.urls else {
                    return;
                };
                let req = subs::create_request(
                    &graph,
                    token,
                    &ids,
                    urls,
                    expiry,
                    &client_state,
                    cert.as_ref(),
                );
                let id = env.http_start(req);
                self.pending.insert(
                    id,
                    Pending::Create {
                        account: account.to_string(),
                        ids,
                        client_state,
                        rich: cert.is_some(),
                    },
                );
            }
        }
    }

    fn renew(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let now = self.graph_now(env);
        let Some(s) = self.subs.get_mut(account) else {
            return;
        };
        if s.phase != Phase::Idle {
            return;
        }
        let Some(r) = &s.record else {
            return;
        };
        if r.expiry_ms <= now {
            // Expired subscriptions cannot be revived (graph.md §3.5): create a new one.
            env.log(
                Level::Warn,
                target::GRAPH,
                &format!("account `{account}`: subscription expired; recreating"),
            );
            s.record = None;
            env.kv_delete(&sub_key(account));
            self.converge(env, tokens, account);
            return;
        }
        let Some(token) = tokens.access_token(account, env.now_ms()) else {
            return;
        };
        let req = subs::renew_request(
            &self.cfg.graph_url,
            token,
            &r.id,
            now + self.cfg.lifetime_ms.saturating_sub(self.expiry_cut_ms),
        );
        s.phase = Phase::Busy;
        s.sending_token = Some(token.to_string());
        let id = env.http_start(req);
        self.pending.insert(
            id,
            Pending::Renew {
                account: account.to_string(),
            },
        );
    }

    /// Renews the user-change subscription, or creates it (with any signed-in account).
    fn users_subscription(&mut self, env: &mut impl Env, tokens: &Tokens) {
        let Some(urls) = self.cfg.urls.clone() else {
            return;
        };
        if self.users_sub_busy {
            return;
        }
        let graph_now = self.graph_now(env);
        let expiry = graph_now + (3 * self.cfg.users_ms).min(USERS_SUB_MAX_MS);
        // Renewed by its own account only; if that account is gone, a new one replaces it
        // (the old one expires by itself).
        let live = self
            .users_sub
            .as_ref()
            .filter(|u| u.expiry_ms > graph_now && self.accounts.contains(&u.account));
        let graph = self.cfg.graph_url.clone();
        let (req, pending, token) = match live {
            Some(u) => {
                let Some(token) = tokens.access_token(&u.account, env.now_ms()) else {
                    return;
                };
                (
                    subs::renew_request(&graph, token, &u.id, expiry),
                    Pending::UsersSubRenew,
                    token.to_string(),
                )
            }
            None => {
                // Only once every signed-in account was listed at start: a stale user
                // subscription of ours is deleted there first, never two at once.
                let now = env.now_ms();
                let listed = |a: &String| self.subs.get(a).is_some_and(|s| s.listed);
                if self
                    .accounts
                    .iter()
                    .any(|a| tokens.access_token(a, now).is_some() && !listed(a))
                {
                    return;
                }
                let Some((account, token)) = self.accounts.iter().find_map(|a| {
                    let t = tokens.access_token(a, now).filter(|_| listed(a))?;
                    Some((a.clone(), t))
                }) else {
                    return;
                };
                let client_state = format!("{:016x}{:016x}", env.random_u64(), env.random_u64());
                (
                    subs::users_create_request(&graph, token, &urls, expiry, &client_state),
                    Pending::UsersSubCreate {
                        account,
                        client_state,
                    },
                    token.to_string(),
                )
            }
        };
        self.users_sub_busy = true;
        self.users_sub_checked = true;
        self.users_sub_sending = Some(token);
        let id = env.http_start(req);
        self.pending.insert(id, pending);
    }

    fn users_sub_done(&mut self) {
        self.users_sub_busy = false;
        self.users_sub_attempt = 0;
    }

    fn users_sub_retry(&mut self, env: &mut impl Env, e: &GraphError) {
        self.users_sub_attempt += 1;
        self.users_sub_sending = None;
        let delay = api::retry_delay_ms(e, self.users_sub_attempt, env.random_u64());
        env.log(
            Level::Warn,
            target::GRAPH,
            &format!(
                "user-change subscription call failed ({e}); retrying in {} s (users are re-read hourly meanwhile)",
                delay / 1000
            ),
        );
        // Stays busy until the retry: one chain of retries.
        self.set_timer(env, delay, &timer_tag("retry-users-sub", ""));
    }

    fn users_lifecycle(&mut self, env: &mut impl Env, tokens: &Tokens, event: &str) {
        env.log(
            Level::Info,
            target::GRAPH,
            &format!("user-change subscription: lifecycle event {event}"),
        );
        match event {
            "reauthorizationRequired" => {
                let Some(u) = &self.users_sub else {
                    return;
                };
                // As for presence: a PATCH with the token it is bound to changes nothing.
                let current = tokens.access_token(&u.account, env.now_ms());
                if current.is_none() || current == u.bound_token.as_deref() {
                    self.users_sub_reauth = true;
                } else {
                    self.users_subscription(env, tokens);
                }
            }
            "subscriptionRemoved" => {
                self.users_sub = None;
                env.kv_delete(USERS_SUB_KEY);
                self.users_subscription(env, tokens);
            }
            _ => {
                self.users_due = true;
                self.settle(env);
            }
        }
    }

    /// Subscriptions stored for accounts that are no longer configured (an administrator
    /// removed the account): kept until deleted or expired.
    fn load_retired(&mut self, env: &mut impl Env) {
        let now = self.graph_now(env);
        for key in store::keys(env, SUB_PREFIX) {
            let account = unsegment(&key[SUB_PREFIX.len()..]);
            if self.subs.contains_key(&account) {
                continue;
            }
            match store::get_json::<Record>(env, &key) {
                Some(record) if record.expiry_ms > now => {
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        &format!(
                            "account `{account}` was removed: its {} users move to the other accounts; its subscription {} is deleted",
                            record.ids.len(),
                            record.id
                        ),
                    );
                    self.retired.insert(
                        account,
                        Retired {
                            record,
                            attempt: 0,
                            busy: false,
                            waiting: false,
                        },
                    );
                }
                // Expired: Graph deleted it already.
                _ => env.kv_delete(&key),
            }
        }
    }

    /// Accounts removed from the settings whose subscription still lives: the connector
    /// signs them in from their stored refresh token so that it can be deleted.
    pub fn retired_accounts(&self) -> Vec<String> {
        self.retired.keys().cloned().collect()
    }

    /// Whether a removed account can still sign in without anyone: only from its stored
    /// refresh token (the token manager keeps it under `token/<account>/refresh`).
    pub fn can_sign_in_alone(env: &mut impl Env, account: &str) -> bool {
        env.kv_get(&format!("token/{}/refresh", store::segment(account)))
            .is_some()
    }

    /// DELETEs a removed account's subscription (with that account's token: delegated
    /// subscriptions are visible to their owner only).
    fn retire(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let now = self.graph_now(env);
        let Some(r) = self.retired.get_mut(account) else {
            return;
        };
        if r.record.expiry_ms <= now {
            env.log(
                Level::Info,
                target::GRAPH,
                &format!("removed account `{account}`: its subscription expired"),
            );
            self.retired.remove(account);
            env.kv_delete(&sub_key(account));
            return;
        }
        if r.busy || r.waiting {
            return;
        }
        let Some(token) = tokens.access_token(account, env.now_ms()) else {
            return;
        };
        r.busy = true;
        let req = subs::delete_request(&self.cfg.graph_url, token, &r.record.id);
        let id = env.http_start(req);
        self.pending.insert(
            id,
            Pending::Retire {
                account: account.to_string(),
            },
        );
    }

    fn retired_answer(&mut self, env: &mut impl Env, account: &str, resp: &HttpResponse) {
        let Some(r) = self.retired.get_mut(account) else {
            return;
        };
        r.busy = false;
        match api::check(resp) {
            // 404: already gone.
            Ok(_) => {}
            Err(e) if e.status == 404 => {}
            Err(e) => {
                // Until it expires; its users were moved at start, so nothing waits for this.
                r.attempt += 1;
                r.waiting = true;
                let delay = api::retry_delay_ms(&e, r.attempt, env.random_u64());
                env.log(
                    Level::Warn,
                    target::GRAPH,
                    &format!(
                        "removed account `{account}`: deleting its subscription failed ({e}); retrying in {} s",
                        delay / 1000
                    ),
                );
                self.set_timer(env, delay, &timer_tag("retry-retire", account));
                return;
            }
        }
        env.log(
            Level::Info,
            target::GRAPH,
            &format!(
                "removed account `{account}`: subscription {} deleted",
                r.record.id
            ),
        );
        self.retired.remove(account);
        env.kv_delete(&sub_key(account));
    }

    /// The presence subscription lifetime to ask for.
    fn lifetime_asked(&self) -> u64 {
        self.cfg.lifetime_ms.saturating_sub(self.expiry_cut_ms)
    }

    /// Graph refused the expiry as too far in the future (400 "Subscription expiration can
    /// only be N minutes in the future"): the local clock runs ahead of Microsoft's and no
    /// `Date` corrected it. Asking the full lifetime again would fail the same way every time
    /// and let the subscription lapse, so later requests ask 5 minutes less each time (down
    /// to Graph's 45-minute minimum).
    fn expiry_refused(&mut self, env: &mut impl Env, e: &GraphError) {
        let too_far = e.status == 400 && e.message.to_ascii_lowercase().contains("expiration");
        let floor = 45 * 60_000;
        if !too_far || self.lifetime_asked() <= floor {
            return;
        }
        self.expiry_cut_ms = (self.expiry_cut_ms + 5 * 60_000).min(self.cfg.lifetime_ms - floor);
        env.log(
            Level::Warn,
            target::GRAPH,
            &format!(
                "Graph refused the subscription expiry as too far ahead (is the local clock ahead of Microsoft's?); asking {} minutes from now",
                self.lifetime_asked() / 60_000
            ),
        );
    }

    /// Answers `reauthorizationRequired` (graph.md §3.6: get a fresh token, then PATCH).
    /// Graph asks while the token the subscription is bound to nears its expiry; a PATCH with
    /// that same token changes nothing and Graph asks again at once (the fake every minute), so
    /// when the current token is that token the PATCH waits for the token manager's next one,
    /// which it fetches well before the old one expires (delivery never pauses). A
    /// subscription that itself nears expiry is PATCHed at once.
    fn reauthorize(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let graph_now = self.graph_now(env);
        let current = tokens.access_token(account, env.now_ms());
        let half_life = self.cfg.lifetime_ms / 2;
        let Some(s) = self.subs.get_mut(account) else {
            return;
        };
        let expiring = s
            .record
            .as_ref()
            .is_some_and(|r| r.expiry_ms.saturating_sub(graph_now) < half_life);
        let same_token = current.is_some() && current == s.bound_token.as_deref();
        if current.is_none() || (same_token && !expiring) {
            s.reauth_after = Some(current.unwrap_or_default().to_string());
            env.log(
                Level::Debug,
                target::GRAPH,
                &format!("account `{account}`: reauthorization waits for the next access token"),
            );
            return;
        }
        self.renew(env, tokens, account);
    }

    /// The PATCH a `reauthorizationRequired` waits for, once a newer token is there.
    fn reauthorize_if_fresh(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str) {
        let Some(stale) = self
            .subs
            .get(account)
            .and_then(|s| s.reauth_after.as_deref())
        else {
            return;
        };
        if tokens
            .access_token(account, env.now_ms())
            .is_some_and(|t| t != stale)
        {
            self.renew(env, tokens, account);
        }
    }

    /// A timer; `false` if not this module's.
    pub fn on_timer(
        &mut self,
        env: &mut impl Env,
        pbx: &mut Pbx,
        tokens: &Tokens,
        id: TimerId,
        tag: &str,
    ) -> bool {
        let Some(rest) = tag.strip_prefix(TIMER_PREFIX) else {
            return false;
        };
        let (kind, account) = rest.split_once(':').unwrap_or((rest, ""));
        if !self.timers.remove(&id) {
            // Set by the guest before a hot swap: this instance set its own at init.
            return true;
        }
        match kind {
            "renew" => {
                self.set_timer(env, self.cfg.renew_ms, tag);
                let now = env.now_ms();
                for a in self.accounts.clone() {
                    // A PATCH for a fresh token moments ago already renewed it: one PATCH
                    // per rhythm, not two.
                    let recent = self
                        .subs
                        .get(&a)
                        .and_then(|s| s.renewed_ms)
                        .is_some_and(|at| now.saturating_sub(at) < self.cfg.renew_ms / 2);
                    if !recent {
                        self.renew(env, tokens, &a);
                    }
                }
                // Removed accounts: retried with the rhythm, forgotten once expired.
                for a in self.retired_accounts() {
                    self.retire(env, tokens, &a);
                }
            }
            "reconcile" => {
                self.set_timer(env, self.cfg.reconcile_ms, tag);
                self.reconcile(env, tokens, None);
            }
            "licence" => {
                self.set_timer(env, self.cfg.licence_ms, tag);
                for row in Self::pbx_rows(env) {
                    let _ = pbx.check_licence(env, &row.guid);
                }
            }
            "users" => {
                self.set_timer(env, self.cfg.users_ms, tag);
                if !self.users_fetching {
                    self.fetch_users(env, tokens);
                }
                // Renewed for a new token moments ago: that was this rhythm's PATCH.
                let now = env.now_ms();
                let recent = self
                    .users_sub_renewed_ms
                    .is_some_and(|at| now.saturating_sub(at) < self.cfg.users_ms / 2);
                if !recent {
                    self.users_subscription(env, tokens);
                }
            }
            "retry-users-sub" => {
                self.users_sub_busy = false;
                self.users_subscription(env, tokens);
            }
            "retry-users" => self.fetch_users(env, tokens),
            "settle" => self.settled(env, pbx, tokens),
            "retry-sub" => {
                if let Some(s) = self.subs.get_mut(account) {
                    if s.phase == Phase::Busy {
                        s.phase = Phase::Idle;
                    }
                    if s.phase == Phase::Unlisted {
                        self.list(env, tokens, account);
                    } else {
                        self.converge(env, tokens, account);
                    }
                }
            }
            "retry-retire" => {
                if let Some(r) = self.retired.get_mut(account) {
                    r.waiting = false;
                }
                self.retire(env, tokens, account);
            }
            "retry-read" => {
                if let Some((ids, attempt)) = self.retry_reads.remove(&id) {
                    self.read(env, tokens, ids, attempt);
                }
            }
            _ => {}
        }
        true
    }

    fn retry_sub(&mut self, env: &mut impl Env, account: &str, e: &GraphError, unlisted: bool) {
        let Some(s) = self.subs.get_mut(account) else {
            return;
        };
        s.attempt += 1;
        s.phase = if unlisted {
            Phase::Unlisted
        } else {
            Phase::Busy
        };
        let delay = api::retry_delay_ms(e, s.attempt, env.random_u64());
        env.log(
            Level::Warn,
            target::GRAPH,
            &format!(
                "account `{account}`: subscription call failed ({e}); retrying in {} s",
                delay / 1000
            ),
        );
        self.set_timer(env, delay, &timer_tag("retry-sub", account));
    }

    /// An HTTP completion; `false` if not this module's.
    pub fn on_response(
        &mut self,
        env: &mut impl Env,
        pbx: &mut Pbx,
        tokens: &Tokens,
        id: RequestId,
        result: &Result<HttpResponse, HttpError>,
    ) -> bool {
        let Some(p) = self.pending.remove(&id) else {
            return false;
        };
        let resp = match result {
            Ok(r) => {
                self.note_date(env, r);
                r.clone()
            }
            // No answer: treat like a server error (backoff, retry).
            Err(e) => HttpResponse::text(503, &format!("{e:?}")),
        };
        match p {
            Pending::Users {
                account,
                mut so_far,
            } => match users::parse_page(&resp) {
                Ok(page) => {
                    so_far.extend(page.users);
                    match (page.next_link, tokens.access_token(&account, env.now_ms())) {
                        (Some(link), Some(t)) => {
                            let id = env.http_start(users::next_request(&link, t));
                            self.pending.insert(id, Pending::Users { account, so_far });
                        }
                        _ => {
                            self.users_fetching = false;
                            self.users_attempt = 0;
                            env.log(
                                Level::Info,
                                target::GRAPH,
                                &format!("{} Entra users read", so_far.len()),
                            );
                            self.entra = Some(so_far);
                            self.schedule_rematch(env);
                            if !self.users_sub_checked {
                                self.users_subscription(env, tokens);
                            }
                            for a in self.accounts.clone() {
                                if self
                                    .subs
                                    .get(&a)
                                    .is_some_and(|s| s.phase == Phase::Unlisted)
                                {
                                    self.list(env, tokens, &a);
                                }
                            }
                            self.reconcile(env, tokens, None);
                        }
                    }
                }
                Err(e) => {
                    self.users_fetching = false;
                    self.users_attempt += 1;
                    let delay = api::retry_delay_ms(&e, self.users_attempt, env.random_u64());
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!(
                            "reading Entra users failed ({e}); retrying in {} s",
                            delay / 1000
                        ),
                    );
                    self.set_timer(env, delay, &timer_tag("retry-users", ""));
                }
            },
            Pending::Read { ids, attempt } => match presence::parse(&resp) {
                Ok(list) => {
                    for p in &list {
                        self.apply(env, pbx, p);
                    }
                    self.read_done(env, &ids, true);
                    self.pump_reads(env, tokens);
                }
                Err(e) if e.transient() || e.status == 401 => {
                    self.read_done(env, &ids, false);
                    let delay = api::retry_delay_ms(&e, attempt + 1, env.random_u64());
                    env.counter_add(
                        "graph_throttled_total",
                        &[("call", "getPresencesByUserId")],
                        1,
                    );
                    let t = self.set_timer(env, delay, &timer_tag("retry-read", ""));
                    self.retry_reads.insert(t, (ids, attempt + 1));
                }
                Err(e) => {
                    env.log(
                        Level::Error,
                        target::GRAPH,
                        &format!("reading presence of {} users failed: {e}", ids.len()),
                    );
                    // Retrying cannot help; the periodic reconciliation covers synced users.
                    self.read_done(env, &ids, true);
                    self.pump_reads(env, tokens);
                }
            },
            Pending::List { account } => match subs::parse_list(&resp) {
                Ok(list) => self.adopt(env, tokens, &account, list),
                Err(e) => self.retry_sub(env, &account, &e, true),
            },
            Pending::Create {
                account,
                ids,
                client_state,
                rich,
            } => match subs::parse_subscription(&resp) {
                Ok((sid, expiry_ms)) => {
                    let record = Record {
                        id: sid,
                        expiry_ms,
                        client_state,
                        ids: ids.clone(),
                        rich,
                    };
                    store::set_json(env, &sub_key(&account), &record);
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        &format!(
                            "account `{account}`: presence subscription {} for {} users, expires {}",
                            record.id,
                            ids.len(),
                            subs::iso(expiry_ms)
                        ),
                    );
                    if let Some(s) = self.subs.get_mut(&account) {
                        s.record = Some(record);
                        s.phase = Phase::Idle;
                        s.attempt = 0;
                        s.bound(env.now_ms());
                    }
                    // Changes between the old subscription and this one were not notified.
                    self.reconcile(env, tokens, Some(ids));
                    self.converge(env, tokens, &account);
                }
                Err(e) if e.status == 409 => {
                    // Someone else's subscription for this account: list, adopt or delete.
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!(
                            "account `{account}`: 409 on create; listing existing subscriptions"
                        ),
                    );
                    if let Some(s) = self.subs.get_mut(&account) {
                        s.phase = Phase::Unlisted;
                    }
                    self.list(env, tokens, &account);
                }
                Err(e) => {
                    self.expiry_refused(env, &e);
                    self.retry_sub(env, &account, &e, false)
                }
            },
            Pending::Renew { account } => {
                match subs::parse_subscription(&resp) {
                    Ok((_, expiry_ms)) => {
                        if let Some(s) = self.subs.get_mut(&account) {
                            s.phase = Phase::Idle;
                            s.attempt = 0;
                            s.bound(env.now_ms());
                            if let Some(r) = &mut s.record {
                                r.expiry_ms = expiry_ms;
                                store::set_json(env, &sub_key(&account), r);
                            }
                        }
                        self.converge(env, tokens, &account);
                        self.reauthorize_if_fresh(env, tokens, &account);
                    }
                    Err(e) if e.status == 404 => {
                        env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("account `{account}`: subscription is gone (404 on renew); recreating"),
                    );
                        env.kv_delete(&sub_key(&account));
                        if let Some(s) = self.subs.get_mut(&account) {
                            s.record = None;
                            s.phase = Phase::Idle;
                        }
                        self.converge(env, tokens, &account);
                    }
                    Err(e) => {
                        self.expiry_refused(env, &e);
                        self.retry_sub(env, &account, &e, false)
                    }
                }
            }
            Pending::Delete { account } => {
                let outcome = api::check(&resp).map(|_| ());
                let Some(s) = self.subs.get_mut(&account) else {
                    return true;
                };
                match outcome {
                    // 404: already gone, which is what we wanted.
                    Ok(()) => {}
                    Err(e) if e.status == 404 => {}
                    Err(e) => {
                        s.deleting = s.deleting.saturating_sub(1);
                        self.retry_sub(env, &account, &e, true);
                        return true;
                    }
                }
                if s.deleting > 0 {
                    s.deleting -= 1;
                } else {
                    s.record = None;
                    env.kv_delete(&sub_key(&account));
                }
                if s.deleting == 0 {
                    s.phase = Phase::Idle;
                    // An adopted subscription is renewed at once; otherwise create what is due.
                    if s.record.is_some() {
                        self.renew(env, tokens, &account);
                    } else {
                        self.converge(env, tokens, &account);
                    }
                }
            }
            Pending::Retire { account } => self.retired_answer(env, &account, &resp),
            Pending::UsersSubCreate {
                account,
                client_state,
            } => match subs::parse_subscription(&resp) {
                Ok((id, expiry_ms)) => {
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        &format!(
                            "account `{account}`: user-change subscription {id}, expires {}",
                            subs::iso(expiry_ms)
                        ),
                    );
                    let u = UsersSub {
                        account,
                        id,
                        expiry_ms,
                        client_state,
                        bound_token: self.users_sub_sending.take(),
                    };
                    store::set_json(env, USERS_SUB_KEY, &u);
                    self.users_sub = Some(u);
                    self.users_sub_done();
                    self.users_sub_renewed_ms = Some(env.now_ms());
                }
                Err(e) => self.users_sub_retry(env, &e),
            },
            Pending::UsersSubRenew => match subs::parse_subscription(&resp) {
                Ok((_, expiry_ms)) => {
                    let sent = self.users_sub_sending.take();
                    if let Some(u) = &mut self.users_sub {
                        u.expiry_ms = expiry_ms;
                        u.bound_token = sent;
                        store::set_json(env, USERS_SUB_KEY, u);
                    }
                    self.users_sub_done();
                    self.users_sub_renewed_ms = Some(env.now_ms());
                }
                Err(e) if e.status == 404 => {
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        "user-change subscription is gone (404 on renew); recreating",
                    );
                    self.users_sub = None;
                    env.kv_delete(USERS_SUB_KEY);
                    self.users_sub_busy = false;
                    self.users_subscription(env, tokens);
                }
                Err(e) => self.users_sub_retry(env, &e),
            },
            Pending::Jwks => {
                self.jwks_fetching = false;
                self.jwks_fetched_ms = Some(env.now_ms());
                match api::check(&resp) {
                    Ok(r) => {
                        self.jwks = notif::parse_jwks(&r.body);
                        self.drain_rich_inbox(env, pbx, tokens);
                    }
                    Err(e) => {
                        env.log(
                            Level::Warn,
                            target::GRAPH,
                            &format!("fetching the validation-token keys failed: {e}; re-reading presence instead"),
                        );
                        // The clientState matched; reading the users' presence is safe.
                        let mut ids = BTreeSet::new();
                        let mut doomed = Vec::new();
                        store::for_each(env, INBOX_RICH, |k, v| {
                            doomed.push(k.to_string());
                            if let Some(c) = notif::parse(v) {
                                ids.extend(c.items.into_iter().map(|i| i.resource_id));
                            }
                        });
                        for k in doomed {
                            env.kv_delete(&k);
                        }
                        ids.remove("");
                        self.read(env, tokens, ids.into_iter().collect(), 0);
                    }
                }
            }
        }
        true
    }

    /// Adopts this account's live subscription (if it is the one we stored and points at us),
    /// deletes every other presence subscription of the account (never a 409 later).
    fn adopt(
        &mut self,
        env: &mut impl Env,
        tokens: &Tokens,
        account: &str,
        list: Vec<subs::Listed>,
    ) {
        let ours = self
            .cfg
            .urls
            .as_ref()
            .map(|u| u.notification.clone())
            .unwrap_or_default();
        let Some(token) = tokens
            .access_token(account, env.now_ms())
            .map(str::to_string)
        else {
            return;
        };
        let Some(s) = self.subs.get_mut(account) else {
            return;
        };
        let keep = s.record.as_ref().and_then(|r| {
            list.iter()
                .find(|l| l.id == r.id && l.notification_url == ours)
                .map(|l| l.id.clone())
        });
        if keep.is_none() && s.record.take().is_some() {
            env.kv_delete(&sub_key(account));
        }
        // A user-change subscription pointing at us that is not the one we keep (its record
        // was lost) would notify in vain until it expires: deleted too.
        let users_keep = self.users_sub.as_ref().map(|u| u.id.clone());
        let users_idle = !self.users_sub_busy;
        let doomed: Vec<String> = list
            .iter()
            .filter(|l| {
                (l.is_presence() && Some(&l.id) != keep.as_ref())
                    || (users_idle
                        && l.is_users()
                        && l.notification_url == ours
                        && Some(&l.id) != users_keep.as_ref())
            })
            .map(|l| l.id.clone())
            .collect();
        s.deleting = doomed.len();
        s.attempt = 0;
        s.listed = true;
        s.phase = if doomed.is_empty() {
            Phase::Idle
        } else {
            Phase::Busy
        };
        for sid in &doomed {
            env.log(
                Level::Info,
                target::GRAPH,
                &format!(
                    "account `{account}`: deleting presence subscription {sid} found at start"
                ),
            );
            let id = env.http_start(subs::delete_request(&self.cfg.graph_url, &token, sid));
            self.pending.insert(
                id,
                Pending::Delete {
                    account: account.to_string(),
                },
            );
        }
        if keep.is_some() {
            env.log(
                Level::Info,
                target::GRAPH,
                &format!("account `{account}`: adopting the live presence subscription"),
            );
            if doomed.is_empty() {
                self.renew(env, tokens, account);
            }
        } else if doomed.is_empty() {
            self.converge(env, tokens, account);
        }
        if !self.users_sub_checked && self.entra.is_some() {
            self.users_subscription(env, tokens);
        }
        // Whatever happened before this start was not notified to us.
        if let Some(s) = self.subs.get(account)
            && let Some(r) = &s.record
        {
            let ids = r.ids.clone();
            self.reconcile(env, tokens, Some(ids));
        }
    }

    /// Writes one Teams presence into the PBX if it is newer and different.
    fn apply(&mut self, env: &mut impl Env, pbx: &mut Pbx, p: &Presence) {
        // Graph compares ids case-insensitively; ours are stored as Graph listed them.
        let Some(m) = self
            .matched
            .get(&p.id)
            .or_else(|| {
                self.matched
                    .values()
                    .find(|m| m.id.eq_ignore_ascii_case(&p.id))
            })
            .cloned()
        else {
            return;
        };
        let key = applied_key(&m.id);
        let mut applied: Applied = store::get_json(env, &key).unwrap_or_default();
        let forced = self.force.remove(&m.id);
        // PBX -> Teams (F2) wrote this state itself: carrying it back would be an echo.
        if crate::presence_out::echo::is_own(env, &m.id, &p.availability, &p.activity)
            && !matches!(decide(&applied, p, false), Decision::OutOfOrder)
        {
            env.counter_add(
                "presence_updates_dropped_total",
                &[("reason", "own-write")],
                1,
            );
            applied.seq = p.sequence_number.clone().or(applied.seq);
            store::set_json(env, &key, &applied);
            return;
        }
        if self.cfg.alien_calls && !matches!(decide(&applied, p, false), Decision::OutOfOrder) {
            // A Teams call may make the PBX user busy (F2 option `presence-out.alien-calls`).
            crate::presence_out::alien::teams_presence(env, &m.guid, &p.activity);
        }
        let activity = match decide(&applied, p, forced) {
            Decision::OutOfOrder => {
                env.counter_add(
                    "presence_updates_dropped_total",
                    &[("reason", "out-of-order")],
                    1,
                );
                return;
            }
            Decision::Unknown => {
                env.log(
                    Level::Debug,
                    target::APP,
                    &format!(
                        "unknown Teams presence {}/{}; PBX unchanged",
                        p.availability, p.activity
                    ),
                );
                return;
            }
            Decision::Unchanged => {
                applied.seq = p.sequence_number.clone().or(applied.seq);
                store::set_json(env, &key, &applied);
                return;
            }
            Decision::Write(a) => a,
        };
        applied.seq = p.sequence_number.clone().or(applied.seq);
        let why = format!("Teams presence {}/{}", p.availability, p.activity);
        match pbx.set_presence_because(env, Some(&m.loc), &m.guid, activity, "", &why) {
            Ok(_) => {
                applied.activity = Some(activity.to_string());
                env.counter_add("presence_pbx_writes_total", &[], 1);
            }
            Err(e) => {
                // Not written: the next reconciliation tries again.
                applied.activity = None;
                env.log(
                    Level::Debug,
                    target::APP,
                    &format!("presence of {} not written: {e}", m.name),
                );
            }
        }
        store::set_json(env, &key, &applied);
    }

    /// `POST /subscriptions` or `/lifecycle` from Graph. Always answered at once: the
    /// handshake with the token, everything else 202 after it was processed or stored.
    pub fn on_notification(
        &mut self,
        env: &mut impl Env,
        pbx: &mut Pbx,
        tokens: &Tokens,
        req: &InboundRequest,
    ) -> HttpResponse {
        if let Some(token) = notif::validation_token(&req.query) {
            let mut r = HttpResponse::text(200, &token);
            r.headers = vec![crate::event::Header::new("content-type", "text/plain")];
            return r;
        }
        let accepted = HttpResponse {
            status: 202,
            headers: vec![],
            body: vec![],
        };
        env.counter_add("graph_notifications_total", &[], 1);
        let Some(c) = notif::parse(&req.body) else {
            self.forged(env, req, "not a notification collection");
            return accepted;
        };
        let mut valid = Collection {
            validation_tokens: c.validation_tokens.clone(),
            items: Vec::new(),
        };
        let mut users_changed = false;
        for it in c.items {
            let users_secret = self
                .users_sub
                .as_ref()
                .filter(|u| u.id == it.subscription_id)
                .map(|u| u.client_state.clone());
            if let Some(cs) = users_secret {
                if !notif::same_secret(&cs, &it.client_state) {
                    self.forged(env, req, "wrong clientState");
                    continue;
                }
                match it.lifecycle_event.as_deref() {
                    None => users_changed = true,
                    Some(ev) => self.users_lifecycle(env, tokens, ev),
                }
                continue;
            }
            let owner = self
                .subs
                .iter()
                .find_map(|(a, s)| {
                    s.record
                        .as_ref()
                        .filter(|r| r.id == it.subscription_id)
                        .map(|r| (a.clone(), r.client_state.clone()))
                })
                .or_else(|| {
                    self.retired
                        .iter()
                        .find(|(_, r)| r.record.id == it.subscription_id)
                        .map(|(a, r)| (a.clone(), r.record.client_state.clone()))
                });
            let tenant_is_id =
                self.cfg.tenant.len() == 36 && self.cfg.tenant.matches('-').count() == 4;
            match owner {
                None => self.forged(env, req, "unknown subscription"),
                Some(_)
                    if tenant_is_id
                        && !it.tenant_id.is_empty()
                        && !it.tenant_id.eq_ignore_ascii_case(&self.cfg.tenant) =>
                {
                    self.forged(env, req, "unknown tenant")
                }
                Some((_, cs)) if !notif::same_secret(&cs, &it.client_state) => {
                    self.forged(env, req, "wrong clientState")
                }
                Some((account, _)) => match it.lifecycle_event.as_deref() {
                    Some(ev) => self.lifecycle(env, tokens, &account, ev),
                    None => valid.items.push(it),
                },
            }
        }
        if users_changed {
            // A burst of directory changes costs one read of the users.
            self.users_due = true;
            self.settle(env);
        }
        if valid.items.is_empty() {
            return accepted;
        }
        if valid.items.iter().any(|i| i.encrypted.is_some()) {
            // Nothing older waits and the tokens check out: processed at once. Storing the body
            // and deleting it again in this same event would commit nothing (an event commits
            // as one), yet cost a copy, a scan and a second parse of the whole body.
            if env.kv_scan(INBOX_RICH, None, 1).entries.is_empty()
                && matches!(self.check_tokens(env, &valid), TokenCheck::Ok)
            {
                self.process_rich(env, pbx, tokens, &valid);
                return accepted;
            }
            // Stored first: acknowledged only what survives a restart.
            let n = store::get_u64(env, "inbox/rich-next").unwrap_or(0);
            store::set_u64(env, "inbox/rich-next", n + 1);
            env.kv_set(&format!("{INBOX_RICH}{n:016}"), &req.body);
            self.drain_rich_inbox(env, pbx, tokens);
        } else {
            let ids: Vec<String> = valid
                .items
                .iter()
                .map(|i| i.resource_id.clone())
                .filter(|i| !i.is_empty())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for i in &ids {
                env.kv_set(&format!("{INBOX_IDS}{}", store::segment(i)), b"");
            }
            self.read(env, tokens, ids, 0);
        }
        accepted
    }

    fn forged(&mut self, env: &mut impl Env, req: &InboundRequest, why: &str) {
        env.counter_add("graph_notifications_rejected_total", &[("reason", why)], 1);
        env.log(
            Level::Warn,
            target::GRAPH,
            &format!("notification from {} ignored: {why}", req.peer),
        );
    }

    fn lifecycle(&mut self, env: &mut impl Env, tokens: &Tokens, account: &str, event: &str) {
        env.log(
            Level::Info,
            target::GRAPH,
            &format!("account `{account}`: lifecycle event {event}"),
        );
        if self.retired.contains_key(account) {
            // Not renewed: it is being deleted, or expires by itself.
            if event == "subscriptionRemoved" {
                self.retired.remove(account);
                env.kv_delete(&sub_key(account));
            }
            return;
        }
        match event {
            // Product decision: renewing by PATCH only, never PATCH plus reauthorize.
            "reauthorizationRequired" => self.reauthorize(env, tokens, account),
            "subscriptionRemoved" => {
                env.kv_delete(&sub_key(account));
                if let Some(s) = self.subs.get_mut(account) {
                    s.record = None;
                }
                self.converge(env, tokens, account);
            }
            _ => {
                let ids = self.subs.get(account).map(|s| s.desired.clone());
                self.reconcile(env, tokens, ids);
            }
        }
    }

    /// Processes stored rich notifications whose tokens can be checked now.
    fn drain_rich_inbox(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens) {
        let mut entries = Vec::new();
        store::for_each(env, INBOX_RICH, |k, v| {
            entries.push((k.to_string(), v.to_vec()))
        });
        for (key, body) in entries {
            let Some(c) = notif::parse(&body) else {
                env.kv_delete(&key);
                continue;
            };
            match self.check_tokens(env, &c) {
                TokenCheck::NeedKeys => {
                    if !self.jwks_fetching {
                        let url = format!(
                            "{}/common/discovery/v2.0/keys",
                            self.cfg.login_url.trim_end_matches('/')
                        );
                        let id = env.http_start(crate::event::HttpRequest {
                            method: "GET".into(),
                            url,
                            headers: vec![],
                            body: vec![],
                            timeout_ms: api::TIMEOUT_MS,
                        });
                        self.pending.insert(id, Pending::Jwks);
                        self.jwks_fetching = true;
                    }
                    return;
                }
                TokenCheck::UnknownKey(kid) => {
                    // The key set was fetched a moment ago and still lacks the key: the content
                    // cannot be trusted, but the clientState matched, so read the presence.
                    env.kv_delete(&key);
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("validation token signed with unknown key {kid}; re-reading presence instead"),
                    );
                    let ids: Vec<String> = c
                        .items
                        .iter()
                        .map(|i| i.resource_id.clone())
                        .filter(|i| !i.is_empty())
                        .collect();
                    self.read(env, tokens, ids, 0);
                }
                TokenCheck::Bad(why) => {
                    env.kv_delete(&key);
                    env.counter_add(
                        "graph_notifications_rejected_total",
                        &[("reason", "validation token")],
                        1,
                    );
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("rich notification ignored: {why}"),
                    );
                }
                TokenCheck::Ok => {
                    env.kv_delete(&key);
                    self.process_rich(env, pbx, tokens, &c);
                }
            }
        }
    }

    fn check_tokens(&mut self, env: &mut impl Env, c: &Collection) -> TokenCheck {
        let Some(list) = c.validation_tokens.as_ref().filter(|l| !l.is_empty()) else {
            return TokenCheck::Bad(
                "no validationTokens (is appRoleAssignmentRequired set on the app?)".into(),
            );
        };
        // Token times are Microsoft's.
        let now = self.graph_now(env);
        for t in list {
            let Some(jwt) = notif::parse_jwt(t) else {
                return TokenCheck::Bad("malformed validation token".into());
            };
            if let Err(e) = notif::check_claims(&jwt, &self.cfg.client_id, now) {
                return TokenCheck::Bad(e);
            }
            let Some((_, key)) = self.jwks.iter().find(|(k, _)| *k == jwt.kid) else {
                // An unknown key id: the key set rotated (or was never fetched).
                // Refetched at most once a minute, so made-up key ids cannot cause a storm.
                let stale = self
                    .jwks_fetched_ms
                    .is_none_or(|at| env.now_ms().saturating_sub(at) > 60_000);
                return if self.jwks_fetching || stale {
                    TokenCheck::NeedKeys
                } else {
                    TokenCheck::UnknownKey(jwt.kid)
                };
            };
            if !env.key_verify_rs256(key, &jwt.signed, &jwt.signature) {
                return TokenCheck::Bad("validation token signature does not verify".into());
            }
        }
        TokenCheck::Ok
    }

    fn process_rich(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens, c: &Collection) {
        let encs: Vec<&notif::Encrypted> = c
            .items
            .iter()
            .filter_map(|i| i.encrypted.as_ref())
            .collect();
        let keys: Vec<Vec<u8>> = encs.iter().map(|e| e.data_key.clone()).collect();
        // One host call for the whole POST.
        let sym = match env.key_rsa_oaep_decrypt(CERT_KEY, OaepHash::Sha1, &keys) {
            Ok(s) => s,
            Err(e) => {
                env.log(
                    Level::Error,
                    target::GRAPH,
                    &format!("decrypting notification keys failed: {e:?}"),
                );
                let ids: Vec<String> = c.items.iter().map(|i| i.resource_id.clone()).collect();
                self.read(env, tokens, ids, 0);
                return;
            }
        };
        for (enc, key) in encs.iter().zip(sym) {
            let plain = key
                .map_err(|e| format!("{e:?}"))
                .and_then(|k| notif::decrypt(&k, enc).map_err(|e| format!("{e:?}")));
            match plain.map(|p| serde_json::from_slice::<Presence>(&p)) {
                Ok(Ok(p)) => self.apply(env, pbx, &p),
                Ok(Err(e)) => env.log(
                    Level::Warn,
                    target::GRAPH,
                    &format!("rich notification content unreadable: {e}"),
                ),
                Err(e) => {
                    env.counter_add(
                        "graph_notifications_rejected_total",
                        &[("reason", "decryption")],
                        1,
                    );
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("rich notification not decrypted: {e}"),
                    );
                }
            }
        }
    }

    /// Per account: when its presence subscription expires (ms since the epoch), `None` while
    /// it has none (for the `graph_subscriptions` gauge; cheap, in memory).
    pub fn subscription_expiries(&self) -> Vec<Option<u64>> {
        let records = self.subs.values().map(|s| s.record.as_ref());
        records.map(|r| r.map(|r| r.expiry_ms)).collect()
    }

    /// What the status page shows.
    pub fn status(&self, env: &mut impl Env) -> Value {
        let accounts: Vec<Value> = self
            .subs
            .iter()
            .map(|(a, s)| {
                json!({
                    "account": a,
                    "phase": format!("{:?}", s.phase).to_lowercase(),
                    "subscription": s.record.as_ref().map(|r| r.id.clone()),
                    "expires": s.record.as_ref().map(|r| subs::iso(r.expiry_ms)),
                    "users": s.record.as_ref().map(|r| r.ids.len()).unwrap_or(0),
                    "rich": s.record.as_ref().map(|r| r.rich),
                })
            })
            .collect();
        json!({
            "entra_users": self.entra.as_ref().map(Vec::len),
            "matched": self.matched.len(),
            "not_matched": matching::problems(env, 200),
            "subscriptions": accounts,
            "clock_skew_ms": self.skew_ms,
            // Presence reads still to come: `idle` once nothing is due, queued or in flight.
            "reads": {
                "in_flight": self.reads_in_flight,
                "queued": self.read_queue.len(),
                "retrying": self.retry_reads.len(),
                "due": self.read_all_due || !self.read_due.is_empty(),
                // A settle timer may still add reads (after matching).
                "idle": !self.settle_timer
                    && self.reads_in_flight == 0
                    && self.read_queue.is_empty()
                    && self.retry_reads.is_empty()
                    && !self.read_all_due
                    && self.read_due.is_empty(),
            },
        })
    }
}

/// What to do with one Teams presence of a synced user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Older than what was applied (by `sequenceNumber`): dropped.
    OutOfOrder,
    /// Neither activity nor availability is known: the PBX stays as it is.
    Unknown,
    /// The PBX already shows it: not rewritten.
    Unchanged,
    /// Write this PBX activity (`""` = unset).
    Write(&'static str),
}

fn decide(applied: &Applied, p: &Presence, forced: bool) -> Decision {
    // Only strictly older updates are dropped: the same number is the same state (a duplicate,
    // or a reconciliation read) and falls through to the unchanged check.
    if let (Some(new), Some(old)) = (&p.sequence_number, &applied.seq)
        && newer(old, new)
    {
        return Decision::OutOfOrder;
    }
    let activity = match map(&p.activity, &p.availability) {
        None => return Decision::Unknown,
        Some(PbxPresence::Unset) => "",
        Some(PbxPresence::Set(a)) => a,
    };
    if applied.activity.as_deref() == Some(activity) && !forced {
        Decision::Unchanged
    } else {
        Decision::Write(activity)
    }
}

enum TokenCheck {
    Ok,
    NeedKeys,
    UnknownKey(String),
    Bad(String),
}

/// The host-held certificate for rich notifications (created on first use); `None` if the
/// host cannot provide one (then plain notifications are used, with a warning).
fn certificate(env: &mut impl Env) -> Option<Certificate> {
    if !env.key_exists(CERT_KEY)
        && let Err(e) = env.key_generate_rsa(CERT_KEY, 2048)
    {
        env.log(
            Level::Error,
            target::GRAPH,
            &format!("no key pair for rich notifications ({e:?}); using plain notifications"),
        );
        return None;
    }
    match env.key_self_signed_certificate(CERT_KEY, "microsoft365 connector", 365) {
        Ok(der) => Some(Certificate {
            base64: notif::base64(&der),
            id: CERT_KEY.into(),
        }),
        Err(e) => {
            env.log(
                Level::Error,
                target::GRAPH,
                &format!(
                    "no certificate for rich notifications ({e:?}); using plain notifications"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(availability: &str, activity: &str, seq: Option<&str>) -> Presence {
        Presence {
            id: "u1".into(),
            availability: availability.into(),
            activity: activity.into(),
            sequence_number: seq.map(str::to_string),
        }
    }

    fn applied(activity: Option<&str>, seq: Option<&str>) -> Applied {
        Applied {
            seq: seq.map(str::to_string),
            activity: activity.map(str::to_string),
        }
    }

    #[test]
    fn sign_ins_of_other_features_are_not_ours() {
        let mut env = crate::testenv::TestEnv::new();
        let cfg = Config::read(&mut env, "example.com", "m365");
        let mut sync = PresenceSync::new(cfg, vec!["teams1".into()]);
        let tokens = Tokens::new();
        let failed = TokenEvent::Failed {
            account: "calendar".into(),
            error: crate::graph::token::TokenError {
                status: 0,
                error: "timeout".into(),
                codes: vec![],
                description: String::new(),
                advice: "",
                action: crate::graph::aadsts::Action::Retry,
            },
        };
        sync.on_token(&mut env, &tokens, &failed);
        // A calendar sign-in recovering later must not look like a Teams account recovering.
        assert!(sync.failed.is_empty(), "{:?}", sync.failed);
    }

    #[test]
    fn out_of_order_updates_are_dropped() {
        let a = applied(Some("meeting"), Some("C0A"));
        assert_eq!(
            decide(&a, &p("Away", "Away", Some("C09")), false),
            Decision::OutOfOrder
        );
        // The same number: the same state, unchanged unless a write is forced.
        assert_eq!(
            decide(&a, &p("Busy", "InAMeeting", Some("C0A")), false),
            Decision::Unchanged
        );
        assert_eq!(
            decide(&a, &p("Busy", "InAMeeting", Some("C0A")), true),
            Decision::Write("meeting")
        );
        assert_eq!(
            decide(&a, &p("Away", "Away", Some("C0B")), false),
            Decision::Write("away")
        );
        // Longer numbers are newer ("10" after "9").
        let a = applied(Some("meeting"), Some("9"));
        assert_eq!(
            decide(&a, &p("Away", "Away", Some("10")), false),
            Decision::Write("away")
        );
        // Without sequence numbers (reconciliation reads) the update applies.
        assert_eq!(
            decide(&a, &p("Away", "Away", None), false),
            Decision::Write("away")
        );
    }

    #[test]
    fn unchanged_presence_is_not_rewritten_unless_forced() {
        let a = applied(Some("meeting"), None);
        assert_eq!(
            decide(&a, &p("Busy", "InAMeeting", None), false),
            Decision::Unchanged
        );
        assert_eq!(
            decide(&a, &p("Busy", "InAMeeting", None), true),
            Decision::Write("meeting")
        );
        // Never written (or the write failed): written.
        let a = applied(None, None);
        assert_eq!(
            decide(&a, &p("Available", "Available", None), false),
            Decision::Write("")
        );
        let a = applied(Some(""), None);
        assert_eq!(
            decide(&a, &p("Offline", "OffWork", None), false),
            Decision::Unchanged
        );
        assert_eq!(
            decide(&a, &p("Gardening", "Sleeping", None), false),
            Decision::Unknown
        );
    }

    #[test]
    fn account_names_survive_the_kv_key() {
        for name in ["teams1", "a/b%c", "ünï cödé", "50%", "%zz"] {
            assert_eq!(unsegment(&store::segment(name)), name);
        }
    }

    #[test]
    fn timing_settings_are_read_in_seconds() {
        let mut env = crate::testenv::TestEnv::new();
        env.set_config("presence.renew-interval-s", "1.5");
        env.set_config("presence.reconcile-interval-s", "-3");
        env.set_config("presence.notifications", "plain");
        env.set_config("presence.public-url", "https://c.example.com/");
        let c = Config::read(&mut env, "example.com", "m365");
        assert_eq!(c.renew_ms, 1_500);
        assert_eq!(c.reconcile_ms, 1_800_000);
        assert!(env.logged("presence.reconcile-interval-s `-3`"));
        assert!(!c.rich);
        assert_eq!(c.lifetime_ms, 3_600_000);
        assert_eq!(c.graph_url, "https://graph.microsoft.com");
        assert_eq!(c.login_url, "https://login.microsoftonline.com");
        assert_eq!(
            c.urls.unwrap().lifecycle,
            "https://c.example.com/example.com/m365/lifecycle"
        );
    }
}
