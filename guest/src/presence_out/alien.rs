//! Option `presence-out.alien-calls`: while Teams says a user is in a call, the PBX user is
//! busy for PBX calls through an alien call ([`crate::pbx::monitor`]); it is removed when the
//! Teams call ends.
//!
//! The Teams side (F1) reports every Teams presence that is not the connector's own echo with
//! [`teams_presence`]; a change puts the user in `presence-out/alien-due/`, which
//! [`super::PresenceOut::after_event`] works off. The alien call itself shows on-the-phone in
//! the PBX: F2 does not carry that back to Teams ([`active`]).
//!
//! KV: `presence-out/teams-call/<pbx guid>` (`true`/`false`: Teams says in a call),
//! `presence-out/alien-due/<pbx guid>`, `presence-out/alien/<pbx guid>` ([`AlienCall`]).

use serde::{Deserialize, Serialize};

use crate::env::{Env, Level, target};
use crate::event::WsId;
use crate::store;

const TEAMS_CALL_PREFIX: &str = "presence-out/teams-call/";
/// Users whose alien call may need to be added or removed.
pub const DUE_PREFIX: &str = "presence-out/alien-due/";
const STATE_PREFIX: &str = "presence-out/alien/";

/// One user's alien call, from `CreateApi` to its removal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlienCall {
    /// The PBX connection it lives on (the PBX drops it when the connection closes).
    pub ws: WsId,
    /// The impersonated API (`PbxApi.<n>`), once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The alien call's id, once added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The Teams call ended while the call was being set up: remove it once it exists.
    #[serde(default)]
    pub removing: bool,
}

fn key(prefix: &str, guid: &str) -> String {
    format!("{prefix}{}", store::segment(guid))
}

/// Whether a Teams activity is a call.
fn is_call(activity: &str) -> bool {
    matches!(
        activity.trim().to_ascii_lowercase().as_str(),
        "inacall" | "inaconferencecall"
    )
}

/// Whether the option `presence-out.alien-calls` is on (F1 reads it once per start, not
/// for every presence it applies).
pub fn enabled(env: &mut impl Env) -> bool {
    crate::settings::value(env, "presence-out.alien-calls")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

/// F1 saw this Teams presence for PBX user `guid` (not an echo of F2's own writes).
pub fn teams_presence(env: &mut impl Env, guid: &str, activity: &str) {
    if !enabled(env) {
        return;
    }
    let in_call = is_call(activity);
    let k = key(TEAMS_CALL_PREFIX, guid);
    if store::get_json::<bool>(env, &k) != Some(in_call) {
        store::set_json(env, &k, &in_call);
        env.kv_set(&key(DUE_PREFIX, guid), b"");
    }
}

/// Whether Teams says the user is in a call.
pub fn in_teams_call(env: &mut impl Env, guid: &str) -> bool {
    store::get_json::<bool>(env, &key(TEAMS_CALL_PREFIX, guid)).unwrap_or(false)
}

/// Users in a Teams call (to add their alien calls again after a PBX reconnected).
pub fn teams_calls(env: &mut impl Env) -> Vec<String> {
    let mut out = Vec::new();
    store::for_each(env, TEAMS_CALL_PREFIX, |k, v| {
        if v == b"true" {
            out.push(k[TEAMS_CALL_PREFIX.len()..].to_string());
        }
    });
    out
}

/// Marks a user for a look at its alien call.
pub fn mark_due(env: &mut impl Env, guid: &str) {
    env.kv_set(&key(DUE_PREFIX, guid), b"");
}

/// Takes up to `limit` due users.
pub fn take_due(env: &mut impl Env, limit: usize) -> Vec<String> {
    let keys: Vec<String> = store::keys(env, DUE_PREFIX)
        .into_iter()
        .take(limit)
        .collect();
    keys.iter()
        .map(|k| {
            env.kv_delete(k);
            k[DUE_PREFIX.len()..].to_string()
        })
        .collect()
}

/// The user's alien call, if one exists or is being set up.
pub fn get(env: &mut impl Env, guid: &str) -> Option<AlienCall> {
    store::get_json(env, &key(STATE_PREFIX, guid))
}

/// Stores (or with `None` forgets) the user's alien call.
pub fn put(env: &mut impl Env, guid: &str, call: Option<&AlienCall>) {
    match call {
        Some(c) => store::set_json(env, &key(STATE_PREFIX, guid), c),
        None => env.kv_delete(&key(STATE_PREFIX, guid)),
    }
}

/// Whether the connector holds an alien call for the user: its on-the-phone is ours.
pub fn active(env: &mut impl Env, guid: &str) -> bool {
    get(env, guid).is_some()
}

/// Forgets the alien calls of connection `ws` (the PBX dropped them with the connection).
pub fn forget_connection(env: &mut impl Env, ws: WsId) -> Vec<String> {
    let mut gone = Vec::new();
    store::for_each(env, STATE_PREFIX, |k, v| {
        if serde_json::from_slice::<AlienCall>(v).is_ok_and(|c| c.ws == ws) {
            gone.push(k[STATE_PREFIX.len()..].to_string());
        }
    });
    for g in &gone {
        put(env, g, None);
    }
    if !gone.is_empty() {
        env.log(
            Level::Info,
            target::APP,
            &format!("{} alien calls ended with PBX connection {ws}", gone.len()),
        );
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn only_changes_of_a_teams_call_make_a_user_due_and_only_when_enabled() {
        let mut env = TestEnv::new();
        teams_presence(&mut env, "g1", "InACall");
        assert!(take_due(&mut env, 10).is_empty(), "option off");
        env.set_config("presence-out.alien-calls", "true");
        teams_presence(&mut env, "g1", "InACall");
        teams_presence(&mut env, "g1", "InAConferenceCall");
        assert_eq!(take_due(&mut env, 10), vec!["g1"]);
        assert!(in_teams_call(&mut env, "g1"));
        assert_eq!(teams_calls(&mut env), vec!["g1"]);
        teams_presence(&mut env, "g1", "Available");
        assert_eq!(take_due(&mut env, 10), vec!["g1"]);
        assert!(!in_teams_call(&mut env, "g1"));
        assert!(take_due(&mut env, 10).is_empty());
    }
}
