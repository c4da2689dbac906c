//! The in-memory key-value store and the per-event transaction overlay.
//!
//! Reads inside an event see that event's own writes; the writes reach the store only when the
//! event commits, all together.

use std::collections::BTreeMap;

/// The committed store: ordered keys, as the contract requires for `scan-prefix`.
pub type Store = BTreeMap<String, Vec<u8>>;

/// The writes of the event in progress: `None` marks a delete.
#[derive(Default, Debug)]
pub struct Overlay {
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl Overlay {
    /// Reads through the overlay.
    pub fn get(&self, store: &Store, key: &str) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => store.get(key).cloned(),
        }
    }

    /// Records a write (`None` = delete).
    pub fn put(&mut self, key: String, value: Option<Vec<u8>>) {
        self.writes.insert(key, value);
    }

    /// Entries starting with `prefix`, strictly after `after`, merged from store and overlay,
    /// at most `limit` of them; also returns whether more remain.
    pub fn scan(
        &self,
        store: &Store,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, Vec<u8>)>, bool) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match after {
            Some(a) if a >= prefix => Excluded(a.to_string()),
            _ => Included(prefix.to_string()),
        };
        let mut merged: BTreeMap<&str, Option<&Vec<u8>>> = BTreeMap::new();
        let in_prefix = |k: &String| k.starts_with(prefix);
        for (k, v) in store.range((lower.clone(), Unbounded)) {
            if !in_prefix(k) {
                break;
            }
            merged.insert(k, Some(v));
            // Enough committed keys to fill a page even if the overlay deletes some of them is
            // not knowable in advance, so collect the whole prefix: stores here are small.
        }
        for (k, v) in self.writes.range((lower, Unbounded)) {
            if !in_prefix(k) {
                break;
            }
            merged.insert(k, v.as_ref());
        }
        let mut live = merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.clone())));
        let page: Vec<_> = live.by_ref().take(limit).collect();
        let more = live.next().is_some();
        (page, more)
    }

    /// Applies the writes to the store.
    pub fn commit(self, store: &mut Store) {
        for (k, v) in self.writes {
            match v {
                Some(v) => {
                    store.insert(k, v);
                }
                None => {
                    store.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_own_writes_and_scan_merges_overlay() {
        let mut store = Store::new();
        store.insert("a/1".into(), b"x".to_vec());
        store.insert("a/2".into(), b"y".to_vec());
        store.insert("b/1".into(), b"z".to_vec());
        let mut o = Overlay::default();
        o.put("a/2".into(), None);
        o.put("a/3".into(), Some(b"w".to_vec()));
        assert_eq!(o.get(&store, "a/2"), None);
        assert_eq!(o.get(&store, "a/3"), Some(b"w".to_vec()));
        let (page, more) = o.scan(&store, "a/", None, 1);
        assert_eq!(page, vec![("a/1".to_string(), b"x".to_vec())]);
        assert!(more);
        let (page, more) = o.scan(&store, "a/", Some("a/1"), 10);
        assert_eq!(page, vec![("a/3".to_string(), b"w".to_vec())]);
        assert!(!more);
        o.commit(&mut store);
        assert_eq!(
            store.keys().cloned().collect::<Vec<_>>(),
            ["a/1", "a/3", "b/1"]
        );
    }
}
