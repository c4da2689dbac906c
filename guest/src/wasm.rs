//! The wit-bindgen glue: exports `guest` and implements [`Env`] with the WIT imports.
//! It converts types and nothing else; all behaviour lives in the core.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};

use crate::connector::Connector;
use crate::env::{Env, KeyError, Level, OaepHash, Page, PublicKey};
use crate::event as ev;

wit_bindgen::generate!({
    path: "../wit",
    world: "connector",
});

use connector::host::{
    config, http_client, http_server, keys, kv, log, metrics, timers, types, websocket,
};
use exports::connector::host::guest::Guest;

// wasi-libc (linked by std on wasm32-wasip2) implements this with
// `wasi:random/random.get-random-bytes`, the host's cryptographic source. std's own `RandomState`
// only uses `wasi:random/insecure-seed`, which is not meant to be unpredictable: challenges need
// the real thing, and this needs no extra crate.
unsafe extern "C" {
    fn getentropy(buf: *mut u8, len: usize) -> i32;
}

thread_local! {
    // One instance per Store, driven by one task: a single-threaded cell is all it needs.
    static CONNECTOR: RefCell<Connector> = RefCell::new(Connector::new());
}

struct Component;

export!(Component);

impl Guest for Component {
    fn api_version() -> String {
        crate::API_VERSION.to_string()
    }

    fn version() -> String {
        crate::version()
    }

    fn handle(events: Vec<types::Event>) -> Result<(), String> {
        CONNECTOR.with(|c| {
            let mut c = c.borrow_mut();
            let mut env = WitEnv;
            for e in events {
                c.handle(&mut env, event(e));
            }
        });
        Ok(())
    }

    fn snapshot() -> Option<Vec<u8>> {
        // Everything a successor needs is in KV; no in-memory handover yet.
        None
    }
}

/// The host, through the WIT imports.
struct WitEnv;

fn header(h: types::Header) -> ev::Header {
    ev::Header {
        name: h.name,
        value: h.value,
    }
}

fn headers(hs: Vec<types::Header>) -> Vec<ev::Header> {
    hs.into_iter().map(header).collect()
}

fn wit_headers(hs: Vec<ev::Header>) -> Vec<types::Header> {
    hs.into_iter()
        .map(|h| types::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn ws_open(o: types::WsOpen) -> ev::WsOpen {
    ev::WsOpen {
        id: o.id,
        direction: match o.direction {
            types::WsDirection::Inbound => ev::WsDirection::Inbound,
            types::WsDirection::Outbound => ev::WsDirection::Outbound,
        },
        path: o.path,
        headers: headers(o.headers),
        peer: o.peer,
    }
}

fn event(e: types::Event) -> ev::Event {
    match e {
        types::Event::Init(i) => ev::Event::Init(ev::InitInfo {
            reason: match i.reason {
                types::InitReason::Start => ev::InitReason::Start,
                types::InitReason::Restart => ev::InitReason::Restart,
                types::InitReason::Upgrade => ev::InitReason::Upgrade,
            },
            from_version: i.from_version,
            snapshot: i.snapshot,
            open_websockets: i.open_websockets.into_iter().map(ws_open).collect(),
        }),
        types::Event::HttpRequest((id, r)) => ev::Event::HttpRequest(
            id,
            ev::InboundRequest {
                method: r.method,
                path: r.path,
                query: r.query,
                headers: headers(r.headers),
                body: r.body,
                peer: r.peer,
            },
        ),
        types::Event::HttpResponse((id, r)) => ev::Event::HttpResponse(
            id,
            match r {
                Ok(r) => Ok(ev::HttpResponse {
                    status: r.status,
                    headers: headers(r.headers),
                    body: r.body,
                }),
                Err(e) => Err(match e {
                    types::HttpError::Timeout => ev::HttpError::Timeout,
                    types::HttpError::Denied(s) => ev::HttpError::Denied(s),
                    types::HttpError::Connection(s) => ev::HttpError::Connection(s),
                    types::HttpError::Tls(s) => ev::HttpError::Tls(s),
                    types::HttpError::TooLarge => ev::HttpError::TooLarge,
                    types::HttpError::Invalid(s) => ev::HttpError::Invalid(s),
                }),
            },
        ),
        types::Event::WsOpen(o) => ev::Event::WsOpen(ws_open(o)),
        types::Event::WsMessage((id, f)) => ev::Event::WsMessage(
            id,
            match f {
                types::WsFrame::Text(t) => ev::WsFrame::Text(t),
                types::WsFrame::Binary(b) => ev::WsFrame::Binary(b),
            },
        ),
        types::Event::WsClosed(c) => ev::Event::WsClosed(ev::WsClosed {
            id: c.id,
            code: c.code,
            reason: c.reason,
        }),
        types::Event::Timer((id, tag)) => ev::Event::Timer(id, tag),
    }
}

fn key_error(e: keys::KeyError) -> KeyError {
    match e {
        keys::KeyError::NotFound => KeyError::NotFound,
        keys::KeyError::Invalid(s) => KeyError::Invalid(s),
        keys::KeyError::Failed(s) => KeyError::Failed(s),
    }
}

fn level(l: Level) -> log::Level {
    match l {
        Level::Trace => log::Level::Trace,
        Level::Debug => log::Level::Debug,
        Level::Info => log::Level::Info,
        Level::Warn => log::Level::Warn,
        Level::Error => log::Level::Error,
    }
}

fn labels(ls: &[(&str, &str)]) -> Vec<metrics::Label> {
    ls.iter()
        .map(|(n, v)| metrics::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

impl Env for WitEnv {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn random_u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is valid for writes of its length, which is below getentropy's limit.
        if unsafe { getentropy(buf.as_mut_ptr(), buf.len()) } == 0 {
            return u64::from_le_bytes(buf);
        }
        // Not expected on wasm32-wasip2; std's hasher keys still come from the host.
        RandomState::new().hash_one(0u8)
    }

    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }

    fn kv_set(&mut self, key: &str, value: &[u8]) {
        kv::set(key, value)
    }

    fn kv_delete(&mut self, key: &str) {
        kv::delete(key)
    }

    fn kv_cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
        kv::cas(key, expected, new)
    }

    fn kv_scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Page {
        let p = kv::scan_prefix(prefix, cursor, limit);
        Page {
            entries: p.entries.into_iter().map(|e| (e.key, e.value)).collect(),
            next: p.next,
        }
    }

    fn http_start(&mut self, req: ev::HttpRequest) -> ev::RequestId {
        http_client::start(&types::HttpRequest {
            method: req.method,
            url: req.url,
            headers: wit_headers(req.headers),
            body: req.body,
            timeout_ms: req.timeout_ms,
        })
    }

    fn http_cancel(&mut self, id: ev::RequestId) {
        http_client::cancel(id)
    }

    fn respond(&mut self, id: u64, resp: ev::HttpResponse) -> bool {
        http_server::respond(
            id,
            &types::HttpResponse {
                status: resp.status,
                headers: wit_headers(resp.headers),
                body: resp.body,
            },
        )
    }

    fn ws_connect(&mut self, url: &str, hs: &[ev::Header]) -> ev::WsId {
        websocket::connect(url, &wit_headers(hs.to_vec()))
    }

    fn ws_send(&mut self, id: ev::WsId, frame: ev::WsFrame) -> bool {
        let f = match frame {
            ev::WsFrame::Text(t) => types::WsFrame::Text(t),
            ev::WsFrame::Binary(b) => types::WsFrame::Binary(b),
        };
        websocket::send(id, &f)
    }

    fn ws_close(&mut self, id: ev::WsId, code: u16, reason: &str) {
        websocket::close(id, code, reason)
    }

    fn timer_set(&mut self, after_ms: u64, tag: &str) -> ev::TimerId {
        timers::set(after_ms, tag)
    }

    fn timer_cancel(&mut self, id: ev::TimerId) {
        timers::cancel(id)
    }

    fn key_generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError> {
        keys::generate_rsa(name, bits).map_err(key_error)
    }

    fn key_exists(&mut self, name: &str) -> bool {
        keys::exists(name)
    }

    fn key_delete(&mut self, name: &str) {
        keys::delete(name)
    }

    fn key_public_der(&mut self, name: &str) -> Result<Vec<u8>, KeyError> {
        keys::public_key_der(name).map_err(key_error)
    }

    fn key_self_signed_certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError> {
        keys::self_signed_certificate(name, common_name, days).map_err(key_error)
    }

    fn key_rsa_oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        let h = match hash {
            OaepHash::Sha1 => keys::OaepHash::Sha1,
            OaepHash::Sha256 => keys::OaepHash::Sha256,
        };
        keys::rsa_oaep_decrypt(name, h, ciphertexts)
            .map(|rs| rs.into_iter().map(|r| r.map_err(key_error)).collect())
            .map_err(key_error)
    }

    fn key_sign_rs256(&mut self, name: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        keys::sign_rs256(name, data).map_err(key_error)
    }

    fn key_verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool {
        let k = match key {
            PublicKey::Rsa(n, e) => keys::PublicKey::Rsa((n.clone(), e.clone())),
            PublicKey::SpkiDer(d) => keys::PublicKey::SpkiDer(d.clone()),
        };
        keys::verify_rs256(&k, data, signature)
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        keys::seal(plaintext)
    }

    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        keys::unseal(sealed).map_err(key_error)
    }

    fn config_get(&mut self, name: &str) -> Option<String> {
        config::get(name)
    }

    fn config_all(&mut self) -> Vec<(String, String)> {
        config::get_all()
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect()
    }

    fn counter_add(&mut self, name: &str, ls: &[(&str, &str)], delta: u64) {
        metrics::counter_add(name, &labels(ls), delta)
    }

    fn gauge_set(&mut self, name: &str, ls: &[(&str, &str)], value: f64) {
        metrics::gauge_set(name, &labels(ls), value)
    }

    fn log(&mut self, l: Level, target: &str, message: &str) {
        log::write(level(l), target, message)
    }

    fn log_enabled(&mut self, l: Level, target: &str) -> bool {
        log::enabled(level(l), target)
    }
}
