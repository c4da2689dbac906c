//! `Env`: everything the core may ask of its host, one method per WIT import, plus the wall
//! clock and randomness that a `wasm32-wasip2` guest gets from std.
//!
//! The core never performs I/O itself; the wasm glue implements `Env` with the WIT imports and
//! `TestEnv` (native only) implements it in memory and records the effects for tests.

use crate::event::{Header, HttpRequest, HttpResponse, RequestId, TimerId, WsFrame, WsId};

/// Log severity (mirrors the WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Handled problem.
    Warn,
    /// Failure.
    Error,
}

/// One page of a KV prefix scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Entries in key order.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Cursor for the next page, `None` when complete.
    pub next: Option<String>,
}

/// Why a key operation failed (mirrors WIT `keys.key-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No key with that name.
    NotFound,
    /// Bad input.
    Invalid(String),
    /// The host could not complete the operation.
    Failed(String),
}

/// Hash for RSA-OAEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1 (Graph rich notifications).
    Sha1,
    /// SHA-256.
    Sha256,
}

/// A public key from outside (JWKS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian.
    Rsa(Vec<u8>, Vec<u8>),
    /// SubjectPublicKeyInfo DER.
    SpkiDer(Vec<u8>),
}

/// The host as seen by the core. Methods that start work return a host-owned id at once;
/// their outcome arrives later as an [`crate::Event`].
pub trait Env {
    /// Wall clock, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// 64 unpredictable bits (challenges, jitter).
    fn random_u64(&mut self) -> u64;

    /// Reads a KV value.
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Writes a KV value (durable when the event commits).
    fn kv_set(&mut self, key: &str, value: &[u8]);
    /// Deletes a KV key.
    fn kv_delete(&mut self, key: &str);
    /// Compare-and-swap; `None` means absent.
    fn kv_cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool;
    /// One page of keys starting with `prefix`, after `cursor`.
    fn kv_scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Page;

    /// Starts an outgoing HTTP request.
    fn http_start(&mut self, req: HttpRequest) -> RequestId;
    /// Abandons an outgoing request.
    fn http_cancel(&mut self, id: RequestId);
    /// Answers an inbound request; `false` if unknown or already answered.
    fn respond(&mut self, id: u64, resp: HttpResponse) -> bool;

    /// Dials a WebSocket URL.
    fn ws_connect(&mut self, url: &str, headers: &[Header]) -> WsId;
    /// Queues a frame; `false` if the connection is unknown or closed.
    fn ws_send(&mut self, id: WsId, frame: WsFrame) -> bool;
    /// Closes a connection.
    fn ws_close(&mut self, id: WsId, code: u16, reason: &str);

    /// Sets a one-shot timer.
    fn timer_set(&mut self, after_ms: u64, tag: &str) -> TimerId;
    /// Cancels a timer.
    fn timer_cancel(&mut self, id: TimerId);

    /// Creates an RSA key pair held by the host.
    fn key_generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError>;
    /// Whether a key pair exists.
    fn key_exists(&mut self, name: &str) -> bool;
    /// Deletes a key pair.
    fn key_delete(&mut self, name: &str);
    /// Public key as SPKI DER.
    fn key_public_der(&mut self, name: &str) -> Result<Vec<u8>, KeyError>;
    /// Self-signed certificate (DER) for a key.
    fn key_self_signed_certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError>;
    /// Batch RSA-OAEP decryption.
    fn key_rsa_oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError>;
    /// RS256 signature.
    fn key_sign_rs256(&mut self, name: &str, data: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// RS256 verification.
    fn key_verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool;
    /// Seals a secret for storage.
    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8>;
    /// Reverses [`Env::seal`].
    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// One setting of the instance's configuration.
    fn config_get(&mut self, name: &str) -> Option<String>;
    /// Every setting, sorted by name.
    fn config_all(&mut self) -> Vec<(String, String)>;

    /// Adds to a counter.
    fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], delta: u64);
    /// Sets a gauge.
    fn gauge_set(&mut self, name: &str, labels: &[(&str, &str)], value: f64);

    /// Writes a log line. Never pass secrets.
    fn log(&mut self, level: Level, target: &str, message: &str);
    /// Whether a line at `level` under `target` would be written.
    fn log_enabled(&mut self, level: Level, target: &str) -> bool;
}

/// Log targets the guest writes under (the App Platform's trace switches).
pub mod target {
    /// General application flow.
    pub const APP: &str = "app";
    /// AppWebsocket traffic with the PBX.
    pub const APP_WEBSOCKET: &str = "app-websocket";
    /// Settings and configuration.
    pub const CONFIG: &str = "config";
    /// Microsoft Graph / Entra client.
    pub const GRAPH: &str = "graph";
}
