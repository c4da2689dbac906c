//! Keeps one access token per account fresh, sans-IO.
//!
//! An account is an app registration plus how it signs in: a communication user's password
//! (ROPC), device code (MFA-capable, no password stored) or client credentials. The manager
//! starts token requests through [`Env`], schedules a refresh timer
//! [`token::REFRESH_MARGIN_MS`] before expiry, and persists the rotating refresh token
//! **sealed** (via the host's `keys`) under `token/<account>/refresh`, so after a restart it
//! signs in again without the password or the administrator. Transient failures are retried with jittered exponential backoff;
//! configuration errors stop and say what to fix.
//!
//! Timer tags start with [`TIMER_PREFIX`]; the connector hands those timers to
//! [`Tokens::on_timer`] and HTTP completions to [`Tokens::on_response`].

use std::collections::BTreeMap;

use super::aadsts::Action;
use super::token::{self, Client, DeviceAuthorization, Grant, Token, TokenError};
use crate::env::{Env, Level, target};
use crate::event::{HttpError, HttpResponse, RequestId, TimerId};
use crate::store;

/// Tag prefix of the manager's timers.
pub const TIMER_PREFIX: &str = "token:";

/// First retry delay after a transient failure; doubles up to [`MAX_BACKOFF_MS`].
const MIN_BACKOFF_MS: u64 = 5_000;
const MAX_BACKOFF_MS: u64 = 5 * 60_000;

/// How an account signs in. Secrets here come from settings and are never logged.
#[derive(Clone, PartialEq, Eq)]
pub enum SignIn {
    /// ROPC with a communication user's name and password.
    Password {
        /// User principal name.
        username: String,
        /// Password.
        password: String,
    },
    /// Device code: the administrator signs in once; the refresh token carries on.
    DeviceCode,
    /// Client credentials (the client's secret is in [`Client::client_secret`]).
    ClientCredentials,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignIn::Password { username, .. } => {
                write!(
                    f,
                    "Password {{ username: {username:?}, password: <redacted> }}"
                )
            }
            SignIn::DeviceCode => write!(f, "DeviceCode"),
            SignIn::ClientCredentials => write!(f, "ClientCredentials"),
        }
    }
}

/// Where an account stands, for status pages and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// Nothing requested yet.
    Idle,
    /// A token request is running.
    Requesting,
    /// Waiting for the administrator to enter the user code.
    AwaitingDeviceSignIn {
        /// Code to enter.
        user_code: String,
        /// Where to enter it.
        verification_uri: String,
    },
    /// A valid token is held.
    Ready,
    /// Failed; the advice says what to do. Transient failures retry by themselves.
    Failed(TokenError),
}

/// What happened to an account that the connector may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEvent {
    /// A (new) access token is available.
    Ready {
        /// Account name.
        account: String,
    },
    /// Device-code sign-in started: show the code to the administrator.
    DeviceCode {
        /// Account name.
        account: String,
        /// Code to enter.
        user_code: String,
        /// Where.
        verification_uri: String,
        /// Entra's instruction text.
        message: String,
    },
    /// Sign-in failed.
    Failed {
        /// Account name.
        account: String,
        /// Why, with advice.
        error: TokenError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Token,
    DeviceAuthorization,
}

#[derive(Debug)]
struct Account {
    client: Client,
    sign_in: SignIn,
    scope: String,
    token: Option<Token>,
    state: AuthState,
    request: Option<(RequestId, Pending)>,
    timer: Option<TimerId>,
    device: Option<(DeviceAuthorization, u64)>,
    failures: u32,
}

/// Every account's token.
#[derive(Debug, Default)]
pub struct Tokens {
    accounts: BTreeMap<String, Account>,
}

fn refresh_key(account: &str) -> String {
    format!("token/{}/refresh", store::segment(account))
}

impl Tokens {
    /// No accounts.
    pub fn new() -> Self {
        Tokens::default()
    }

    /// Adds or replaces an account (a settings change). Call [`Tokens::start`] afterwards.
    pub fn add(
        &mut self,
        env: &mut impl Env,
        name: &str,
        client: Client,
        sign_in: SignIn,
        scope: &str,
    ) {
        self.remove(env, name);
        self.accounts.insert(
            name.to_string(),
            Account {
                client,
                sign_in,
                scope: scope.to_string(),
                token: None,
                state: AuthState::Idle,
                request: None,
                timer: None,
                device: None,
                failures: 0,
            },
        );
    }

    /// Forgets an account and cancels its work (its stored refresh token stays until
    /// [`Tokens::sign_out`]).
    pub fn remove(&mut self, env: &mut impl Env, name: &str) {
        if let Some(a) = self.accounts.remove(name) {
            if let Some((id, _)) = a.request {
                env.http_cancel(id);
            }
            if let Some(t) = a.timer {
                env.timer_cancel(t);
            }
        }
    }

    /// Deletes the stored refresh token of an account (e.g. the administrator signs it out).
    pub fn sign_out(&mut self, env: &mut impl Env, name: &str) {
        env.kv_delete(&refresh_key(name));
        if let Some(a) = self.accounts.get_mut(name) {
            a.token = None;
            a.state = AuthState::Idle;
        }
    }

    /// The account's state.
    pub fn state(&self, name: &str) -> Option<&AuthState> {
        self.accounts.get(name).map(|a| &a.state)
    }

    /// A usable access token, if one is held and not about to expire.
    pub fn access_token(&self, name: &str, now_ms: u64) -> Option<&str> {
        let t = self.accounts.get(name)?.token.as_ref()?;
        (!t.expired(now_ms)).then_some(t.access_token.as_str())
    }

    /// Obtains a token: from the stored refresh token if there is one, else by the account's
    /// sign-in method. Does nothing while a request is already running.
    pub fn start(&mut self, env: &mut impl Env, name: &str) -> Vec<TokenEvent> {
        let stored = env
            .kv_get(&refresh_key(name))
            .and_then(|sealed| env.unseal(&sealed).ok())
            .and_then(|rt| String::from_utf8(rt).ok());
        let Some(a) = self.accounts.get_mut(name) else {
            return Vec::new();
        };
        if a.request.is_some() {
            return Vec::new();
        }
        if let Some(t) = a.timer.take() {
            env.timer_cancel(t);
        }
        let held = a.token.as_ref().and_then(|t| t.refresh_token.clone());
        let (req, pending) = match (held.or(stored), &a.sign_in) {
            // Client credentials never get a refresh token; a stale one is ignored.
            (_, SignIn::ClientCredentials) => (
                token::token_request(&a.client, &Grant::ClientCredentials { scope: &a.scope }),
                Pending::Token,
            ),
            (Some(rt), _) => (
                token::token_request(
                    &a.client,
                    &Grant::RefreshToken {
                        refresh_token: &rt,
                        scope: &a.scope,
                    },
                ),
                Pending::Token,
            ),
            (None, SignIn::Password { username, password }) => (
                token::token_request(
                    &a.client,
                    &Grant::Password {
                        username,
                        password,
                        scope: &a.scope,
                    },
                ),
                Pending::Token,
            ),
            (None, SignIn::DeviceCode) => (
                token::device_code_request(&a.client, &a.scope),
                Pending::DeviceAuthorization,
            ),
        };
        let id = env.http_start(req);
        a.request = Some((id, pending));
        if !matches!(a.state, AuthState::AwaitingDeviceSignIn { .. }) {
            a.state = AuthState::Requesting;
        }
        Vec::new()
    }

    /// Handles a timer; returns `None` if the tag is not the manager's.
    pub fn on_timer(
        &mut self,
        env: &mut impl Env,
        id: TimerId,
        tag: &str,
    ) -> Option<Vec<TokenEvent>> {
        let rest = tag.strip_prefix(TIMER_PREFIX)?;
        let (kind, name) = rest.split_once(':')?;
        let a = self.accounts.get_mut(name)?;
        if a.timer != Some(id) {
            return Some(Vec::new()); // superseded timer
        }
        a.timer = None;
        match kind {
            "poll" => {
                let Some((device, _)) = &a.device else {
                    return Some(Vec::new());
                };
                let req = token::token_request(
                    &a.client,
                    &Grant::DeviceCode {
                        device_code: &device.device_code,
                    },
                );
                a.request = Some((env.http_start(req), Pending::Token));
                Some(Vec::new())
            }
            _ => Some(self.start(env, name)),
        }
    }

    /// Handles an HTTP completion; returns `None` if the request is not the manager's.
    pub fn on_response(
        &mut self,
        env: &mut impl Env,
        id: RequestId,
        result: &Result<HttpResponse, HttpError>,
    ) -> Option<Vec<TokenEvent>> {
        let (name, pending) = self.accounts.iter().find_map(|(n, a)| {
            a.request
                .filter(|(r, _)| *r == id)
                .map(|(_, p)| (n.clone(), p))
        })?;
        let now = env.now_ms();
        let a = self.accounts.get_mut(&name)?;
        a.request = None;
        let (status, body) = match result {
            Ok(r) => (r.status, r.body.as_slice()),
            Err(e) => {
                let error = TokenError {
                    status: 0,
                    error: "unreachable".into(),
                    codes: vec![],
                    description: format!("{e:?}"),
                    advice: "The sign-in endpoint could not be reached; retrying. Check the \
                             login URL setting and the host's outbound allow-list.",
                    action: Action::Retry,
                };
                return Some(fail(env, &name, a, error));
            }
        };
        if pending == Pending::DeviceAuthorization {
            return Some(match token::parse_device_authorization(status, body) {
                Ok(d) => {
                    let ev = TokenEvent::DeviceCode {
                        account: name.clone(),
                        user_code: d.user_code.clone(),
                        verification_uri: d.verification_uri.clone(),
                        message: d.message.clone(),
                    };
                    a.state = AuthState::AwaitingDeviceSignIn {
                        user_code: d.user_code.clone(),
                        verification_uri: d.verification_uri.clone(),
                    };
                    let interval = d.interval.max(1) * 1000;
                    a.device = Some((d.clone(), now + d.expires_in * 1000));
                    a.timer = Some(env.timer_set(interval, &format!("{TIMER_PREFIX}poll:{name}")));
                    env.log(
                        Level::Info,
                        target::GRAPH,
                        &format!(
                            "account `{name}`: device-code sign-in started, code {}",
                            d.user_code
                        ),
                    );
                    vec![ev]
                }
                Err(e) => fail(env, &name, a, e),
            });
        }
        Some(match token::parse_token(status, body, now) {
            Ok(t) => {
                // Rotation: the newest refresh token replaces the stored one, sealed.
                if let Some(rt) = &t.refresh_token {
                    let sealed = env.seal(rt.as_bytes());
                    env.kv_set(&refresh_key(&name), &sealed);
                }
                let refresh_at = t.refresh_at_ms(now);
                let mut t = t;
                if t.refresh_token.is_none() {
                    // Keep the previous refresh token (Entra always rotates, but be safe).
                    t.refresh_token = a.token.as_ref().and_then(|o| o.refresh_token.clone());
                }
                a.token = Some(t);
                a.device = None;
                a.failures = 0;
                a.state = AuthState::Ready;
                a.timer = Some(env.timer_set(
                    refresh_at.saturating_sub(now),
                    &format!("{TIMER_PREFIX}refresh:{name}"),
                ));
                env.log(
                    Level::Info,
                    target::GRAPH,
                    &format!(
                        "account `{name}`: token obtained, refresh in {} s",
                        refresh_at.saturating_sub(now) / 1000
                    ),
                );
                vec![TokenEvent::Ready { account: name }]
            }
            Err(e) => match e.action {
                Action::KeepPolling | Action::SlowDown if a.device.is_some() => {
                    let (d, expires) = a.device.as_mut()?;
                    if e.action == Action::SlowDown {
                        d.interval += 5;
                    }
                    if now >= *expires {
                        a.device = None;
                        let error = token::parse_error(
                            400,
                            br#"{"error":"expired_token","error_codes":[70019]}"#,
                        );
                        return Some(fail(env, &name, a, error));
                    }
                    a.timer = Some(env.timer_set(
                        d.interval.max(1) * 1000,
                        &format!("{TIMER_PREFIX}poll:{name}"),
                    ));
                    Vec::new()
                }
                _ => {
                    // A refresh token that no longer works is useless: drop it so the next
                    // start uses the account's sign-in method again.
                    let mut had_refresh_token = false;
                    if e.action == Action::SignInAgain {
                        had_refresh_token = env.kv_get(&refresh_key(&name)).is_some()
                            || a.token.as_ref().is_some_and(|t| t.refresh_token.is_some());
                        env.kv_delete(&refresh_key(&name));
                        if let Some(t) = a.token.as_mut() {
                            t.refresh_token = None;
                        }
                        a.device = None;
                    }
                    let events = fail(env, &name, a, e);
                    // A password account can sign in again by itself once its refresh token
                    // is gone (revoked, expired); without this it would stay signed out until
                    // a restart. Device-code accounts need the administrator instead.
                    if had_refresh_token
                        && matches!(a.sign_in, SignIn::Password { .. })
                        && a.timer.is_none()
                    {
                        a.timer = Some(
                            env.timer_set(MIN_BACKOFF_MS, &format!("{TIMER_PREFIX}retry:{name}")),
                        );
                    }
                    events
                }
            },
        })
    }
}

/// Records a failure, logs its advice and schedules a retry when retrying can help.
fn fail(env: &mut impl Env, name: &str, a: &mut Account, error: TokenError) -> Vec<TokenEvent> {
    env.log(
        Level::Warn,
        target::GRAPH,
        &format!("account `{name}`: sign-in failed: {error}"),
    );
    env.counter_add("graph_token_failures_total", &[("account", name)], 1);
    if error.action == Action::Retry {
        a.failures += 1;
        let exp = MIN_BACKOFF_MS.saturating_mul(1 << a.failures.min(10).saturating_sub(1));
        let base = exp.min(MAX_BACKOFF_MS);
        // Up to 25 % jitter, so many accounts do not retry in lockstep.
        let delay = base + env.random_u64() % (base / 4 + 1);
        a.timer = Some(env.timer_set(delay, &format!("{TIMER_PREFIX}retry:{name}")));
    }
    a.state = AuthState::Failed(error.clone());
    vec![TokenEvent::Failed {
        account: name.to_string(),
        error,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::form;
    use crate::graph::token::REFRESH_MARGIN_MS;
    use crate::testenv::TestEnv;

    fn client(secret: Option<&str>) -> Client {
        Client {
            login_base: "https://login.example".into(),
            tenant: "contoso".into(),
            client_id: "cid".into(),
            client_secret: secret.map(str::to_string),
        }
    }

    fn ok(body: &str) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    fn err(status: u16, body: &str) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    fn last_request(env: &TestEnv) -> (RequestId, Vec<(String, String)>) {
        let (id, req) = env.requests.last().unwrap();
        (*id, form::decode(std::str::from_utf8(&req.body).unwrap()))
    }

    fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn password_account(env: &mut TestEnv, t: &mut Tokens) {
        t.add(
            env,
            "teams1",
            client(None),
            SignIn::Password {
                username: "svc@contoso.com".into(),
                password: "P@ss&w+rd%! #<".into(),
            },
            "https://graph.microsoft.com/.default offline_access",
        );
    }

    #[test]
    fn password_sign_in_then_refresh_before_expiry_with_rotation() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        password_account(&mut env, &mut t);
        t.start(&mut env, "teams1");
        let (id, p) = last_request(&env);
        assert_eq!(param(&p, "grant_type"), Some("password"));
        assert_eq!(param(&p, "password"), Some("P@ss&w+rd%! #<"));
        assert_eq!(t.state("teams1"), Some(&AuthState::Requesting));

        let ev = t
            .on_response(
                &mut env,
                id,
                &ok(r#"{"access_token":"AT1","refresh_token":"RT1","expires_in":3600}"#),
            )
            .unwrap();
        assert_eq!(
            ev,
            vec![TokenEvent::Ready {
                account: "teams1".into()
            }]
        );
        assert_eq!(t.access_token("teams1", env.now_ms), Some("AT1"));
        // Stored sealed, never in clear.
        let stored = env.kv.get("token/teams1/refresh").unwrap().clone();
        assert!(!stored.windows(3).any(|w| w == b"RT1"));
        assert_eq!(env.unseal(&stored).unwrap(), b"RT1");
        // Refresh timer 5 minutes before expiry.
        let (&timer, (after, tag)) = env.timers.iter().next().unwrap();
        assert_eq!(*after, 3_600_000 - REFRESH_MARGIN_MS);
        assert_eq!(tag, "token:refresh:teams1");

        env.now_ms += after;
        let tag = tag.clone();
        t.on_timer(&mut env, timer, &tag).unwrap();
        let (id, p) = last_request(&env);
        assert_eq!(param(&p, "grant_type"), Some("refresh_token"));
        assert_eq!(param(&p, "refresh_token"), Some("RT1"));
        assert!(param(&p, "password").is_none());
        t.on_response(
            &mut env,
            id,
            &ok(r#"{"access_token":"AT2","refresh_token":"RT2","expires_in":3600}"#),
        );
        assert_eq!(t.access_token("teams1", env.now_ms), Some("AT2"));
        let stored = env.kv.get("token/teams1/refresh").unwrap().clone();
        assert_eq!(env.unseal(&stored).unwrap(), b"RT2");
    }

    #[test]
    fn restart_signs_in_with_the_stored_refresh_token() {
        let mut env = TestEnv::new();
        let sealed = env.seal(b"RT-stored");
        env.kv.insert("token/teams1/refresh".into(), sealed);
        let mut t = Tokens::new();
        password_account(&mut env, &mut t);
        t.start(&mut env, "teams1");
        let (_, p) = last_request(&env);
        assert_eq!(param(&p, "grant_type"), Some("refresh_token"));
        assert_eq!(param(&p, "refresh_token"), Some("RT-stored"));
    }

    #[test]
    fn revoked_refresh_token_is_dropped_and_password_used_next() {
        let mut env = TestEnv::new();
        let sealed = env.seal(b"RT-old");
        env.kv.insert("token/teams1/refresh".into(), sealed);
        let mut t = Tokens::new();
        password_account(&mut env, &mut t);
        t.start(&mut env, "teams1");
        let (id, _) = last_request(&env);
        let ev = t
            .on_response(
                &mut env,
                id,
                &err(400, r#"{"error":"invalid_grant","error_codes":[70008]}"#),
            )
            .unwrap();
        assert!(matches!(&ev[..], [TokenEvent::Failed { error, .. }] if error.codes == [70008]));
        assert!(!env.kv.contains_key("token/teams1/refresh"));
        // Nobody has to restart anything: a retry timer signs in with the password.
        let (timer, (_, tag)) = env
            .timers
            .iter()
            .find(|(_, (_, tag))| tag.contains("retry:teams1"))
            .map(|(id, t)| (*id, t.clone()))
            .expect("a retry is scheduled after a revoked refresh token");
        t.on_timer(&mut env, timer, &tag).unwrap();
        let (_, p) = last_request(&env);
        assert_eq!(param(&p, "grant_type"), Some("password"));
    }

    #[test]
    fn wrong_password_stops_with_advice_and_no_retry() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        password_account(&mut env, &mut t);
        t.start(&mut env, "teams1");
        let (id, _) = last_request(&env);
        t.on_response(
            &mut env,
            id,
            &err(400, r#"{"error":"invalid_grant","error_description":"AADSTS50126: Error validating credentials."}"#),
        );
        match t.state("teams1") {
            Some(AuthState::Failed(e)) => assert!(e.advice.contains("Wrong user name or password")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            env.timers.is_empty(),
            "configuration errors are not retried"
        );
        assert!(!env.logs.iter().any(|(_, _, m)| m.contains("P@ss")));
    }

    #[test]
    fn transient_failures_back_off_with_jitter() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        t.add(
            &mut env,
            "app",
            client(Some("sec")),
            SignIn::ClientCredentials,
            "https://graph.microsoft.com/.default",
        );
        let mut delays = Vec::new();
        for _ in 0..4 {
            t.start(&mut env, "app");
            let (id, p) = last_request(&env);
            assert_eq!(param(&p, "grant_type"), Some("client_credentials"));
            assert_eq!(param(&p, "client_secret"), Some("sec"));
            t.on_response(&mut env, id, &Err(HttpError::Timeout));
            let (_, (after, tag)) = env.timers.iter().next_back().unwrap();
            assert_eq!(tag, "token:retry:app");
            delays.push(*after);
        }
        for (i, d) in delays.iter().enumerate() {
            let base = MIN_BACKOFF_MS << i;
            assert!(*d >= base && *d <= base + base / 4, "{i}: {d}");
        }
    }

    #[test]
    fn device_code_flow_polls_until_signed_in() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        t.add(
            &mut env,
            "mfa",
            client(None),
            SignIn::DeviceCode,
            "Presence.Read.All offline_access",
        );
        t.start(&mut env, "mfa");
        let (id, _) = last_request(&env);
        assert!(env.requests.last().unwrap().1.url.ends_with("/devicecode"));
        let ev = t
            .on_response(
                &mut env,
                id,
                &ok(r#"{"device_code":"DC","user_code":"FRK7QD4LS","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in..."}"#),
            )
            .unwrap();
        assert!(
            matches!(&ev[..], [TokenEvent::DeviceCode { user_code, .. }] if user_code == "FRK7QD4LS")
        );
        let poll = |env: &mut TestEnv, t: &mut Tokens| {
            let (&timer, (after, tag)) = env.timers.iter().next_back().unwrap();
            let (after, tag) = (*after, tag.clone());
            env.timers.remove(&timer);
            env.now_ms += after;
            t.on_timer(env, timer, &tag).unwrap();
            after
        };
        assert_eq!(poll(&mut env, &mut t), 5000);
        let (id, p) = last_request(&env);
        assert_eq!(param(&p, "device_code"), Some("DC"));
        t.on_response(
            &mut env,
            id,
            &err(
                400,
                r#"{"error":"authorization_pending","error_codes":[70016]}"#,
            ),
        );
        assert!(matches!(
            t.state("mfa"),
            Some(AuthState::AwaitingDeviceSignIn { .. })
        ));
        poll(&mut env, &mut t);
        let (id, _) = last_request(&env);
        t.on_response(&mut env, id, &err(400, r#"{"error":"slow_down"}"#));
        assert_eq!(poll(&mut env, &mut t), 10_000, "slow_down adds 5 s");
        let (id, _) = last_request(&env);
        let ev = t
            .on_response(
                &mut env,
                id,
                &ok(r#"{"access_token":"AT","refresh_token":"RT","expires_in":3600}"#),
            )
            .unwrap();
        assert_eq!(
            ev,
            vec![TokenEvent::Ready {
                account: "mfa".into()
            }]
        );
        assert!(env.kv.contains_key("token/mfa/refresh"));
    }

    #[test]
    fn device_code_expiry_stops_polling() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        t.add(&mut env, "mfa", client(None), SignIn::DeviceCode, "x");
        t.start(&mut env, "mfa");
        let (id, _) = last_request(&env);
        t.on_response(&mut env, id, &ok(r#"{"device_code":"DC","user_code":"U","verification_uri":"v","expires_in":10,"interval":5}"#));
        env.now_ms += 11_000;
        let (&timer, (_, tag)) = env.timers.iter().next_back().unwrap();
        let tag = tag.clone();
        t.on_timer(&mut env, timer, &tag);
        let (id, _) = last_request(&env);
        let ev = t
            .on_response(
                &mut env,
                id,
                &err(400, r#"{"error":"authorization_pending"}"#),
            )
            .unwrap();
        assert!(
            matches!(&ev[..], [TokenEvent::Failed { error, .. }] if error.action == Action::SignInAgain)
        );
    }

    #[test]
    fn foreign_requests_and_timers_are_not_claimed() {
        let mut env = TestEnv::new();
        let mut t = Tokens::new();
        password_account(&mut env, &mut t);
        assert!(
            t.on_response(&mut env, 999, &Err(HttpError::Timeout))
                .is_none()
        );
        assert!(t.on_timer(&mut env, 1, "other").is_none());
        assert_eq!(
            t.on_timer(&mut env, 1, "token:refresh:teams1"),
            Some(vec![])
        );
        assert!(env.requests.is_empty());
        assert!(!format!("{t:?}").contains("P@ss"));
    }
}
