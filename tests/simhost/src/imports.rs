//! The contract's imports, implemented against [`GuestState`]. Everything that changes the world
//! is buffered as an [`Effect`] and happens only if the event commits.

use crate::bindings::connector::host::{
    config, http_client, http_server, keys, kv, log, metrics, timers, types, websocket,
};
use crate::bindings::{Header, HttpRequest, HttpResponse, WsFrame};
use crate::keys::KeyRing;
use crate::state::{Effect, GuestState, LogLine};

impl types::Host for GuestState {}

impl http_client::Host for GuestState {
    fn start(&mut self, req: HttpRequest) -> u64 {
        let id = self.durable.ids.fresh();
        self.effects.push(Effect::HttpStart(id, req));
        id
    }

    fn cancel(&mut self, id: u64) {
        self.effects.push(Effect::HttpCancel(id));
    }
}

impl http_server::Host for GuestState {
    fn respond(&mut self, id: u64, resp: HttpResponse) -> bool {
        if !self.durable.open_inbound.contains(&id) || !self.answered.insert(id) {
            return false;
        }
        self.effects.push(Effect::Respond(id, resp));
        true
    }
}

impl websocket::Host for GuestState {
    fn connect(&mut self, url: String, _headers: Vec<Header>) -> u64 {
        let id = self.durable.ids.fresh();
        self.effects.push(Effect::WsConnect(id, url));
        id
    }

    fn send(&mut self, id: u64, frame: WsFrame) -> bool {
        if !self.durable.open_ws.contains_key(&id) {
            return false;
        }
        self.effects.push(Effect::WsSend(id, frame));
        true
    }

    fn close(&mut self, id: u64, code: u16, reason: String) {
        self.effects.push(Effect::WsClose(id, code, reason));
    }
}

impl timers::Host for GuestState {
    fn set(&mut self, after_ms: u64, tag: String) -> u64 {
        let id = self.durable.ids.fresh();
        self.effects.push(Effect::TimerSet(id, after_ms, tag));
        id
    }

    fn cancel(&mut self, id: u64) {
        self.effects.push(Effect::TimerCancel(id));
    }
}

impl kv::Host for GuestState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.overlay.get(&self.durable.kv, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        self.overlay.put(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.overlay.put(key, None);
    }

    fn cas(&mut self, key: String, expected: Option<Vec<u8>>, new: Option<Vec<u8>>) -> bool {
        if self.overlay.get(&self.durable.kv, &key) != expected {
            return false;
        }
        self.overlay.put(key, new);
        true
    }

    fn scan_prefix(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> kv::Page {
        let limit = limit.clamp(1, 10_000) as usize;
        let (entries, more) =
            self.overlay
                .scan(&self.durable.kv, &prefix, cursor.as_deref(), limit);
        let next = if more {
            entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        kv::Page {
            entries: entries
                .into_iter()
                .map(|(key, value)| kv::Entry { key, value })
                .collect(),
            next,
        }
    }
}

impl keys::Host for GuestState {
    fn generate_rsa(&mut self, name: String, bits: u32) -> Result<(), keys::KeyError> {
        self.durable.keys.generate(name, bits)
    }

    fn exists(&mut self, name: String) -> bool {
        self.durable.keys.exists(&name)
    }

    fn delete(&mut self, name: String) {
        self.durable.keys.delete(&name)
    }

    fn public_key_der(&mut self, name: String) -> Result<Vec<u8>, keys::KeyError> {
        self.durable.keys.public_key_der(&name)
    }

    fn self_signed_certificate(
        &mut self,
        name: String,
        common_name: String,
        days: u32,
    ) -> Result<Vec<u8>, keys::KeyError> {
        self.durable.keys.certificate(&name, &common_name, days)
    }

    fn rsa_oaep_decrypt(
        &mut self,
        name: String,
        hash: keys::OaepHash,
        ciphertexts: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Vec<u8>, keys::KeyError>>, keys::KeyError> {
        self.durable.keys.decrypt(&name, hash, ciphertexts)
    }

    fn sign_rs256(&mut self, name: String, data: Vec<u8>) -> Result<Vec<u8>, keys::KeyError> {
        self.durable.keys.sign(&name, &data)
    }

    fn verify_rs256(&mut self, key: keys::PublicKey, data: Vec<u8>, signature: Vec<u8>) -> bool {
        KeyRing::verify(key, &data, &signature)
    }

    fn seal(&mut self, plaintext: Vec<u8>) -> Vec<u8> {
        self.durable.keys.seal(&plaintext)
    }

    fn unseal(&mut self, sealed: Vec<u8>) -> Result<Vec<u8>, keys::KeyError> {
        self.durable.keys.unseal(&sealed)
    }
}

impl config::Host for GuestState {
    fn get(&mut self, name: String) -> Option<String> {
        self.durable.settings.get(&name).cloned()
    }

    fn get_all(&mut self) -> Vec<config::Setting> {
        self.durable
            .settings
            .iter()
            .map(|(name, value)| config::Setting {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

fn metric_key(name: String, labels: Vec<metrics::Label>) -> (String, Vec<(String, String)>) {
    let mut labels: Vec<_> = labels.into_iter().map(|l| (l.name, l.value)).collect();
    labels.sort();
    (name, labels)
}

impl metrics::Host for GuestState {
    fn counter_add(&mut self, name: String, labels: Vec<metrics::Label>, delta: u64) {
        *self
            .durable
            .metrics
            .entry(metric_key(name, labels))
            .or_default() += delta as f64;
    }

    fn gauge_set(&mut self, name: String, labels: Vec<metrics::Label>, value: f64) {
        self.durable.metrics.insert(metric_key(name, labels), value);
    }
}

impl log::Host for GuestState {
    fn write(&mut self, level: log::Level, target: String, message: String) {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.durable.logs.push(LogLine {
            at_ms: self.durable.now_ms,
            level,
            target,
            message,
        });
    }

    fn enabled(&mut self, level: log::Level, _target: String) -> bool {
        // Everything is recorded: invariants such as "no secret in any log line" need the
        // most verbose output the guest can produce.
        let _ = level;
        true
    }
}
