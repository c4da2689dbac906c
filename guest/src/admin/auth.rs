//! Admin login: the instance password proven with an AppLogin digest computed in the browser
//! (innovaphone.md §2.3, the form without `info`: `app:domain:sip:guid:dn:challenge:password`
//! with empty `sip`, `guid` and `dn`), so the password never crosses the wire.
//!
//! Challenges, sessions and failure counts live in KV, so a hot swap or a restart keeps the
//! administrator signed in. A session is a random cookie (`HttpOnly; SameSite=Strict`) plus a
//! CSRF token the page sends as `x-csrf-token` on every change; only the SHA-256 of the cookie
//! is stored. Failed logins from one address are slowed down (doubling waits after a few).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env::{Env, Level, target};
use crate::event::{InboundRequest, header};
use crate::pbx::login;
use crate::settings::{self, Settings};
use crate::store;

/// Name of the session cookie.
pub const COOKIE: &str = "m365admin";
/// Header carrying the CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// KV prefix of open challenges (`admin/challenge/<challenge>` = expiry ms).
const CHALLENGE_PREFIX: &str = "admin/challenge/";
/// KV prefix of sessions (`admin/session/<sha256 of the cookie>`).
const SESSION_PREFIX: &str = "admin/session/";
/// KV prefix of failed-login counts per client address.
const THROTTLE_PREFIX: &str = "admin/throttle/";
/// A challenge must be used within this time.
const CHALLENGE_MS: u64 = 120_000;
/// Failed logins allowed before waits start.
const FREE_FAILURES: u32 = 3;
/// Longest wait imposed after failed logins.
const MAX_WAIT_MS: u64 = 300_000;
/// Default idle time after which a session ends (`admin.session-timeout-s`).
const DEFAULT_SESSION_S: u64 = 1800;

/// One signed-in administrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Token the page must send in [`CSRF_HEADER`] with every change.
    pub csrf: String,
    /// When the session ends unless used before (ms since the epoch).
    pub expires_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Throttle {
    failures: u32,
    until_ms: u64,
}

/// At most this many logins may be in progress (challenges issued, not used, not expired), so
/// a flood of challenge requests cannot fill the store.
const MAX_OPEN_CHALLENGES: usize = 100;

/// What the page needs to compute the digest: the challenge and the names hashed with it;
/// `None` when too many logins are in progress.
pub fn challenge(env: &mut impl Env) -> Option<serde_json::Value> {
    let now = env.now_ms();
    let mut open = 0;
    // Forget challenges nobody used, so the prefix stays small.
    for key in store::keys(env, CHALLENGE_PREFIX) {
        if store::get_u64(env, &key).is_none_or(|exp| exp < now) {
            env.kv_delete(&key);
        } else {
            open += 1;
        }
    }
    if open >= MAX_OPEN_CHALLENGES {
        return None;
    }
    let challenge = login::new_challenge(env.random_u64());
    store::set_u64(
        env,
        &format!("{CHALLENGE_PREFIX}{challenge}"),
        now + CHALLENGE_MS,
    );
    let s = Settings::read(env);
    Some(serde_json::json!({"challenge": challenge, "app": s.instance, "domain": s.domain}))
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong password, unknown or expired challenge, or no instance password configured.
    Refused(&'static str),
    /// Too many failures from this address: wait this many seconds.
    Wait(u64),
}

/// A successful login: the cookie value (given to the browser only) and the session.
pub struct LoggedIn {
    /// Cookie value.
    pub token: String,
    /// The new session.
    pub session: Session,
}

/// Checks a login attempt `{"challenge","digest"}` from `peer`.
pub fn login(env: &mut impl Env, peer: &str, body: &[u8]) -> Result<LoggedIn, LoginError> {
    let now = env.now_ms();
    let throttle_key = format!("{THROTTLE_PREFIX}{}", store::segment(peer_address(peer)));
    let mut throttle: Throttle = store::get_json(env, &throttle_key).unwrap_or_default();
    if throttle.until_ms > now {
        return Err(LoginError::Wait((throttle.until_ms - now).div_ceil(1000)));
    }
    let attempt: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| {
        attempt
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (challenge, digest) = (field("challenge"), field("digest"));
    let challenge_key = format!("{CHALLENGE_PREFIX}{}", store::segment(&challenge));
    let valid_challenge =
        !challenge.is_empty() && store::get_u64(env, &challenge_key).is_some_and(|exp| exp >= now);
    // One use only: a captured digest cannot be replayed.
    env.kv_delete(&challenge_key);
    if !valid_challenge {
        return Err(LoginError::Refused("The login expired; please try again."));
    }
    let Some(password) = Settings::instance_password(env) else {
        return Err(LoginError::Refused(
            "No instance password is configured (instance.password); the admin page is locked.",
        ));
    };
    let s = Settings::read(env);
    let user = field("sip");
    let proven = if user.is_empty() {
        let expected = login::digest(
            &s.instance,
            &s.domain,
            "",
            "",
            "",
            None,
            &challenge,
            &password,
        );
        constant_time_eq(expected.as_bytes(), digest.to_ascii_lowercase().as_bytes())
    } else {
        myapps_login_valid(env, body, &s.domain, &challenge, &password)
    };
    if !proven {
        throttle.failures += 1;
        if throttle.failures > FREE_FAILURES {
            let wait = 1000u64 << (throttle.failures - FREE_FAILURES - 1).min(16);
            throttle.until_ms = now + wait.min(MAX_WAIT_MS);
        }
        store::set_json(env, &throttle_key, &throttle);
        env.log(
            Level::Warn,
            target::APP,
            &format!(
                "admin login from {} refused: wrong password ({} failures)",
                peer_address(peer),
                throttle.failures
            ),
        );
        return Err(LoginError::Refused("Wrong password."));
    }
    env.kv_delete(&throttle_key);
    let token = format!("{:016x}{:016x}", env.random_u64(), env.random_u64());
    let session = Session {
        csrf: format!("{:016x}{:016x}", env.random_u64(), env.random_u64()),
        expires_ms: now + session_ms(env),
    };
    store::set_json(env, &session_key(&token), &session);
    let who = if user.is_empty() {
        "the instance password".to_string()
    } else {
        format!("myApps user {user}")
    };
    env.log(
        Level::Info,
        target::APP,
        &format!("admin login from {} with {who}", peer_address(peer)),
    );
    Ok(LoggedIn { token, session })
}

/// A myApps user login relayed by the PBX (innovaphone.md §2.3, the digest over the raw `info`
/// with the App object's password): valid only for users of the App object named in
/// `admin.app-object` (unset: no myApps logins, since every synced user has the connector's own
/// App object) and for this instance's domain.
fn myapps_login_valid(
    env: &mut impl Env,
    body: &[u8],
    domain: &str,
    challenge: &str,
    password: &str,
) -> bool {
    let Some(admin_object) = settings::value(env, "admin.app-object") else {
        return false;
    };
    let Ok(attempt) = serde_json::from_slice::<login::AppLogin>(body) else {
        return false;
    };
    attempt.pbx_obj.is_some()
        && attempt.info().appobj.as_deref() == Some(admin_object.as_str())
        && (domain.is_empty() || attempt.domain == domain)
        && attempt.verify(challenge, password)
}

/// The session of a request, extended by its use; `None` when absent or expired. Changes
/// (anything but GET and HEAD) also need the session's CSRF token.
pub fn session(env: &mut impl Env, req: &InboundRequest) -> Option<Session> {
    let token = cookie(req)?;
    let key = session_key(&token);
    let mut session: Session = store::get_json(env, &key)?;
    let now = env.now_ms();
    if session.expires_ms < now {
        env.kv_delete(&key);
        return None;
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        let sent = header(&req.headers, CSRF_HEADER).unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return None;
        }
    }
    session.expires_ms = now + session_ms(env);
    store::set_json(env, &key, &session);
    Some(session)
}

/// Ends the request's session.
pub fn logout(env: &mut impl Env, req: &InboundRequest) {
    if let Some(token) = cookie(req) {
        env.kv_delete(&session_key(&token));
    }
}

/// The `set-cookie` value for a session (or, with `None`, one that deletes it). `Secure` when
/// the browser came over HTTPS (its `Origin`, or a proxy's `x-forwarded-proto`), so the cookie
/// never travels in clear once the page is served over TLS.
pub fn set_cookie(env: &mut impl Env, req: &InboundRequest, token: Option<&str>) -> String {
    let s = Settings::read(env);
    let path = format!("/{}/{}/admin", s.domain, s.instance);
    let https = header(&req.headers, "origin").is_some_and(|o| o.starts_with("https://"))
        || header(&req.headers, "x-forwarded-proto") == Some("https");
    let secure = if https { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            session_ms(env) / 1000
        ),
        None => format!("{COOKIE}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

fn session_ms(env: &mut impl Env) -> u64 {
    settings::value(env, "admin.session-timeout-s")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_SESSION_S)
        * 1000
}

fn session_key(token: &str) -> String {
    format!(
        "{SESSION_PREFIX}{}",
        login::hex(&Sha256::digest(token.as_bytes()))
    )
}

fn cookie(req: &InboundRequest) -> Option<String> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// `1.2.3.4:5678` -> `1.2.3.4`, `[::1]:80` -> `[::1]`.
fn peer_address(peer: &str) -> &str {
    peer.rsplit_once(':').map(|(a, _)| a).unwrap_or(peer)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
