//! The audit trail: one [`Entry`] for every presence write on either side (product.md F5:
//! "who, what, why, result, kept for a bounded time").
//!
//! Entries live in KV under `audit/<at_ms, 15 digits>-<sequence, 12 digits>`, so key order is
//! time order and a scan can start at any point in time. The trail is bounded to
//! [`RETENTION_MS`] and [`MAX_ENTRIES`]; every [`record`] deletes a few of the oldest entries
//! that are past either bound, so pruning never needs a full scan.
//!
//! Results follow one convention so the metrics can tell success from failure: `sent` (the
//! request left), `ok` (the other side confirmed), `refused: <why>` (the other side answered
//! with an error) and `failed: <why>` (it could not be sent).

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::store;

/// Key prefix of the entries.
pub const PREFIX: &str = "audit/";

/// How long entries are kept: 7 days.
pub const RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// At most this many entries are kept; the oldest go first.
pub const MAX_ENTRIES: u64 = 20_000;

/// Direction of a write into the PBX (a Teams presence written as a PBX presence item).
pub const TO_PBX: &str = "teams->pbx";

/// Direction of a write into Teams (a PBX presence written to Microsoft 365).
pub const TO_TEAMS: &str = "pbx->teams";

/// Number of entries kept (decimal). Outside `audit/` so scans only see entries.
const COUNT_KEY: &str = "stats/audit/entries";

/// Sequence of the last entry written (decimal); makes keys unique within one millisecond.
const SEQ_KEY: &str = "stats/audit/seq";

/// Oldest entries looked at (and deleted if past a bound) per [`record`]. More than one, so
/// a trail over its bounds (e.g. after the limits shrank) shrinks while it is written to.
const PRUNE_STEP: u32 = 4;

/// The first time window [`recent`] scans back from now; each further window is 4x older.
const FIRST_WINDOW_MS: u64 = 60 * 60 * 1000;

/// One presence write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// [`TO_PBX`] or [`TO_TEAMS`].
    pub direction: String,
    /// Whose presence (name and/or id as known at the write point).
    pub user: String,
    /// What was written, e.g. `SetPresence busy`.
    pub what: String,
    /// Why it was written, e.g. `Teams presence Busy/InACall`.
    pub why: String,
    /// `sent`, `ok`, `refused: <why>` or `failed: <why>` (see the module docs).
    pub result: String,
}

impl Entry {
    /// Whether the result says the write did not happen.
    pub fn failed(&self) -> bool {
        self.result.starts_with("failed") || self.result.starts_with("refused")
    }

    fn matches(&self, needle: &str) -> bool {
        [
            &self.direction,
            &self.user,
            &self.what,
            &self.why,
            &self.result,
        ]
        .iter()
        .any(|field| field.to_lowercase().contains(needle))
    }
}

/// The key of the first possible entry at `at_ms` (entries at that time sort after it).
fn time_key(at_ms: u64) -> String {
    format!("{PREFIX}{at_ms:015}")
}

/// The time of an entry key, if it is one.
fn time_of(key: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?.get(..15)?.parse().ok()
}

/// Appends `entry` to the trail, counts it in the metrics and prunes a few old entries.
pub fn record(env: &mut impl Env, entry: &Entry) {
    let seq = store::get_u64(env, SEQ_KEY).unwrap_or(0).saturating_add(1);
    store::set_u64(env, SEQ_KEY, seq);
    store::set_json(env, &format!("{}-{seq:012}", time_key(entry.at_ms)), entry);
    let count = store::get_u64(env, COUNT_KEY)
        .unwrap_or(0)
        .saturating_add(1);
    let count = prune(env, count);
    store::set_u64(env, COUNT_KEY, count);

    let outcome = if entry.failed() {
        "failed"
    } else {
        entry.result.split(':').next().unwrap_or("")
    };
    env.counter_add(
        "presence_writes_total",
        &[("direction", &entry.direction), ("result", outcome)],
        1,
    );
    env.gauge_set("audit_entries", &[], count as f64);
}

/// Deletes up to [`PRUNE_STEP`] of the oldest entries that are too old or too many.
/// Returns the number of entries left.
fn prune(env: &mut impl Env, mut count: u64) -> u64 {
    let oldest_kept = env.now_ms().saturating_sub(RETENTION_MS);
    let page = env.kv_scan(PREFIX, None, PRUNE_STEP);
    for (key, _) in &page.entries {
        let expired = time_of(key).is_none_or(|at| at < oldest_kept);
        if !expired && count <= MAX_ENTRIES {
            break;
        }
        env.kv_delete(key);
        count = count.saturating_sub(1);
    }
    count
}

/// Records a presence write into PBX `pbx` for user `guid`. The user is shown by name when
/// the replicated user row is known, always with the guid.
pub fn pbx_write(
    env: &mut impl Env,
    pbx: Option<&str>,
    guid: &str,
    activity: &str,
    note: &str,
    why: &str,
    result: String,
) {
    let name = pbx
        .and_then(|p| crate::pbx::users::get(env, p, guid))
        .map(|row| row.h323)
        .filter(|n| !n.is_empty());
    let user = match name {
        Some(n) => format!("{n} ({guid})"),
        None => guid.to_string(),
    };
    let activity = if activity.is_empty() {
        "(cleared)"
    } else {
        activity
    };
    let what = if note.is_empty() {
        format!("SetPresence {activity}")
    } else {
        format!("SetPresence {activity} \"{note}\"")
    };
    let entry = Entry {
        at_ms: env.now_ms(),
        direction: TO_PBX.into(),
        user,
        what,
        why: why.into(),
        result,
    };
    record(env, &entry);
}

/// Number of entries kept.
pub fn len(env: &mut impl Env) -> u64 {
    store::get_u64(env, COUNT_KEY).unwrap_or(0)
}

/// The newest `limit` entries, newest first. With a `filter`, only entries whose direction,
/// user, what, why or result contain it (case-insensitive).
///
/// Scans back from now in growing time windows, so the common case (recent entries) reads
/// only the last hour or so of the trail instead of all of it.
pub fn recent(env: &mut impl Env, limit: usize, filter: Option<&str>) -> Vec<Entry> {
    let needle = filter.map(|f| f.trim().to_lowercase()).unwrap_or_default();
    let oldest_kept = env.now_ms().saturating_sub(RETENTION_MS);
    let mut out = Vec::new();
    let mut upper: Option<String> = None;
    let mut start_ms = env.now_ms();
    let mut window = FIRST_WINDOW_MS;
    while out.len() < limit {
        start_ms = start_ms.saturating_sub(window);
        window = window.saturating_mul(4);
        // The last window starts at the beginning of the trail.
        let lower = (start_ms > oldest_kept).then(|| time_key(start_ms));
        let mut chunk: Vec<Entry> = Vec::new();
        let mut cursor = lower.clone();
        'pages: loop {
            let page = env.kv_scan(PREFIX, cursor.as_deref(), 256);
            for (key, value) in &page.entries {
                if upper.as_deref().is_some_and(|u| key.as_str() >= u) {
                    break 'pages;
                }
                match serde_json::from_slice::<Entry>(value) {
                    Ok(e) if e.at_ms >= oldest_kept && e.matches(&needle) => chunk.push(e),
                    _ => {}
                }
            }
            match page.next {
                Some(next) if !page.entries.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
        out.extend(chunk.into_iter().rev().take(limit - out.len()));
        match lower {
            Some(l) => upper = Some(l),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    fn entry(env: &TestEnv, user: &str, result: &str) -> Entry {
        Entry {
            at_ms: env.now_ms,
            direction: TO_PBX.into(),
            user: user.into(),
            what: "SetPresence busy".into(),
            why: "Teams presence Busy/InACall".into(),
            result: result.into(),
        }
    }

    #[test]
    fn recent_is_newest_first_across_windows() {
        let mut env = TestEnv::new();
        // One entry every 10 minutes for two days: spans many scan windows.
        for i in 0..288 {
            let e = entry(&env, &format!("user{i}"), "sent");
            record(&mut env, &e);
            env.now_ms += 10 * 60 * 1000;
        }
        let got = recent(&mut env, 300, None);
        assert_eq!(got.len(), 288);
        assert_eq!(got[0].user, "user287");
        assert_eq!(got[287].user, "user0");
        assert!(got.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
        let few = recent(&mut env, 3, None);
        let names: Vec<&str> = few.iter().map(|e| e.user.as_str()).collect();
        assert_eq!(names, ["user287", "user286", "user285"]);
    }

    #[test]
    fn entries_in_the_same_millisecond_keep_their_order() {
        let mut env = TestEnv::new();
        for name in ["a", "b", "c"] {
            let e = entry(&env, name, "sent");
            record(&mut env, &e);
        }
        let names: Vec<String> = recent(&mut env, 10, None)
            .into_iter()
            .map(|e| e.user)
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
    }

    #[test]
    fn filter_matches_any_field_ignoring_case() {
        let mut env = TestEnv::new();
        let e = entry(&env, "Alice", "sent");
        record(&mut env, &e);
        let e = entry(&env, "Bob", "refused: unknown user");
        record(&mut env, &e);
        assert_eq!(recent(&mut env, 10, Some("alice"))[0].user, "Alice");
        assert_eq!(recent(&mut env, 10, Some("REFUSED"))[0].user, "Bob");
        assert_eq!(recent(&mut env, 10, Some("teams->pbx")).len(), 2);
        assert!(recent(&mut env, 10, Some("carol")).is_empty());
        assert_eq!(recent(&mut env, 10, Some("  ")).len(), 2);
    }

    #[test]
    fn old_entries_are_pruned_after_seven_days() {
        let mut env = TestEnv::new();
        for i in 0..10 {
            let e = entry(&env, &format!("old{i}"), "sent");
            record(&mut env, &e);
        }
        env.now_ms += RETENTION_MS + 1;
        // Old entries are no longer shown even before they are deleted.
        assert!(recent(&mut env, 100, None).is_empty());
        for i in 0..3 {
            let e = entry(&env, &format!("new{i}"), "sent");
            record(&mut env, &e);
        }
        assert_eq!(len(&mut env), 3);
        assert_eq!(store::count(&mut env, PREFIX), 3);
        assert_eq!(recent(&mut env, 100, None).len(), 3);
    }

    #[test]
    fn the_trail_never_grows_past_its_limit() {
        let mut env = TestEnv::new();
        for i in 0..MAX_ENTRIES + 50 {
            let e = entry(&env, &format!("u{i}"), "sent");
            record(&mut env, &e);
            env.now_ms += 1;
        }
        assert_eq!(len(&mut env), MAX_ENTRIES);
        assert_eq!(store::count(&mut env, PREFIX), MAX_ENTRIES);
        let newest = recent(&mut env, 1, None);
        assert_eq!(newest[0].user, format!("u{}", MAX_ENTRIES + 49));
        assert_eq!(env.gauges.get("audit_entries"), Some(&(MAX_ENTRIES as f64)));
    }

    #[test]
    fn metrics_count_writes_by_direction_and_result() {
        let mut env = TestEnv::new();
        let e = entry(&env, "a", "sent");
        record(&mut env, &e);
        let e = entry(&env, "a", "refused: no such user");
        record(&mut env, &e);
        let mut e = entry(&env, "a", "ok");
        e.direction = TO_TEAMS.into();
        record(&mut env, &e);
        let c = |k: &str| env.counters.get(k).copied();
        assert_eq!(
            c("presence_writes_total{direction=teams->pbx,result=sent}"),
            Some(1)
        );
        assert_eq!(
            c("presence_writes_total{direction=teams->pbx,result=failed}"),
            Some(1)
        );
        assert_eq!(
            c("presence_writes_total{direction=pbx->teams,result=ok}"),
            Some(1)
        );
    }
}
