//! Calendar presence (product.md F3): Outlook events of every matched, licensed user become
//! PBX presence on the calendar contact (`pbx.calendar-contact`, default `calendar:`), next to
//! the Teams item of F1 and never overwriting it.
//!
//! The feature signs in as an application (client credentials, its own app registration),
//! keeps one event subscription (`/users/{id}/events`) per user, reads `calendarView` for a
//! rolling window (times in UTC, occurrences expanded by Graph) hourly and on notifications,
//! and sets a timer at the next start or end of an event. The users come from F1's matching
//! (`match/user/`), which this module only reads.
//!
//! KV: `calendar/user/<entra id>` the user's slots and the presence last written (the
//! schedule, so a restart or hot swap misses no start or end), `calendar/sub/<entra id>` the
//! user's subscription, `calendar/inbox/<entra id>` users notified but not read yet.

pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::env::{Env, Level, target};
use crate::event::TimerId;
use crate::event::{Header, HttpError, HttpRequest, HttpResponse, InboundRequest, RequestId};
use crate::graph::api::{self, GraphError};
use crate::graph::notifications as notif;
use crate::graph::subscriptions::{self as subs, iso};
use crate::graph::token::{self, Client};
use crate::graph::tokens::{SignIn, TokenEvent, Tokens};
use crate::matching::{self, Matched};
use crate::pbx::{Pbx, PbxEvent};
use crate::store;
use schedule::Slot;

/// Timer tags of this module start with this.
pub const TIMER_PREFIX: &str = "cal:";
/// Name of the feature's application token in [`Tokens`] (not a valid F1 account name
/// clash: F1 names come from settings and `#` marks this one as internal).
pub const ACCOUNT: &str = "#calendar";
/// Inbound paths (below the instance) where Graph posts calendar notifications.
pub const NOTIFICATION_PATH: &str = "/calendar/notifications";
/// Inbound path of the calendar lifecycle notifications.
pub const LIFECYCLE_PATH: &str = "/calendar/lifecycle";

const USER_PREFIX: &str = "calendar/user/";
const SUB_PREFIX: &str = "calendar/sub/";
const INBOX_PREFIX: &str = "calendar/inbox/";
/// Microsoft's clock minus ours (ms, decimal), learnt from the `Date` of Graph's answers.
const SKEW_KEY: &str = "calendar/clock-skew-ms";
/// A changed skew is stored only when it moved by more than this (no KV write per response).
const SKEW_STORE_STEP_MS: i64 = 1_000;
/// The smallest maximum lifetime of event subscriptions in any documented cloud (graph.md
/// 5.1): longer requests are clamped to it.
const MAX_LIFETIME_MS: u64 = 4_230 * 60_000;
/// calendarView reads in flight at once.
const MAX_READS: usize = 4;
/// Graph refuses more event subscriptions on one mailbox (all apps together) with this text.
const MAILBOX_LIMIT: &str = "maximum number of subscriptions";

/// Where Graph posts calendar notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `<public base>/<domain>/<instance>/calendar/notifications`.
    pub notification: String,
    /// `<public base>/<domain>/<instance>/calendar/lifecycle`.
    pub lifecycle: String,
}

/// The feature's settings (names in guest/README.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Graph base URL of every call.
    pub graph_url: String,
    /// Where notifications go; `None` without a public URL (then hourly reads only).
    pub urls: Option<Urls>,
    /// Requested subscription lifetime (clamped to 4,230 minutes).
    pub lifetime_ms: u64,
    /// Renewal rhythm of the subscriptions (daily by default).
    pub renew_ms: u64,
    /// Re-read rhythm of every calendar.
    pub refresh_ms: u64,
    /// Length of the window read ahead.
    pub window_ms: u64,
}

/// The app registration and the feature's settings; `None` from [`CalendarSettings::read`]
/// when the feature is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarSettings {
    /// The confidential client (tenant, client id, secret).
    pub client: Client,
    /// `<resource>/.default`.
    pub scope: String,
    /// Everything else.
    pub cfg: Config,
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
        None => default_s * 1000,
    }
}

impl CalendarSettings {
    /// Reads the settings. Missing parts of a half-done configuration are logged by name; the
    /// secret is never logged.
    pub fn read(env: &mut impl Env, domain: &str, instance: &str) -> Option<Self> {
        let mut get = |n: &str| crate::settings::value(env, n);
        let tenant = get("calendar.tenant");
        let client_id = get("calendar.client-id");
        let secret = get("calendar.client-secret");
        let public = get("calendar.public-url").or_else(|| get("presence.public-url"));
        let graph_url = get("graph.url").unwrap_or_else(|| token::DEFAULT_GRAPH_RESOURCE.into());
        let resource = get("graph.resource").unwrap_or_else(|| graph_url.clone());
        let login = get("graph.login-url").unwrap_or_else(|| token::DEFAULT_LOGIN_BASE.into());
        let (Some(tenant), Some(client_id), Some(secret)) = (&tenant, &client_id, &secret) else {
            let missing: Vec<&str> = [
                ("calendar.tenant", tenant.is_none()),
                ("calendar.client-id", client_id.is_none()),
                ("calendar.client-secret", secret.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            if missing.len() < 3 {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!(
                        "calendar presence is off: {} missing",
                        missing.join(" and ")
                    ),
                );
            }
            return None;
        };
        if crate::settings::value(env, "presence.client-id").is_none() {
            env.log(
                Level::Warn,
                target::CONFIG,
                "calendar presence follows the users Teams presence matched: without presence.tenant, presence.client-id and presence.accounts no user is matched",
            );
        }
        let urls = public.map(|p| {
            let base = format!("{}/{domain}/{instance}", p.trim_end_matches('/'));
            Urls {
                notification: format!("{base}{NOTIFICATION_PATH}"),
                lifecycle: format!("{base}{LIFECYCLE_PATH}"),
            }
        });
        if urls.is_none() {
            env.log(
                Level::Warn,
                target::CONFIG,
                "calendar.public-url (or presence.public-url) is not set: no event subscriptions, calendars are read hourly only",
            );
        }
        let cfg = Config {
            graph_url,
            urls,
            lifetime_ms: seconds(
                env,
                "calendar.subscription-lifetime-s",
                MAX_LIFETIME_MS / 1000,
            )
            .min(MAX_LIFETIME_MS),
            renew_ms: seconds(env, "calendar.renew-interval-s", 86_400),
            refresh_ms: seconds(env, "calendar.refresh-interval-s", 3_600),
            window_ms: seconds(env, "calendar.window-s", 48 * 3_600),
        };
        Some(CalendarSettings {
            client: Client {
                login_base: login,
                tenant: tenant.clone(),
                client_id: client_id.clone(),
                client_secret: Some(secret.clone()),
            },
            scope: token::app_scope(&resource),
            cfg,
        })
    }

    /// Adds the feature's application token to `tokens` and starts it.
    pub fn sign_in(&self, env: &mut impl Env, tokens: &mut Tokens) -> Vec<TokenEvent> {
        tokens.add(
            env,
            ACCOUNT,
            self.client.clone(),
            SignIn::ClientCredentials,
            &self.scope,
        );
        tokens.start(env, ACCOUNT)
    }
}

/// A user's schedule (`calendar/user/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct UserState {
    slots: Vec<Slot>,
    /// `(activity, note)` last written to the PBX; `None` before the first write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied: Option<(String, String)>,
}

/// A user's event subscription (`calendar/sub/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SubRecord {
    user: String,
    id: String,
    expiry_ms: u64,
    client_state: String,
}

/// One listed subscription.
#[derive(Debug, Clone, Default, Deserialize)]
struct Listed {
    #[serde(default)]
    id: String,
    #[serde(default)]
    resource: String,
    #[serde(default, rename = "notificationUrl")]
    notification_url: String,
}

#[derive(Debug, Clone)]
enum Pending {
    List { so_far: Vec<Listed> },
    Delete { user: String },
    Create { user: String, client_state: String },
    Renew { user: String },
    View { user: String, slots: Vec<Slot> },
}

/// The feature's state.
#[derive(Debug)]
pub struct CalendarSync {
    cfg: Config,
    matched: BTreeMap<String, Matched>,
    subs: BTreeMap<String, SubRecord>,
    listed: bool,
    listing: bool,
    read_everyone: bool,
    pending: BTreeMap<RequestId, Pending>,
    /// Timers this instance set; timers of a previous guest (hot swap) are ignored.
    timers: BTreeSet<TimerId>,
    user_timers: BTreeMap<String, TimerId>,
    queue: BTreeSet<String>,
    retry_timer: bool,
    attempt: u32,
    skew_ms: i64,
    /// Users whose calendar item shows an event now (for the status page, without a KV scan).
    in_event: BTreeSet<String>,
}

fn user_key(id: &str) -> String {
    format!("{USER_PREFIX}{}", store::segment(id))
}

fn sub_key(id: &str) -> String {
    format!("{SUB_PREFIX}{}", store::segment(id))
}

fn inbox_key(id: &str) -> String {
    format!("{INBOX_PREFIX}{}", store::segment(id))
}

/// The user id of an event subscription's resource (`/users/{id}/events`).
fn events_user(resource: &str) -> Option<String> {
    let parts: Vec<&str> = resource.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [u, id, e] if u.eq_ignore_ascii_case("users") && e.eq_ignore_ascii_case("events") => {
            Some(id.to_string())
        }
        _ => None,
    }
}

impl CalendarSync {
    /// The feature with its settings; [`CalendarSync::init`] starts it.
    pub fn new(cfg: Config) -> Self {
        CalendarSync {
            cfg,
            matched: BTreeMap::new(),
            subs: BTreeMap::new(),
            listed: false,
            listing: false,
            read_everyone: true,
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            user_timers: BTreeMap::new(),
            queue: BTreeSet::new(),
            retry_timer: false,
            attempt: 0,
            skew_ms: 0,
            in_event: BTreeSet::new(),
        }
    }

    /// Restores the stored schedules (writing what changed while no guest ran), the
    /// subscriptions and the unread notifications, and starts the periodic timers.
    pub fn init(&mut self, env: &mut impl Env, pbx: &mut Pbx) {
        self.matched = matching::load(env);
        self.skew_ms = env
            .kv_get(SKEW_KEY)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut stored = Vec::new();
        store::for_each(env, SUB_PREFIX, |_, v| {
            stored.extend(serde_json::from_slice::<SubRecord>(v).ok())
        });
        self.subs = stored.into_iter().map(|r| (r.user.clone(), r)).collect();
        // Notified before a restart and not read yet (the value is the user id).
        let mut inbox = Vec::new();
        store::for_each(env, INBOX_PREFIX, |_, v| {
            inbox.push(String::from_utf8_lossy(v).to_string())
        });
        self.queue.extend(inbox);
        self.set_timer(env, self.cfg.refresh_ms, "refresh");
        self.set_timer(env, self.cfg.renew_ms, "renew");
        for user in self.matched.keys().cloned().collect::<Vec<_>>() {
            self.apply(env, pbx, &user, false);
        }
    }

    fn set_timer(&mut self, env: &mut impl Env, after_ms: u64, kind: &str) -> TimerId {
        let id = env.timer_set(after_ms, &format!("{TIMER_PREFIX}{kind}"));
        self.timers.insert(id);
        id
    }

    fn graph_now(&self, env: &impl Env) -> u64 {
        (env.now_ms() as i64 + self.skew_ms).max(0) as u64
    }

    fn token<'t>(&self, env: &impl Env, tokens: &'t Tokens) -> Option<&'t str> {
        tokens.access_token(ACCOUNT, env.now_ms())
    }

    fn start(&mut self, env: &mut impl Env, req: HttpRequest, p: Pending) {
        let id = env.http_start(req);
        self.pending.insert(id, p);
    }

    /// A token manager event: the first token lists the subscriptions and reads everyone.
    pub fn on_token(&mut self, env: &mut impl Env, tokens: &Tokens, ev: &TokenEvent) {
        match ev {
            TokenEvent::Ready { account } if account == ACCOUNT => {}
            TokenEvent::Failed { account, error } if account == ACCOUNT => {
                env.log(
                    Level::Error,
                    target::GRAPH,
                    &format!("calendar app sign-in failed: {error}"),
                );
                return;
            }
            _ => return,
        }
        if !self.listed && !self.listing {
            self.list(env, tokens, None);
        }
        if std::mem::take(&mut self.read_everyone) {
            self.queue.extend(self.matched.keys().cloned());
        }
        if self.listed {
            self.renew_stale(env, tokens);
        }
        self.converge(env, tokens);
        self.pump(env, tokens);
    }

    fn list(&mut self, env: &mut impl Env, tokens: &Tokens, next: Option<(String, Vec<Listed>)>) {
        if self.cfg.urls.is_none() {
            self.listed = true;
            return;
        }
        self.listing = false;
        let Some(token) = self.token(env, tokens) else {
            return;
        };
        let (url, so_far) = next.unwrap_or_else(|| {
            (
                format!("{}/subscriptions", api::root(&self.cfg.graph_url)),
                Vec::new(),
            )
        });
        let req = api::request("GET", url, token, None);
        self.listing = true;
        self.start(env, req, Pending::List { so_far });
    }

    /// Keeps what was listed if it is ours and stored, deletes every other event subscription
    /// to our URL (an old install or a lost KV), so creating never meets a conflict.
    fn adopt(&mut self, env: &mut impl Env, tokens: &Tokens, listed: Vec<Listed>) {
        let Some(urls) = self.cfg.urls.clone() else {
            return;
        };
        let mut kept = BTreeSet::new();
        for l in listed {
            if l.notification_url != urls.notification {
                continue;
            }
            let Some(user) = events_user(&l.resource) else {
                continue;
            };
            let ours = self.subs.get(&user).is_some_and(|r| r.id == l.id)
                && self.matched.contains_key(&user);
            if ours {
                kept.insert(l.id);
            } else if let Some(token) = self.token(env, tokens) {
                env.log(
                    Level::Info,
                    target::GRAPH,
                    &format!("deleting calendar subscription {} (not ours to keep)", l.id),
                );
                let req = subs::delete_request(&self.cfg.graph_url, token, &l.id);
                self.start(env, req, Pending::Delete { user });
            }
        }
        let lost: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, r)| !kept.contains(&r.id))
            .map(|(u, _)| u.clone())
            .collect();
        for user in lost {
            self.subs.remove(&user);
            env.kv_delete(&sub_key(&user));
        }
        self.listed = true;
        // Adopted subscriptions are renewed at once: their remaining lifetime is unknown.
        for user in self.subs.keys().cloned().collect::<Vec<_>>() {
            self.renew(env, tokens, &user);
        }
        self.converge(env, tokens);
    }

    /// Creates the subscriptions matched users lack and deletes those of users gone.
    fn converge(&mut self, env: &mut impl Env, tokens: &Tokens) {
        if !self.listed || self.cfg.urls.is_none() {
            return;
        }
        let Some(token) = self.token(env, tokens).map(str::to_string) else {
            return;
        };
        let gone: Vec<String> = self
            .subs
            .keys()
            .filter(|u| !self.matched.contains_key(*u))
            .cloned()
            .collect();
        for user in gone {
            if let Some(r) = self.subs.remove(&user) {
                env.kv_delete(&sub_key(&user));
                let req = subs::delete_request(&self.cfg.graph_url, &token, &r.id);
                self.start(env, req, Pending::Delete { user });
            }
        }
        // A user whose old subscription is still being deleted waits for that: the same
        // resource and URL twice would be a conflict.
        let creating: BTreeSet<String> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Create { user, .. }
                | Pending::Renew { user }
                | Pending::Delete { user } => Some(user.clone()),
                _ => None,
            })
            .collect();
        let missing: Vec<String> = self
            .matched
            .keys()
            .filter(|u| !self.subs.contains_key(*u) && !creating.contains(*u))
            .cloned()
            .collect();
        for user in missing {
            self.create(env, &token, &user);
        }
    }

    fn create(&mut self, env: &mut impl Env, token: &str, user: &str) {
        let Some(urls) = &self.cfg.urls else {
            return;
        };
        let client_state = format!("{:016x}{:016x}", env.random_u64(), env.random_u64());
        let body = json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": urls.notification,
            "lifecycleNotificationUrl": urls.lifecycle,
            "resource": format!("/users/{user}/events"),
            "expirationDateTime": iso(self.graph_now(env) + self.cfg.lifetime_ms),
            "clientState": client_state,
        });
        let req = api::request(
            "POST",
            format!("{}/subscriptions", api::root(&self.cfg.graph_url)),
            token,
            Some(&body),
        );
        self.start(
            env,
            req,
            Pending::Create {
                user: user.to_string(),
                client_state,
            },
        );
    }

    fn renew(&mut self, env: &mut impl Env, tokens: &Tokens, user: &str) {
        let (Some(token), Some(r)) = (self.token(env, tokens), self.subs.get(user)) else {
            return;
        };
        let expiry = self.graph_now(env) + self.cfg.lifetime_ms;
        let req = subs::renew_request(&self.cfg.graph_url, token, &r.id, expiry);
        self.start(
            env,
            req,
            Pending::Renew {
                user: user.to_string(),
            },
        );
    }

    /// Renews what was not renewed within the last half renewal period (a renewal that failed,
    /// or was skipped without a token), long before the subscription lapses.
    fn renew_stale(&mut self, env: &mut impl Env, tokens: &Tokens) {
        let stale =
            self.graph_now(env) + self.cfg.lifetime_ms.saturating_sub(self.cfg.renew_ms / 2);
        let renewing: BTreeSet<String> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Renew { user } => Some(user.clone()),
                _ => None,
            })
            .collect();
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(u, r)| r.expiry_ms < stale && !renewing.contains(*u))
            .map(|(u, _)| u.clone())
            .collect();
        for user in due {
            self.renew(env, tokens, &user);
        }
    }

    /// Starts calendarView reads for queued users, a few at a time.
    fn pump(&mut self, env: &mut impl Env, tokens: &Tokens) {
        let Some(token) = self.token(env, tokens).map(str::to_string) else {
            return;
        };
        let reading: BTreeSet<String> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::View { user, .. } => Some(user.clone()),
                _ => None,
            })
            .collect();
        let mut free = MAX_READS.saturating_sub(reading.len());
        let ready: Vec<String> = self
            .queue
            .iter()
            .filter(|u| !reading.contains(*u))
            .cloned()
            .collect();
        for user in ready {
            if free == 0 {
                break;
            }
            self.queue.remove(&user);
            if !self.matched.contains_key(&user) {
                env.kv_delete(&inbox_key(&user));
                continue;
            }
            let from = self.graph_now(env);
            let url = format!(
                "{}/users/{user}/calendarView?startDateTime={}&endDateTime={}&$select=subject,start,end,showAs,isAllDay,isCancelled,sensitivity,type,seriesMasterId&$top=50",
                api::root(&self.cfg.graph_url),
                iso(from),
                iso(from + self.cfg.window_ms),
            );
            self.read_page(env, &token, url, user, Vec::new());
            free -= 1;
        }
    }

    fn read_page(
        &mut self,
        env: &mut impl Env,
        token: &str,
        url: String,
        user: String,
        slots: Vec<Slot>,
    ) {
        let mut req = api::request("GET", url, token, None);
        // Occurrences come expanded and every time in UTC: no time-zone rules needed here.
        req.headers
            .push(Header::new("prefer", "outlook.timezone=\"UTC\""));
        self.start(env, req, Pending::View { user, slots });
    }

    fn retry_later(&mut self, env: &mut impl Env, error: Option<&GraphError>) {
        self.attempt = self.attempt.saturating_add(1);
        if self.retry_timer {
            return;
        }
        let delay = match error {
            Some(e) => api::retry_delay_ms(e, self.attempt, env.random_u64()),
            None => api::backoff_ms(self.attempt, 2_000, 5 * 60_000, env.random_u64()),
        };
        self.set_timer(env, delay, "retry");
        self.retry_timer = true;
    }

    /// Handles an HTTP completion; `false` if it is not this feature's.
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
                if let Some(skew) = subs::skew_ms(&r.headers, env.now_ms()) {
                    if (skew - self.skew_ms).abs() > SKEW_STORE_STEP_MS {
                        env.kv_set(SKEW_KEY, skew.to_string().as_bytes());
                    }
                    self.skew_ms = skew;
                }
                api::check(r).map(|_| r)
            }
            Err(e) => {
                env.log(
                    Level::Warn,
                    target::GRAPH,
                    &format!("calendar request failed: {e:?}"),
                );
                Err(GraphError {
                    status: 0,
                    code: "connection".into(),
                    message: format!("{e:?}"),
                    retry_after_ms: None,
                })
            }
        };
        match p {
            Pending::List { mut so_far } => match resp {
                Ok(r) => {
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                    so_far.extend(
                        v["value"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| serde_json::from_value::<Listed>(s.clone()).ok()),
                    );
                    match v["@odata.nextLink"].as_str() {
                        Some(next) => self.list(env, tokens, Some((next.to_string(), so_far))),
                        None => {
                            self.listing = false;
                            self.attempt = 0;
                            self.adopt(env, tokens, so_far);
                        }
                    }
                }
                Err(e) => {
                    self.listing = false;
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("listing calendar subscriptions failed: {e}"),
                    );
                    self.retry_later(env, Some(&e));
                }
            },
            Pending::Delete { .. } => {
                // 404: already gone. Anything else: Graph lets it expire within its lifetime.
                if resp.as_ref().is_err_and(|e| e.status != 404) {
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        "deleting a calendar subscription failed; Graph lets it expire",
                    );
                }
                self.converge(env, tokens);
            }
            Pending::Create { user, client_state } => match resp.and_then(subs::parse_subscription)
            {
                Ok((sub_id, expiry_ms)) => {
                    self.attempt = 0;
                    let r = SubRecord {
                        user: user.clone(),
                        id: sub_id,
                        expiry_ms,
                        client_state,
                    };
                    store::set_json(env, &sub_key(&user), &r);
                    if !self.matched.contains_key(&user) {
                        // Unmatched while being created: not ours to keep.
                        self.subs.insert(user, r);
                        self.converge(env, tokens);
                    } else {
                        self.subs.insert(user.clone(), r);
                        // Changes before the subscription existed were not notified.
                        self.queue.insert(user);
                        self.pump(env, tokens);
                    }
                }
                Err(e) if e.status == 403 && e.message.contains(MAILBOX_LIMIT) => {
                    env.counter_add("calendar_subscription_refused_total", &[], 1);
                    env.log(
                        Level::Error,
                        target::GRAPH,
                        &format!(
                            "mailbox of {user} has 1,000 subscriptions already (all apps); its calendar is read hourly only"
                        ),
                    );
                }
                Err(e) => {
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("creating the calendar subscription of {user} failed: {e}"),
                    );
                    if e.status == 409 {
                        // One we do not know of is in the way: list and adopt again.
                        self.listed = false;
                    }
                    self.retry_later(env, Some(&e));
                }
            },
            Pending::Renew { user } => match resp.and_then(subs::parse_subscription) {
                Ok((_, expiry_ms)) => {
                    if let Some(r) = self.subs.get_mut(&user) {
                        r.expiry_ms = expiry_ms;
                        let r = r.clone();
                        store::set_json(env, &sub_key(&user), &r);
                    }
                }
                Err(e) if e.status == 404 => {
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        &format!("calendar subscription of {user} is gone; creating a new one"),
                    );
                    self.subs.remove(&user);
                    env.kv_delete(&sub_key(&user));
                    self.converge(env, tokens);
                }
                Err(e) => {
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("renewing the calendar subscription of {user} failed: {e}"),
                    );
                    self.retry_later(env, Some(&e));
                }
            },
            Pending::View { user, mut slots } => match resp {
                Ok(r) => match schedule::parse_page(&r.body) {
                    Ok(page) => {
                        if page.unreadable > 0 {
                            env.log(
                                Level::Warn,
                                target::GRAPH,
                                &format!(
                                    "{} events of {user} without UTC times ignored",
                                    page.unreadable
                                ),
                            );
                        }
                        slots.extend(page.slots);
                        match (page.next, self.token(env, tokens).map(str::to_string)) {
                            (Some(next), Some(token)) => {
                                self.read_page(env, &token, next, user, slots)
                            }
                            (Some(_), None) => {
                                self.queue.insert(user);
                            }
                            (None, _) => self.read_done(env, pbx, &user, slots),
                        }
                    }
                    Err(e) => env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("calendarView of {user} unreadable: {e}"),
                    ),
                },
                Err(e) if e.transient() || e.status == 0 || e.status == 401 => {
                    self.queue.insert(user);
                    self.retry_later(env, Some(&e));
                }
                Err(e) => {
                    env.log(
                        Level::Warn,
                        target::GRAPH,
                        &format!("calendarView of {user} failed: {e}"),
                    );
                    env.kv_delete(&inbox_key(&user));
                }
            },
        }
        self.pump(env, tokens);
        true
    }

    fn read_done(&mut self, env: &mut impl Env, pbx: &mut Pbx, user: &str, mut slots: Vec<Slot>) {
        slots.sort_by_key(|s| (s.start_ms, s.end_ms));
        let mut state: UserState = store::get_json(env, &user_key(user)).unwrap_or_default();
        state.slots = slots;
        store::set_json(env, &user_key(user), &state);
        env.kv_delete(&inbox_key(user));
        self.apply(env, pbx, user, false);
    }

    /// Writes the presence the schedule says holds now (if it differs from what was written,
    /// or, with `force`, whenever something runs) and sets the timer for the next change.
    fn apply(&mut self, env: &mut impl Env, pbx: &mut Pbx, user: &str, force: bool) {
        let Some(m) = self.matched.get(user).cloned() else {
            return;
        };
        let mut state: UserState = store::get_json(env, &user_key(user)).unwrap_or_default();
        // Event times are Microsoft's: a wrong local clock must not shift meetings.
        let now = self.graph_now(env);
        let want = schedule::state_at(&state.slots, now);
        let had = state.applied.clone().unwrap_or_default();
        if want != had || (force && !want.0.is_empty()) {
            match pbx.set_calendar_presence(env, Some(&m.loc), &m.guid, &want.0, &want.1) {
                Ok(_) => {
                    env.counter_add("calendar_pbx_writes_total", &[], 1);
                    env.log(
                        Level::Debug,
                        target::APP,
                        &format!("calendar presence of {} -> {:?}", m.name, want.0),
                    );
                    state.applied = Some(want);
                    store::set_json(env, &user_key(user), &state);
                }
                // Written when the PBX (re)connects.
                Err(e) => env.log(
                    Level::Debug,
                    target::APP,
                    &format!("calendar presence of {} not written: {e}", m.name),
                ),
            }
        }
        if state.applied.as_ref().is_some_and(|(a, _)| !a.is_empty()) {
            self.in_event.insert(user.to_string());
        } else {
            self.in_event.remove(user);
        }
        if let Some(old) = self.user_timers.remove(user) {
            env.timer_cancel(old);
            self.timers.remove(&old);
        }
        if let Some(next) = schedule::next_change(&state.slots, now) {
            let id = self.set_timer(env, next - now, &format!("at:{user}"));
            self.user_timers.insert(user.to_string(), id);
        }
    }

    /// Handles one of this feature's timers (tags starting with [`TIMER_PREFIX`]).
    pub fn on_timer(
        &mut self,
        env: &mut impl Env,
        pbx: &mut Pbx,
        tokens: &Tokens,
        id: TimerId,
        tag: &str,
    ) {
        if !self.timers.remove(&id) {
            return;
        }
        let kind = tag.strip_prefix(TIMER_PREFIX).unwrap_or(tag);
        match kind {
            "refresh" => {
                self.queue.extend(self.matched.keys().cloned());
                self.set_timer(env, self.cfg.refresh_ms, "refresh");
            }
            "renew" => {
                for user in self.subs.keys().cloned().collect::<Vec<_>>() {
                    self.renew(env, tokens, &user);
                }
                if self.token(env, tokens).is_none() {
                    // Renewed once the token is back (`on_token`) or at the retry.
                    self.retry_later(env, None);
                }
                self.set_timer(env, self.cfg.renew_ms, "renew");
            }
            "retry" => {
                self.retry_timer = false;
                if !self.listed && !self.listing {
                    self.list(env, tokens, None);
                }
                self.renew_stale(env, tokens);
            }
            _ => {
                if let Some(user) = kind.strip_prefix("at:") {
                    if self.user_timers.get(user) == Some(&id) {
                        self.user_timers.remove(user);
                    }
                    self.apply(env, pbx, user, false);
                }
            }
        }
        self.converge(env, tokens);
        self.pump(env, tokens);
    }

    /// A PBX event: a PBX that (re)connected gets every running calendar presence again.
    pub fn on_pbx(&mut self, env: &mut impl Env, pbx: &mut Pbx, ev: &PbxEvent) {
        if let PbxEvent::Connected { .. } = ev {
            for user in self.matched.keys().cloned().collect::<Vec<_>>() {
                self.apply(env, pbx, &user, true);
            }
        }
    }

    /// F1's matching may have changed (`match/user/`): users gone lose their calendar
    /// presence, schedule and subscription; users added are subscribed and read.
    pub fn on_matches_changed(&mut self, env: &mut impl Env, pbx: &mut Pbx, tokens: &Tokens) {
        let now = matching::load(env);
        if now == self.matched {
            return;
        }
        let gone: Vec<Matched> = self
            .matched
            .values()
            .filter(|m| !now.contains_key(&m.id))
            .cloned()
            .collect();
        let added: Vec<String> = now
            .keys()
            .filter(|id| !self.matched.contains_key(*id))
            .cloned()
            .collect();
        for m in &gone {
            let state: UserState = store::get_json(env, &user_key(&m.id)).unwrap_or_default();
            if state.applied.is_some_and(|(a, _)| !a.is_empty()) {
                let _ = pbx.set_calendar_presence(env, Some(&m.loc), &m.guid, "", "");
            }
            env.kv_delete(&user_key(&m.id));
            env.kv_delete(&inbox_key(&m.id));
            self.in_event.remove(&m.id);
            if let Some(t) = self.user_timers.remove(&m.id) {
                env.timer_cancel(t);
                self.timers.remove(&t);
            }
        }
        self.matched = now;
        self.queue.extend(added);
        self.converge(env, tokens);
        self.pump(env, tokens);
    }

    /// `POST /calendar/notifications` and `/calendar/lifecycle`: the validation handshake,
    /// else every item checked against its subscription's clientState. The answer is 202
    /// whatever came (forged items are only logged and counted); real ones are put in the
    /// inbox before answering, so a crash loses nothing.
    pub fn on_notification(
        &mut self,
        env: &mut impl Env,
        tokens: &Tokens,
        req: &InboundRequest,
    ) -> HttpResponse {
        if let Some(token) = notif::validation_token(&req.query) {
            return HttpResponse::text(200, &token);
        }
        let accepted = HttpResponse {
            status: 202,
            headers: vec![],
            body: vec![],
        };
        let Some(collection) = notif::parse(&req.body) else {
            self.reject(
                env,
                "unreadable",
                "a calendar notification that is not a collection",
            );
            return accepted;
        };
        for item in collection.items {
            let owner = self
                .subs
                .iter()
                .find(|(_, r)| r.id == item.subscription_id)
                .map(|(u, r)| (u.clone(), r.client_state.clone()));
            let Some((user, secret)) = owner else {
                self.reject(env, "unknown-subscription", &item.subscription_id);
                continue;
            };
            if !notif::same_secret(&item.client_state, &secret) {
                self.reject(env, "client-state", &item.subscription_id);
                continue;
            }
            env.counter_add("calendar_notifications_total", &[], 1);
            match item.lifecycle_event.as_deref() {
                Some("reauthorizationRequired") => self.renew(env, tokens, &user),
                Some("subscriptionRemoved") => {
                    self.subs.remove(&user);
                    env.kv_delete(&sub_key(&user));
                    env.kv_set(&inbox_key(&user), user.as_bytes());
                    self.queue.insert(user);
                    self.converge(env, tokens);
                }
                // `missed`, or a change of an event: read the calendar again.
                _ => {
                    env.kv_set(&inbox_key(&user), user.as_bytes());
                    self.queue.insert(user);
                }
            }
        }
        self.pump(env, tokens);
        accepted
    }

    fn reject(&mut self, env: &mut impl Env, reason: &str, what: &str) {
        env.counter_add(
            "calendar_notifications_rejected_total",
            &[("reason", reason)],
            1,
        );
        env.log(
            Level::Warn,
            target::GRAPH,
            &format!("calendar notification dropped ({reason}): {what}"),
        );
    }

    /// Per subscribed user: when the event subscription expires (ms since the epoch), for the
    /// `graph_subscriptions` gauge (cheap, in memory).
    pub fn subscription_expiries(&self) -> Vec<Option<u64>> {
        self.subs.values().map(|r| Some(r.expiry_ms)).collect()
    }

    /// For `GET /status`: matched users, subscriptions and users with a running event.
    pub fn status(&self, _env: &mut impl Env) -> Value {
        let busy = self
            .in_event
            .iter()
            .filter(|u| self.matched.contains_key(*u))
            .count();
        json!({
            "users": self.matched.len(),
            "subscriptions": self.subs.len(),
            "listed": self.listed,
            "in_event": busy,
        })
    }

    /// Whether a request is for this feature's paths.
    pub fn is_notification(req: &InboundRequest) -> bool {
        req.method == "POST"
            && matches!(
                req.path.trim_end_matches('/'),
                NOTIFICATION_PATH | LIFECYCLE_PATH
            )
    }
}

#[cfg(test)]
mod tests;
