//! The KV layout. Every key lives under one prefix that says what it holds:
//!
//! | prefix | holds |
//! |---|---|
//! | `meta/` | `meta/schema-version` (decimal), migrated by `init` |
//! | `stats/` | `stats/events/<kind>`: events handled per kind (decimal) |
//! | `pbx/` | `pbx/conn/<ws-id>`: AppWebsocket connection state (JSON), `pbx/repl/<pbx>`: replication resume point |
//! | `user/` | `user/row/<pbx>/<guid>`: replicated PBX user rows (compact JSON), `user/lic/<guid>`: licence check result |
//! | `provisioning/` | `provisioning/state`: the last create-or-update of `microsoft365-api` (see `crate::provisioning`) |
//! | `audit/` | `audit/<at_ms>-<seq>`: the audit trail of presence writes (see `crate::audit`), counted in `stats/audit/` |
//! | `calendar/` | calendar presence (F3, see `crate::calendar`): `user/<entra id>` schedule and presence written, `sub/<entra id>` event subscription, `inbox/<entra id>` notified users not read yet, `clock-skew-ms` |
//! | `cfg/`, `sub/`, `token/` | settings from the admin page, Graph subscriptions, tokens (features to come) |
//!
//! Variable key segments (PBX names) are escaped with [`segment`] so a `/` in a name cannot
//! break the layout.

use std::collections::BTreeMap;

use crate::env::{Env, Level, target};

/// The layout version this guest writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Key of the schema version.
pub const SCHEMA_KEY: &str = "meta/schema-version";

/// Prefix of the per-kind event counters.
pub const EVENT_STATS: &str = "stats/events/";

/// How many keys one scan page asks for.
const PAGE: u32 = 256;

/// Escapes a variable key segment: `%` and `/` (and control characters) become `%XX`.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == '/' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a decimal number stored as text; missing or unreadable is `None`.
pub fn get_u64(env: &mut impl Env, key: &str) -> Option<u64> {
    let v = env.kv_get(key)?;
    std::str::from_utf8(&v).ok()?.trim().parse().ok()
}

/// Stores a decimal number as text.
pub fn set_u64(env: &mut impl Env, key: &str, value: u64) {
    env.kv_set(key, value.to_string().as_bytes());
}

/// Reads a JSON value; unreadable data is logged and treated as absent.
pub fn get_json<T: serde::de::DeserializeOwned>(env: &mut impl Env, key: &str) -> Option<T> {
    let raw = env.kv_get(key)?;
    match serde_json::from_slice(&raw) {
        Ok(v) => Some(v),
        Err(e) => {
            env.log(
                Level::Warn,
                target::APP,
                &format!("ignoring unreadable KV value at {key}: {e}"),
            );
            None
        }
    }
}

/// Stores a value as compact JSON.
pub fn set_json<T: serde::Serialize>(env: &mut impl Env, key: &str, value: &T) {
    // Serialising plain structs of strings and numbers cannot fail.
    if let Ok(bytes) = serde_json::to_vec(value) {
        env.kv_set(key, &bytes);
    }
}

/// Calls `f` for every entry under `prefix`, page by page.
pub fn for_each(env: &mut impl Env, prefix: &str, mut f: impl FnMut(&str, &[u8])) {
    let mut cursor: Option<String> = None;
    loop {
        let page = env.kv_scan(prefix, cursor.as_deref(), PAGE);
        for (k, v) in &page.entries {
            f(k, v);
        }
        match page.next {
            Some(next) if !page.entries.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
}

/// Keys under `prefix`.
pub fn keys(env: &mut impl Env, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each(env, prefix, |k, _| out.push(k.to_string()));
    out
}

/// Number of keys under `prefix`.
pub fn count(env: &mut impl Env, prefix: &str) -> u64 {
    let mut n = 0;
    for_each(env, prefix, |_, _| n += 1);
    n
}

/// Deletes every key under `prefix`; returns how many.
pub fn delete_prefix(env: &mut impl Env, prefix: &str) -> usize {
    let doomed = keys(env, prefix);
    for k in &doomed {
        env.kv_delete(k);
    }
    doomed.len()
}

/// Brings the KV layout to [`SCHEMA_VERSION`]. Returns the version found before.
///
/// A store written by a *newer* guest is left untouched (a rollback must not destroy data the
/// newer version may need again); the mismatch is logged.
pub fn migrate(env: &mut impl Env) -> u32 {
    let found = get_u64(env, SCHEMA_KEY).map(|v| v as u32).unwrap_or(0);
    if found > SCHEMA_VERSION {
        env.log(
            Level::Warn,
            target::APP,
            &format!(
                "KV schema version {found} is newer than this guest's {SCHEMA_VERSION}; leaving it as is"
            ),
        );
        return found;
    }
    // Version 0 -> 1: the first layout. Nothing to convert, only the marker to write.
    if found < SCHEMA_VERSION {
        set_u64(env, SCHEMA_KEY, SCHEMA_VERSION as u64);
        env.log(
            Level::Info,
            target::APP,
            &format!("KV schema migrated from {found} to {SCHEMA_VERSION}"),
        );
    }
    found
}

/// Counts one handled event of `kind` in `stats/events/<kind>`.
pub fn count_event(env: &mut impl Env, kind: &str) {
    let key = format!("{EVENT_STATS}{kind}");
    let n = get_u64(env, &key).unwrap_or(0);
    set_u64(env, &key, n.saturating_add(1));
}

/// The per-kind event counters.
pub fn event_counts(env: &mut impl Env) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for_each(env, EVENT_STATS, |k, v| {
        let n = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.insert(k[EVENT_STATS.len()..].to_string(), n);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn segment_escapes_slash_and_percent() {
        assert_eq!(segment("pbx-main"), "pbx-main");
        assert_eq!(segment("a/b%c"), "a%2Fb%25c");
    }

    #[test]
    fn migrate_writes_version_once() {
        let mut env = TestEnv::new();
        assert_eq!(migrate(&mut env), 0);
        assert_eq!(env.kv_text(SCHEMA_KEY).as_deref(), Some("1"));
        assert_eq!(migrate(&mut env), 1);
    }

    #[test]
    fn migrate_keeps_newer_schema() {
        let mut env = TestEnv::new();
        env.kv.insert(SCHEMA_KEY.into(), b"7".to_vec());
        assert_eq!(migrate(&mut env), 7);
        assert_eq!(env.kv_text(SCHEMA_KEY).as_deref(), Some("7"));
        assert!(env.logged("newer"));
    }

    #[test]
    fn scan_pages_through_everything() {
        let mut env = TestEnv::new();
        for i in 0..600 {
            env.kv_set(&format!("user/row/p/{i:04}"), b"{}");
        }
        env.kv_set("user/rox", b"x");
        assert_eq!(count(&mut env, "user/row/"), 600);
        assert_eq!(delete_prefix(&mut env, "user/row/p/"), 600);
        assert_eq!(count(&mut env, "user/"), 1);
    }

    #[test]
    fn event_counts_round_trip() {
        let mut env = TestEnv::new();
        count_event(&mut env, "timer");
        count_event(&mut env, "timer");
        count_event(&mut env, "init");
        let c = event_counts(&mut env);
        assert_eq!(c.get("timer"), Some(&2));
        assert_eq!(c.get("init"), Some(&1));
    }
}
