//! Contact search from the Phone App (product.md F4).
//!
//! A `Search` arrives on a user's connection through the `microsoft365-api` App object
//! ([`PbxEvent::Search`]). The searching PBX user is mapped to their Entra user through F1's
//! matches (`match/user/`, which hold only licensed users); their own Outlook contacts (and, if
//! configured, the directory) are read with the contact-search app registration's application
//! token, and the answer is `SearchInfo`* plus exactly one `SearchResult`.
//!
//! Every search is answered, and in time: unlicensed or unmatched users, an empty query or a
//! missing token give an empty result; a deadline timer answers with what is there if Graph is
//! slow, and a throttled or failed call answers empty at once. Identical searches in flight
//! share one Graph call, and answers are cached briefly per user and query. Nothing here waits:
//! presence sync keeps running while any number of searches are out.

pub mod query;

use std::collections::BTreeMap;

use crate::env::{Env, Level, target};
use crate::event::{HttpError, HttpResponse, RequestId, TimerId, WsId};
use crate::graph::api;
use crate::graph::token::{self, Client};
use crate::graph::tokens::{AuthState, SignIn, TokenEvent, Tokens};
use crate::pbx::PbxEvent;
use crate::pbx::search::{send_info, send_result};
use crate::settings::value;
use query::Found;

/// Tag prefix of this feature's own timers (its token timers use the token manager's prefix).
pub const TIMER_PREFIX: &str = "contact-search:";
/// The token account of the contact-search app registration.
pub const ACCOUNT: &str = "contact-search";

/// Cached answers kept at most; the oldest go first.
const CACHE_MAX: usize = 2_000;
/// How long to leave Graph alone after a 429 without `Retry-After`.
const DEFAULT_THROTTLE_MS: u64 = 10_000;
/// Key of the directory in [`ContactSearch`]'s throttling map (mailboxes are keyed by user id).
const DIRECTORY: &str = "";

/// The settings of the feature (`contact-search.*`, see guest/README.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The app registration (confidential client: application permissions).
    pub client: Client,
    /// `<graph resource>/.default`.
    pub scope: String,
    /// Graph base URL.
    pub graph_url: String,
    /// Also search the directory.
    pub directory: bool,
    /// Results per search at most.
    pub max_results: usize,
    /// A search is answered at the latest after this long.
    pub timeout_ms: u64,
    /// How long an answer is reused for the same user and query.
    pub cache_ms: u64,
}

impl Config {
    /// Reads the settings; `None` when the feature is not configured. A partial configuration
    /// is logged, naming what is missing (never the secret).
    pub fn read(env: &mut impl Env) -> Option<Self> {
        let tenant = value(env, "contact-search.tenant");
        let client_id = value(env, "contact-search.client-id");
        let secret = value(env, "contact-search.client-secret");
        let (Some(tenant), Some(client_id), Some(secret)) =
            (tenant.clone(), client_id.clone(), secret.clone())
        else {
            if tenant.is_some() || client_id.is_some() || secret.is_some() {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    "contact search needs contact-search.tenant, contact-search.client-id and contact-search.client-secret; searches answer empty",
                );
            }
            return None;
        };
        let graph_url =
            value(env, "graph.url").unwrap_or_else(|| token::DEFAULT_GRAPH_RESOURCE.into());
        let resource = value(env, "graph.resource").unwrap_or_else(|| graph_url.clone());
        let mut number = |name: &str, default: u64| -> u64 {
            match value(env, name).map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    env.log(
                        Level::Warn,
                        target::CONFIG,
                        &format!("{name} is not a whole number; using {default}"),
                    );
                    default
                }
                None => default,
            }
        };
        let max_results = number("contact-search.max-results", 20).clamp(1, 100) as usize;
        let timeout_ms = number("contact-search.timeout-ms", 3_000).clamp(100, 30_000);
        let cache_ms = number("contact-search.cache-s", 30) * 1000;
        let directory = matches!(
            value(env, "contact-search.directory")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("true" | "1" | "yes")
        );
        Some(Config {
            client: Client {
                login_base: value(env, "graph.login-url")
                    .unwrap_or_else(|| token::DEFAULT_LOGIN_BASE.into()),
                tenant,
                client_id,
                client_secret: Some(secret),
            },
            scope: token::app_scope(&resource),
            graph_url,
            directory,
            max_results,
            timeout_ms,
            cache_ms,
        })
    }
}

/// Who to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiter {
    ws: WsId,
    src: String,
}

/// One Graph search on behalf of one or more identical searches.
#[derive(Debug)]
struct Flight {
    /// (Entra user id, query as typed, trimmed).
    key: (String, String),
    waiters: Vec<Waiter>,
    /// Graph calls still out (and whether each reads the directory); empty before the token
    /// is there.
    requests: Vec<(RequestId, bool)>,
    started: bool,
    found: Vec<Found>,
    failed: bool,
    deadline: TimerId,
}

/// The contact-search feature's state.
#[derive(Debug)]
pub struct ContactSearch {
    cfg: Config,
    tokens: Tokens,
    flights: BTreeMap<u64, Flight>,
    next_flight: u64,
    cache: BTreeMap<(String, String), (u64, Vec<Found>)>,
    /// Until when Graph asked us to leave a mailbox (or the directory) alone: calls made
    /// while throttled would still count against the limit (graph.md §7.2).
    throttled: BTreeMap<String, u64>,
    stats: Stats,
}

/// What `/status` and the admin page show about the searches since the start.
#[derive(Debug, Default)]
struct Stats {
    answered: u64,
    with_results: u64,
    last_ms: Option<u64>,
}

impl ContactSearch {
    /// The feature with `cfg`; call [`ContactSearch::start`] to get its token.
    pub fn new(cfg: Config) -> Self {
        ContactSearch {
            cfg,
            tokens: Tokens::new(),
            flights: BTreeMap::new(),
            next_flight: 1,
            cache: BTreeMap::new(),
            throttled: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    /// The feature's state for `/status`: sign-in, searches answered (and how many found
    /// something), the last search, mailboxes Graph asked us to leave alone for now.
    pub fn status(&self, now_ms: u64) -> serde_json::Value {
        let sign_in = match self.tokens.state(ACCOUNT) {
            Some(AuthState::Ready) => "ready".to_string(),
            Some(AuthState::Failed(e)) => format!("failed: {e}"),
            Some(_) | None => "signing in".to_string(),
        };
        serde_json::json!({
            "sign_in": sign_in,
            "searches_answered": self.stats.answered,
            "searches_with_results": self.stats.with_results,
            "last_search_s_ago": self.stats.last_ms.map(|t| now_ms.saturating_sub(t) / 1000),
            "throttled_mailboxes": self.throttled.values().filter(|u| **u > now_ms).count(),
        })
    }

    /// Requests the application token.
    pub fn start(&mut self, env: &mut impl Env) {
        self.tokens.add(
            env,
            ACCOUNT,
            self.cfg.client.clone(),
            SignIn::ClientCredentials,
            &self.cfg.scope,
        );
        let events = self.tokens.start(env, ACCOUNT);
        self.on_token_events(env, events);
    }

    /// Answers every search still out (empty) and drops the feature's requests and timers,
    /// e.g. before the settings are read again: the Phone App must not wait in vain.
    pub fn stop(&mut self, env: &mut impl Env) {
        let ids: Vec<u64> = self.flights.keys().copied().collect();
        for id in ids {
            if let Some(f) = self.flights.get_mut(&id) {
                f.failed = true;
                for (r, _) in f.requests.drain(..) {
                    env.http_cancel(r);
                }
            }
            self.finish(env, id);
        }
        self.tokens.remove(env, ACCOUNT);
    }

    /// Whether the application token is held (for status pages and tests).
    pub fn ready(&self, now_ms: u64) -> bool {
        self.tokens.access_token(ACCOUNT, now_ms).is_some()
    }

    /// Handles a PBX event; only searches concern this feature.
    pub fn on_pbx(&mut self, env: &mut impl Env, ev: &PbxEvent) {
        if let PbxEvent::Search {
            ws,
            src,
            query,
            kind,
            guid,
            sip,
            unlicensed,
        } = ev
        {
            let waiter = Waiter {
                ws: *ws,
                src: src.clone(),
            };
            self.search(env, waiter, query, kind.as_deref(), guid, sip, *unlicensed);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        env: &mut impl Env,
        waiter: Waiter,
        query: &str,
        kind: Option<&str>,
        guid: &str,
        sip: &str,
        unlicensed: bool,
    ) {
        env.counter_add("contact_searches_total", &[], 1);
        let query = query.trim();
        let why_empty = if kind.is_some_and(|k| k != "contact") {
            Some("not a contact search")
        } else if query::words(query).is_empty() {
            Some("empty query")
        } else if unlicensed || crate::pbx::licence::get(env, guid) == Some(false) {
            Some("user not licensed")
        } else {
            None
        };
        let entra = match why_empty {
            Some(_) => None,
            None => entra_id(env, guid),
        };
        let Some(entra) = entra else {
            let why = why_empty.unwrap_or("user not matched to a Microsoft 365 user");
            env.log(
                Level::Debug,
                target::APP,
                &format!("search by `{sip}` answered empty: {why}"),
            );
            answer(env, &mut self.stats, &[waiter], &[]);
            return;
        };
        let key = (entra, query.to_string());
        let now = env.now_ms();
        if let Some((at, found)) = self.cache.get(&key)
            && now.saturating_sub(*at) < self.cfg.cache_ms
        {
            env.counter_add("contact_search_cache_hits_total", &[], 1);
            answer(env, &mut self.stats, &[waiter], found);
            return;
        }
        if self.throttled.get(&key.0).is_some_and(|until| now < *until) {
            env.counter_add("contact_search_throttled_total", &[], 1);
            answer(env, &mut self.stats, &[waiter], &[]);
            return;
        }
        // The same user searching the same again while Graph is still busy: join that call.
        if let Some(f) = self.flights.values_mut().find(|f| f.key == key) {
            f.waiters.push(waiter);
            return;
        }
        if matches!(self.tokens.state(ACCOUNT), Some(AuthState::Failed(_))) {
            // Sign-in failed (and was logged): answer now rather than at the deadline.
            answer(env, &mut self.stats, &[waiter], &[]);
            return;
        }
        let id = self.next_flight;
        self.next_flight += 1;
        let deadline = env.timer_set(self.cfg.timeout_ms, &format!("{TIMER_PREFIX}deadline:{id}"));
        self.flights.insert(
            id,
            Flight {
                key,
                waiters: vec![waiter],
                requests: Vec::new(),
                started: false,
                found: Vec::new(),
                failed: false,
                deadline,
            },
        );
        self.launch(env, id);
    }

    /// Starts the Graph calls of flight `id` if the token is there (else the token's arrival
    /// or the deadline will).
    fn launch(&mut self, env: &mut impl Env, id: u64) {
        let now = env.now_ms();
        let Some(tok) = self.tokens.access_token(ACCOUNT, now).map(str::to_string) else {
            return;
        };
        let Some(f) = self.flights.get_mut(&id) else {
            return;
        };
        if f.started {
            return;
        }
        f.started = true;
        let word = query::words(&f.key.1)
            .into_iter()
            .next()
            .unwrap_or_default();
        let timeout = self.cfg.timeout_ms as u32;
        let contacts = query::contacts_request(&self.cfg.graph_url, &tok, &f.key.0, &word, timeout);
        f.requests.push((env.http_start(contacts), false));
        let directory_throttled = self.throttled.get(DIRECTORY).is_some_and(|u| now < *u);
        if self.cfg.directory
            && !directory_throttled
            && let Some(r) = query::directory_request(&self.cfg.graph_url, &tok, &word, timeout)
        {
            f.requests.push((env.http_start(r), true));
        }
    }

    fn on_token_events(&mut self, env: &mut impl Env, events: Vec<TokenEvent>) {
        for ev in events {
            match ev {
                TokenEvent::Ready { .. } => {
                    let waiting: Vec<u64> = self
                        .flights
                        .iter()
                        .filter(|(_, f)| !f.started)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in waiting {
                        self.launch(env, id);
                    }
                }
                TokenEvent::Failed { error, .. } => {
                    env.log(
                        Level::Error,
                        target::GRAPH,
                        &format!("contact search cannot sign in: {error}"),
                    );
                    // Searches waiting for the token need not wait for their deadline.
                    let waiting: Vec<u64> = self
                        .flights
                        .iter()
                        .filter(|(_, f)| !f.started)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in waiting {
                        if let Some(f) = self.flights.get_mut(&id) {
                            f.failed = true;
                        }
                        self.finish(env, id);
                    }
                }
                TokenEvent::DeviceCode { .. } => {}
            }
        }
    }

    /// Handles an HTTP completion; `false` if it is not this feature's.
    pub fn on_response(
        &mut self,
        env: &mut impl Env,
        id: RequestId,
        result: &Result<HttpResponse, HttpError>,
    ) -> bool {
        if let Some(events) = self.tokens.on_response(env, id, result) {
            self.on_token_events(env, events);
            return true;
        }
        let Some((&fid, f)) = self
            .flights
            .iter_mut()
            .find(|(_, f)| f.requests.iter().any(|r| r.0 == id))
        else {
            return false;
        };
        let directory = f.requests.contains(&(id, true));
        f.requests.retain(|r| r.0 != id);
        let outcome = match result {
            Err(e) => Err((format!("{e:?}"), None)),
            Ok(r) => api::check(r).map_err(|e| {
                let wait = e
                    .retry_after_ms
                    .or((e.status == 429).then_some(DEFAULT_THROTTLE_MS));
                (e.to_string(), wait)
            }),
        };
        match outcome {
            Ok(resp) => {
                let body = query::values(&resp.body);
                let parse = if directory {
                    query::from_user
                } else {
                    query::from_contact
                };
                f.found.extend(body.iter().map(parse));
            }
            Err((e, wait)) => {
                if let Some(ms) = wait {
                    let key = if directory {
                        DIRECTORY
                    } else {
                        f.key.0.as_str()
                    };
                    let now = env.now_ms();
                    self.throttled.retain(|_, until| *until > now);
                    self.throttled.insert(key.to_string(), now + ms);
                }
                f.failed = true;
                env.counter_add("contact_search_graph_errors_total", &[], 1);
                env.log(
                    Level::Warn,
                    target::GRAPH,
                    &format!("contact search: {e}; answering without those results"),
                );
            }
        }
        if f.requests.is_empty() {
            self.finish(env, fid);
        }
        true
    }

    /// Handles a timer; `false` if it is not this feature's.
    pub fn on_timer(&mut self, env: &mut impl Env, id: TimerId, tag: &str) -> bool {
        if let Some(events) = self.tokens.on_timer(env, id, tag) {
            self.on_token_events(env, events);
            return true;
        }
        let Some(rest) = tag.strip_prefix(TIMER_PREFIX) else {
            return false;
        };
        let fid = rest
            .strip_prefix("deadline:")
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(f) = fid.and_then(|fid| self.flights.get_mut(&fid)) {
            if f.deadline != id {
                return true;
            }
            env.log(
                Level::Warn,
                target::GRAPH,
                &format!(
                    "contact search: no answer from {} within {} ms; answering with what is there",
                    if f.started {
                        "Graph"
                    } else {
                        "the token endpoint"
                    },
                    self.cfg.timeout_ms
                ),
            );
            env.counter_add("contact_search_timeouts_total", &[], 1);
            for (r, _) in f.requests.drain(..) {
                env.http_cancel(r);
            }
            f.failed = true;
            self.finish(env, fid.unwrap_or_default());
        }
        true
    }

    /// Answers every waiter of flight `id`; caches the answer if nothing failed.
    fn finish(&mut self, env: &mut impl Env, id: u64) {
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        env.timer_cancel(f.deadline);
        let found = query::select(f.found, &f.key.1, self.cfg.max_results);
        answer(env, &mut self.stats, &f.waiters, &found);
        if !f.failed {
            if self.cache.len() >= CACHE_MAX {
                let now = env.now_ms();
                let ttl = self.cfg.cache_ms;
                self.cache
                    .retain(|_, (at, _)| now.saturating_sub(*at) < ttl);
                if self.cache.len() >= CACHE_MAX
                    && let Some(oldest) = self
                        .cache
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(k, _)| k.clone())
                {
                    self.cache.remove(&oldest);
                }
            }
            self.cache.insert(f.key, (env.now_ms(), found));
        }
    }
}

/// The Entra id of PBX user `guid`, from F1's matches (which hold licensed users only).
fn entra_id(env: &mut impl Env, guid: &str) -> Option<String> {
    crate::matching::load(env)
        .into_values()
        .find(|m| m.guid == guid)
        .map(|m| m.id)
}

/// Sends `found` and the closing `SearchResult` to every waiter.
fn answer(env: &mut impl Env, stats: &mut Stats, waiters: &[Waiter], found: &[Found]) {
    stats.answered += waiters.len() as u64;
    if !found.is_empty() {
        stats.with_results += waiters.len() as u64;
    }
    stats.last_ms = Some(env.now_ms());
    for w in waiters {
        for f in found {
            send_info(env, w.ws, &w.src, &f.dn, &f.contact());
        }
        send_result(env, w.ws, &w.src);
    }
}

#[cfg(test)]
mod tests;
