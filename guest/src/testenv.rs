//! `TestEnv`: an in-memory [`Env`] for native tests and benchmarks. It stores KV in a
//! `BTreeMap`, serves settings from a map, and records every effect (requests started,
//! responses, frames sent, closes, timers, logs, metrics) so tests can drive the core with
//! events and assert what it did.
//!
//! RSA operations are not available here (they fail with `KeyError::Failed`) unless a test
//! plugs in a [`TestCrypto`]; `seal` is a reversible tagged transform so that tests can tell
//! sealed from plain bytes.

use std::collections::{BTreeMap, VecDeque};

use crate::env::{Env, KeyError, Level, OaepHash, Page, PublicKey};
use crate::event::{Header, HttpRequest, HttpResponse, RequestId, TimerId, WsFrame, WsId};

const SEAL_TAG: &[u8] = b"sealed:";

/// Real key operations a test can plug into [`TestEnv::crypto`] (e.g. built on the `rsa`
/// crate), so that rich notifications run end to end without a host.
pub trait TestCrypto: std::fmt::Debug {
    /// `keys.generate-rsa`.
    fn generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError>;
    /// `keys.exists`.
    fn exists(&mut self, name: &str) -> bool;
    /// `keys.self-signed-certificate` (DER).
    fn certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError>;
    /// `keys.rsa-oaep-decrypt`.
    fn oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError>;
    /// `keys.verify-rs256`.
    fn verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool;
}

/// The in-memory test host.
#[derive(Debug, Default)]
pub struct TestEnv {
    /// Wall clock returned by `now_ms`; tests move it forward.
    pub now_ms: u64,
    /// xorshift state for `random_u64` (deterministic per seed).
    pub rng: u64,
    /// Values `random_u64` returns first, in order (to replay captured challenges).
    pub random_queue: VecDeque<u64>,
    /// The KV store.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Instance settings (`config`).
    pub config: BTreeMap<String, String>,
    /// Outgoing HTTP requests started, with their ids.
    pub requests: Vec<(RequestId, HttpRequest)>,
    /// Cancelled request ids.
    pub cancelled_requests: Vec<RequestId>,
    /// Answers to inbound requests.
    pub responses: Vec<(u64, HttpResponse)>,
    /// Frames queued per connection, in order.
    pub sent: Vec<(WsId, WsFrame)>,
    /// Connections closed by the guest: id, code, reason.
    pub closed: Vec<(WsId, u16, String)>,
    /// Outbound WebSocket dials: id, url.
    pub connects: Vec<(WsId, String)>,
    /// Live timers: id -> (after_ms, tag).
    pub timers: BTreeMap<TimerId, (u64, String)>,
    /// Log lines: level, target, message.
    pub logs: Vec<(Level, String, String)>,
    /// Counter values keyed by `name{labels}`.
    pub counters: BTreeMap<String, u64>,
    /// Gauge values keyed by `name{labels}`.
    pub gauges: BTreeMap<String, f64>,
    /// Key operations, when a test provides them.
    pub crypto: Option<Box<dyn TestCrypto>>,
    next_id: u64,
}

impl TestEnv {
    /// A fresh environment with the instance settings every host provides.
    pub fn new() -> Self {
        let mut env = TestEnv {
            now_ms: 1_700_000_000_000,
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Default::default()
        };
        env.set_config("instance.name", "m365");
        env.set_config("instance.domain", "example.com");
        env.set_config("instance.password", "pwd");
        env
    }

    /// Sets one setting.
    pub fn set_config(&mut self, name: &str, value: &str) {
        self.config.insert(name.to_string(), value.to_string());
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Text frames sent on `ws` so far.
    pub fn sent_text(&self, ws: WsId) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(id, _)| *id == ws)
            .filter_map(|(_, f)| match f {
                WsFrame::Text(t) => Some(t.clone()),
                WsFrame::Binary(_) => None,
            })
            .collect()
    }

    /// Text frames sent on `ws` so far, parsed as JSON (non-JSON frames are skipped).
    pub fn sent_json(&self, ws: WsId) -> Vec<serde_json::Value> {
        self.sent_text(ws)
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    /// Forgets recorded frames (keeps everything else).
    pub fn clear_sent(&mut self) {
        self.sent.clear();
    }

    /// KV value as UTF-8 text.
    pub fn kv_text(&self, key: &str) -> Option<String> {
        self.kv
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Keys starting with `prefix`.
    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, _, m)| m.contains(needle))
    }
}

fn metric_key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Env for TestEnv {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn random_u64(&mut self) -> u64 {
        if let Some(v) = self.random_queue.pop_front() {
            return v;
        }
        // xorshift64*: deterministic, good enough to make challenges differ in tests.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }

    fn kv_set(&mut self, key: &str, value: &[u8]) {
        self.kv.insert(key.to_string(), value.to_vec());
    }

    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }

    fn kv_cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
        if self.kv.get(key).map(Vec::as_slice) != expected {
            return false;
        }
        match new {
            Some(v) => self.kv.insert(key.to_string(), v.to_vec()),
            None => self.kv.remove(key),
        };
        true
    }

    fn kv_scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Page {
        let start = cursor.unwrap_or(prefix).to_string();
        let mut entries = Vec::new();
        let mut next = None;
        for (k, v) in self.kv.range(start..) {
            if !k.starts_with(prefix) {
                break;
            }
            if cursor == Some(k.as_str()) {
                continue;
            }
            if entries.len() as u32 >= limit.max(1) {
                next = entries.last().map(|(k, _): &(String, Vec<u8>)| k.clone());
                break;
            }
            entries.push((k.clone(), v.clone()));
        }
        Page { entries, next }
    }

    fn http_start(&mut self, req: HttpRequest) -> RequestId {
        let id = self.id();
        self.requests.push((id, req));
        id
    }

    fn http_cancel(&mut self, id: RequestId) {
        self.cancelled_requests.push(id);
    }

    fn respond(&mut self, id: u64, resp: HttpResponse) -> bool {
        if self.responses.iter().any(|(i, _)| *i == id) {
            return false;
        }
        self.responses.push((id, resp));
        true
    }

    fn ws_connect(&mut self, url: &str, _headers: &[Header]) -> WsId {
        let id = self.id();
        self.connects.push((id, url.to_string()));
        id
    }

    fn ws_send(&mut self, id: WsId, frame: WsFrame) -> bool {
        if self.closed.iter().any(|(c, _, _)| *c == id) {
            return false;
        }
        self.sent.push((id, frame));
        true
    }

    fn ws_close(&mut self, id: WsId, code: u16, reason: &str) {
        self.closed.push((id, code, reason.to_string()));
    }

    fn timer_set(&mut self, after_ms: u64, tag: &str) -> TimerId {
        let id = self.id();
        self.timers.insert(id, (after_ms, tag.to_string()));
        id
    }

    fn timer_cancel(&mut self, id: TimerId) {
        self.timers.remove(&id);
    }

    fn key_generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError> {
        match &mut self.crypto {
            Some(c) => c.generate_rsa(name, bits),
            None => Err(KeyError::Failed("TestEnv has no RSA".into())),
        }
    }

    fn key_exists(&mut self, name: &str) -> bool {
        self.crypto.as_mut().is_some_and(|c| c.exists(name))
    }

    fn key_delete(&mut self, _name: &str) {}

    fn key_public_der(&mut self, _name: &str) -> Result<Vec<u8>, KeyError> {
        Err(KeyError::NotFound)
    }

    fn key_self_signed_certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError> {
        match &mut self.crypto {
            Some(c) => c.certificate(name, common_name, days),
            None => Err(KeyError::NotFound),
        }
    }

    fn key_rsa_oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        match &mut self.crypto {
            Some(c) => c.oaep_decrypt(name, hash, ciphertexts),
            None => Err(KeyError::NotFound),
        }
    }

    fn key_sign_rs256(&mut self, _name: &str, _data: &[u8]) -> Result<Vec<u8>, KeyError> {
        Err(KeyError::NotFound)
    }

    fn key_verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool {
        self.crypto
            .as_mut()
            .is_some_and(|c| c.verify_rs256(key, data, signature))
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = SEAL_TAG.to_vec();
        out.extend(plaintext.iter().map(|b| b ^ 0x5a));
        out
    }

    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        match sealed.strip_prefix(SEAL_TAG) {
            Some(rest) => Ok(rest.iter().map(|b| b ^ 0x5a).collect()),
            None => Err(KeyError::Invalid("not sealed by this host".into())),
        }
    }

    fn config_get(&mut self, name: &str) -> Option<String> {
        self.config.get(name).cloned()
    }

    fn config_all(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], delta: u64) {
        *self.counters.entry(metric_key(name, labels)).or_default() += delta;
    }

    fn gauge_set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.gauges.insert(metric_key(name, labels), value);
    }

    fn log(&mut self, level: Level, target: &str, message: &str) {
        self.logs
            .push((level, target.to_string(), message.to_string()));
    }

    fn log_enabled(&mut self, _level: Level, _target: &str) -> bool {
        true
    }
}
