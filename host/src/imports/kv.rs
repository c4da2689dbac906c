//! `kv`: reads see the event's own writes; writes land in the overlay until commit.

use crate::bindings::connector::host::kv::{Entry, Host, Page};
use crate::guest_state::GuestState;
use crate::instance::GUEST_KV_PREFIX;

fn stored_key(key: &str) -> Vec<u8> {
    [GUEST_KV_PREFIX, key.as_bytes()].concat()
}

impl Host for GuestState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.tx
            .get(&*self.ctx.kv, &stored_key(&key))
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.tx.put(stored_key(&key), Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.tx.put(stored_key(&key), None);
        Ok(())
    }

    fn cas(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<bool> {
        self.tx
            .cas(&*self.ctx.kv, &stored_key(&key), expected.as_deref(), new)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn scan_prefix(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Page> {
        let after = cursor.as_deref().map(stored_key);
        let limit = (limit as usize).clamp(1, 10_000);
        let (entries, more) = self
            .tx
            .scan(&*self.ctx.kv, &stored_key(&prefix), after.as_deref(), limit)
            .map_err(wasmtime::Error::from_anyhow)?;
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(k, value)| Entry {
                key: String::from_utf8_lossy(&k[GUEST_KV_PREFIX.len()..]).into_owned(),
                value,
            })
            .collect();
        let next = if more {
            entries.last().map(|e| e.key.clone())
        } else {
            None
        };
        Ok(Page { entries, next })
    }
}
