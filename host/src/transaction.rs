//! One event = one transaction: a KV overlay that reads through to the store, plus the list of
//! effects the guest asked for. Nothing here touches the outside world; `instance` applies it.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use crate::bindings::{Header, HttpRequest, HttpResponse, WsFrame};
use crate::kv::{BatchOp, KvPair, KvStore};

/// Something the guest asked for, performed only after the event commits.
#[derive(Debug)]
pub enum Effect {
    /// Answer an inbound request.
    Respond {
        /// Inbound request id.
        id: u64,
        /// The answer.
        response: HttpResponse,
    },
    /// Start an outgoing request.
    HttpStart {
        /// Request id.
        id: u64,
        /// The request.
        request: HttpRequest,
    },
    /// Abandon an outgoing request.
    HttpCancel {
        /// Request id.
        id: u64,
    },
    /// Dial a WebSocket.
    WsConnect {
        /// Connection id.
        id: u64,
        /// `ws://` or `wss://` URL.
        url: String,
        /// Extra handshake headers.
        headers: Vec<Header>,
    },
    /// Send a frame.
    WsSend {
        /// Connection id.
        id: u64,
        /// The frame.
        frame: WsFrame,
    },
    /// Close a connection.
    WsClose {
        /// Connection id.
        id: u64,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Arm a timer.
    TimerSet {
        /// Timer id.
        id: u64,
        /// Delay.
        after_ms: u64,
        /// Tag returned with the event.
        tag: String,
    },
    /// Disarm a timer.
    TimerCancel {
        /// Timer id.
        id: u64,
    },
}

/// Buffered writes and effects of the running event.
#[derive(Default)]
pub struct Transaction {
    /// Overlay on the store: `None` is a buffered delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Effects in call order.
    pub effects: Vec<Effect>,
    /// Inbound ids answered in this event (a second `respond` must return false).
    pub answered: HashSet<u64>,
    /// WebSockets closed in this event (a later `send` must return false).
    pub closed_websockets: HashSet<u64>,
}

impl Transaction {
    /// Reads through the overlay.
    pub fn get(&self, store: &dyn KvStore, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => store.get(key),
        }
    }

    /// Buffers a write (`None` deletes).
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.insert(key, value);
    }

    /// Compare-and-swap against what this event sees.
    pub fn cas(
        &mut self,
        store: &dyn KvStore,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool> {
        if self.get(store, key)?.as_deref() != expected {
            return Ok(false);
        }
        self.put(key.to_vec(), new);
        Ok(true)
    }

    /// Up to `limit` entries with `prefix` after `after`, merging the overlay over the store.
    /// The flag says whether more entries follow.
    pub fn scan(
        &self,
        store: &dyn KvStore,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KvPair>, bool)> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut overlay = self
            .writes
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut stored = store.scan_prefix(prefix, after).peekable();
        let mut out = Vec::new();
        loop {
            let next_stored = match stored.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return Err(stored.next().expect("peeked").unwrap_err()),
                None => None,
            };
            let take_overlay = match (overlay.peek(), &next_stored) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some(sk)) => ok.as_slice() <= sk.as_slice(),
            };
            let item = if take_overlay {
                let (k, v) = overlay.next().expect("peeked");
                if next_stored.as_deref() == Some(k.as_slice()) {
                    stored.next(); // shadowed by the overlay
                }
                v.clone().map(|v| (k.clone(), v))
            } else {
                Some(stored.next().expect("peeked")?)
            };
            if let Some(entry) = item {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(entry);
            }
        }
        Ok((out, false))
    }

    /// Whether the event wrote anything.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    /// Splits into the store batch and the effects.
    pub fn into_parts(self) -> (Vec<BatchOp>, Vec<Effect>) {
        (self.writes.into_iter().collect(), self.effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::SledStore;

    #[test]
    fn overlay_reads_own_writes_and_scan_merges() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = SledStore::open(&db, "t").unwrap();
        for k in ["p/a", "p/b", "p/d", "q/z"] {
            store.set(k.as_bytes(), b"s").unwrap();
        }
        let mut tx = Transaction::default();
        tx.put(b"p/c".to_vec(), Some(b"o".to_vec()));
        tx.put(b"p/b".to_vec(), None);
        tx.put(b"p/a".to_vec(), Some(b"o".to_vec()));
        assert_eq!(tx.get(&store, b"p/b").unwrap(), None);
        assert_eq!(tx.get(&store, b"p/d").unwrap(), Some(b"s".to_vec()));
        let (page, more) = tx.scan(&store, b"p/", None, 2).unwrap();
        let keys: Vec<_> = page.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"p/a".to_vec(), b"p/c".to_vec()]);
        assert_eq!(page[0].1, b"o");
        assert!(more);
        let (page, more) = tx.scan(&store, b"p/", Some(b"p/c"), 2).unwrap();
        assert_eq!(page, vec![(b"p/d".to_vec(), b"s".to_vec())]);
        assert!(!more);
        assert!(tx.cas(&store, b"p/d", Some(b"s"), None).unwrap());
        assert!(!tx.cas(&store, b"p/d", Some(b"s"), None).unwrap());
        // Nothing reached the store.
        assert_eq!(store.get(b"p/b").unwrap(), Some(b"s".to_vec()));
    }
}
