//! The live log and the trace switches of the admin page.
//!
//! [`LogTap`] wraps the host for the length of one event: every line the guest logs at `info`
//! or above is also kept in a small in-memory ring the page reads, and for a target whose trace
//! switch is on, `debug` and `trace` lines are written too (as `info`, marked `[trace]`), so
//! an administrator can switch detail on and off at run time without touching the host.
//! The switches are kept in KV (`admin/trace/<target>`) and survive restarts.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use crate::env::{Env, KeyError, Level, OaepHash, Page, PublicKey};
use crate::event::{Header, HttpRequest, HttpResponse, RequestId, TimerId, WsFrame, WsId};

/// The App Platform's trace switches: label on the page and the guest log target it controls.
pub const SWITCHES: &[(&str, &str)] = &[
    ("App", "app"),
    ("Database", "database"),
    ("HTTP client", "graph"),
    ("TLS", "tls"),
    ("TCP", "tcp"),
    ("App WebSocket", "app-websocket"),
    ("Config", "config"),
    ("Webserver", "webserver"),
];

/// Switches for what only the host sees (TLS handshakes, TCP connections): the guest cannot
/// change the host's log filter through its contract, so the page shows how to set them there.
pub const HOST_ONLY: &[&str] = &["tls", "tcp"];

/// KV prefix of switched-on targets.
const TRACE_PREFIX: &str = "admin/trace/";
/// Lines kept for the page.
const RING: usize = 500;

/// One logged line as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Increasing number; the page asks for lines after the last one it has.
    pub seq: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'static str,
    /// Log target.
    pub target: String,
    /// The message (the guest never logs secrets).
    pub message: String,
}

#[derive(Default)]
struct State {
    /// `None` until read from KV in this guest instance.
    on: Option<BTreeSet<String>>,
    lines: VecDeque<Line>,
    seq: u64,
}

thread_local! {
    // Guest memory lives as long as the instance; a hot swap starts a fresh ring.
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Lines after `after`, oldest first.
pub fn lines_after(after: u64) -> Vec<Line> {
    STATE.with(|s| {
        s.borrow()
            .lines
            .iter()
            .filter(|l| l.seq > after)
            .cloned()
            .collect()
    })
}

/// Every switch with its state.
pub fn switches(env: &mut impl Env) -> Vec<(&'static str, &'static str, bool)> {
    let on = switched_on(env);
    SWITCHES
        .iter()
        .map(|(label, t)| (*label, *t, on.contains(*t)))
        .collect()
}

/// Turns a target's switch on or off; `false` for an unknown target.
pub fn set_switch(env: &mut impl Env, target: &str, on: bool) -> bool {
    if !SWITCHES.iter().any(|(_, t)| *t == target) {
        return false;
    }
    let key = format!("{TRACE_PREFIX}{target}");
    if on {
        env.kv_set(&key, b"on");
    } else {
        env.kv_delete(&key);
    }
    let set = switched_on(env);
    STATE.with(|s| {
        let mut set = set;
        if on {
            set.insert(target.to_string());
        } else {
            set.remove(target);
        }
        s.borrow_mut().on = Some(set);
    });
    true
}

/// Whether `target`'s switch is on, without copying the set (asked for every KV operation).
fn is_on(env: &mut impl Env, target: &str) -> bool {
    let known = STATE.with(|s| s.borrow().on.as_ref().map(|on| on.contains(target)));
    known.unwrap_or_else(|| switched_on(env).contains(target))
}

fn switched_on(env: &mut impl Env) -> BTreeSet<String> {
    if let Some(on) = STATE.with(|s| s.borrow().on.clone()) {
        return on;
    }
    let page = env.kv_scan(TRACE_PREFIX, None, 100);
    let on: BTreeSet<String> = page
        .entries
        .iter()
        .map(|(k, _)| k.trim_start_matches(TRACE_PREFIX).to_string())
        .collect();
    STATE.with(|s| s.borrow_mut().on = Some(on.clone()));
    on
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// The host, with the live log and the trace switches in front of its `log`.
pub struct LogTap<'a, E: Env>(pub &'a mut E);

impl<E: Env> LogTap<'_, E> {
    fn traced(&mut self, level: Level, target: &str) -> bool {
        level < Level::Info && is_on(self.0, target)
    }

    /// A trace line about a host call, built only when the target's switch is on. Keys, URLs
    /// and sizes only: values and bodies may hold secrets.
    fn trace(&mut self, target: &str, line: impl FnOnce() -> String) {
        if is_on(self.0, target) {
            let message = line();
            self.log(Level::Trace, target, &message);
        }
    }
}

impl<E: Env> Env for LogTap<'_, E> {
    fn log(&mut self, level: Level, target: &str, message: &str) {
        let traced = self.traced(level, target);
        if level >= Level::Info || traced {
            let at_ms = self.0.now_ms();
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.seq += 1;
                let seq = s.seq;
                if s.lines.len() == RING {
                    s.lines.pop_front();
                }
                s.lines.push_back(Line {
                    seq,
                    at_ms,
                    level: level_name(level),
                    target: target.to_string(),
                    message: message.to_string(),
                });
            });
        }
        if traced && !self.0.log_enabled(level, target) {
            self.0
                .log(Level::Info, target, &format!("[trace] {message}"));
        } else {
            self.0.log(level, target, message);
        }
    }
    fn log_enabled(&mut self, level: Level, target: &str) -> bool {
        self.traced(level, target) || self.0.log_enabled(level, target)
    }
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn random_u64(&mut self) -> u64 {
        self.0.random_u64()
    }
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.kv_get(key)
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) {
        self.trace("database", || format!("set {key} ({} bytes)", value.len()));
        self.0.kv_set(key, value)
    }
    fn kv_delete(&mut self, key: &str) {
        self.trace("database", || format!("delete {key}"));
        self.0.kv_delete(key)
    }
    fn kv_cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
        self.0.kv_cas(key, expected, new)
    }
    fn kv_scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Page {
        self.trace("database", || format!("scan {prefix}* (at most {limit})"));
        self.0.kv_scan(prefix, cursor, limit)
    }
    fn http_start(&mut self, req: HttpRequest) -> RequestId {
        // The URL without its query: search terms are the users' business.
        let url = req.url.split('?').next().unwrap_or("").to_string();
        let method = req.method.clone();
        let id = self.0.http_start(req);
        self.trace("graph", || format!("request {id}: {method} {url}"));
        id
    }
    fn http_cancel(&mut self, id: RequestId) {
        self.0.http_cancel(id)
    }
    fn respond(&mut self, id: u64, resp: HttpResponse) -> bool {
        let (status, len) = (resp.status, resp.body.len());
        self.trace("webserver", || {
            format!("answer to request {id}: {status}, {len} bytes")
        });
        self.0.respond(id, resp)
    }
    fn ws_connect(&mut self, url: &str, headers: &[Header]) -> WsId {
        self.0.ws_connect(url, headers)
    }
    fn ws_send(&mut self, id: WsId, frame: WsFrame) -> bool {
        if let WsFrame::Text(text) = &frame {
            // The message type only: frames carry user data.
            let mt = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v["mt"].as_str().map(str::to_string))
                .unwrap_or_default();
            self.trace("app-websocket", || {
                format!("send on {id}: {mt} ({} bytes)", text.len())
            });
        }
        self.0.ws_send(id, frame)
    }
    fn ws_close(&mut self, id: WsId, code: u16, reason: &str) {
        self.0.ws_close(id, code, reason)
    }
    fn timer_set(&mut self, after_ms: u64, tag: &str) -> TimerId {
        self.0.timer_set(after_ms, tag)
    }
    fn timer_cancel(&mut self, id: TimerId) {
        self.0.timer_cancel(id)
    }
    fn key_generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError> {
        self.0.key_generate_rsa(name, bits)
    }
    fn key_exists(&mut self, name: &str) -> bool {
        self.0.key_exists(name)
    }
    fn key_delete(&mut self, name: &str) {
        self.0.key_delete(name)
    }
    fn key_public_der(&mut self, name: &str) -> Result<Vec<u8>, KeyError> {
        self.0.key_public_der(name)
    }
    fn key_self_signed_certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError> {
        self.0.key_self_signed_certificate(name, common_name, days)
    }
    fn key_rsa_oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        self.0.key_rsa_oaep_decrypt(name, hash, ciphertexts)
    }
    fn key_sign_rs256(&mut self, name: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.0.key_sign_rs256(name, data)
    }
    fn key_verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool {
        self.0.key_verify_rs256(key, data, signature)
    }
    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(plaintext)
    }
    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.0.unseal(sealed)
    }
    fn config_get(&mut self, name: &str) -> Option<String> {
        self.0.config_get(name)
    }
    fn config_all(&mut self) -> Vec<(String, String)> {
        self.0.config_all()
    }
    fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], delta: u64) {
        self.0.counter_add(name, labels, delta)
    }
    fn gauge_set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.gauge_set(name, labels, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn lines_are_kept_and_switched_targets_traced() {
        let mut env = TestEnv::new();
        let mut tap = LogTap(&mut env);
        tap.log(Level::Info, "app", "hello");
        tap.log(Level::Debug, "config", "detail hidden");
        assert!(set_switch(&mut tap, "config", true));
        assert!(tap.log_enabled(Level::Trace, "config"));
        tap.log(Level::Debug, "config", "detail shown");
        assert!(!set_switch(&mut tap, "nonsense", true));
        let lines: Vec<String> = lines_after(0).into_iter().map(|l| l.message).collect();
        assert_eq!(lines, vec!["hello", "detail shown"]);
        assert!(env.kv.contains_key("admin/trace/config"));
        let mut tap = LogTap(&mut env);
        tap.kv_set("quiet", b"x");
        assert!(set_switch(&mut tap, "database", true));
        tap.kv_set("some/key", b"secret value");
        let lines: Vec<String> = lines_after(0).into_iter().map(|l| l.message).collect();
        assert!(
            lines.contains(&"set some/key (12 bytes)".to_string()),
            "{lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("quiet") || l.contains("secret value"))
        );
        assert!(env.logged("[trace] detail shown") || env.logged("detail shown"));
    }
}
