//! Storage behind a small trait (so another backend can replace sled), and its sled implementation.

use anyhow::Result;

/// One write in an atomic batch: `None` deletes.
pub type BatchOp = (Vec<u8>, Option<Vec<u8>>);

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Lazily produced scan results.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + 'a>;

/// An ordered byte-keyed store, one per instance.
pub trait KvStore: Send + Sync {
    /// Reads a value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes a value (not durable until `flush`).
    fn set(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Deletes a key.
    fn delete(&self, key: &[u8]) -> Result<()>;
    /// Compare-and-swap; `Ok(false)` when the current value differs from `expected`.
    fn cas(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool>;
    /// Entries whose key starts with `prefix` and is greater than `after`, in key order.
    fn scan_prefix<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> ScanIter<'a>;
    /// Applies all writes atomically.
    fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<()>;
    /// Waits until every write so far is on disk.
    fn flush(&self) -> Result<()>;
}

/// A sled tree as a [`KvStore`].
#[derive(Clone)]
pub struct SledStore {
    tree: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the tree `name` of `db`.
    pub fn open(db: &sled::Db, name: &str) -> Result<Self> {
        Ok(SledStore {
            tree: db.open_tree(name)?,
        })
    }
}

impl KvStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.tree.remove(key)?;
        Ok(())
    }

    fn cas(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool> {
        Ok(self.tree.compare_and_swap(key, expected, new)?.is_ok())
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> ScanIter<'a> {
        use std::ops::Bound;
        let prefix = prefix.to_vec();
        let start = match after {
            Some(a) if a >= prefix.as_slice() => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(prefix.clone()),
        };
        let range = self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded));
        Box::new(
            range
                .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into)),
        )
    }

    fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.tree.flush()?;
        Ok(())
    }
}
