//! The Teams states the connector itself asserts for a user, so the Teams -> PBX direction (F1)
//! can tell its own writes coming back in a notification from a change the user made.
//!
//! KV `presence-out/own/<entra id>`: the state Teams shows because of the connector (its call
//! session or its preferred presence) and when it lapses there, plus the states it asserted
//! before, each remembered for [`GRACE_MS`] after it was replaced or lapsed: notifications
//! arrive up to a minute late (graph.md 4.4), so a late echo of a state already withdrawn is
//! still recognised, while the user's own identical state long after a lapse is not.

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::store;

const PREFIX: &str = "presence-out/own/";

/// How long a withdrawn state is still recognised as the connector's own.
pub const GRACE_MS: u64 = 90_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Own {
    /// The state and when it lapses in Teams (a preferred presence's lifetime, a call
    /// session's expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<(String, String, u64)>,
    /// Replaced states and until when they still count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    previous: Vec<(String, String, u64)>,
}

fn key(entra_id: &str) -> String {
    format!("{PREFIX}{}", store::segment(&entra_id.to_ascii_lowercase()))
}

/// Records that Teams now shows `state` for the user because of the connector, until the
/// given time (`None`: nothing of the connector's shows any more).
pub fn assert_state(env: &mut impl Env, entra_id: &str, state: Option<(&str, &str, u64)>) {
    let k = key(entra_id);
    let mut own: Own = store::get_json(env, &k).unwrap_or_default();
    let now = env.now_ms();
    let new = state.map(|(a, b, until)| (a.to_string(), b.to_string(), until));
    if own.current == new {
        return;
    }
    own.previous.retain(|p| p.2 > now);
    if let Some((a, b, lapses)) = own.current.take() {
        own.previous.retain(|p| !(p.0 == a && p.1 == b));
        own.previous.push((a, b, now.min(lapses) + GRACE_MS));
    }
    own.current = new;
    if own == Own::default() {
        env.kv_delete(&k);
    } else {
        store::set_json(env, &k, &own);
    }
}

/// Whether a Teams presence of the user is (most likely) the connector's own write coming back.
pub fn is_own(env: &mut impl Env, entra_id: &str, availability: &str, activity: &str) -> bool {
    let Some(own) = store::get_json::<Own>(env, &key(entra_id)) else {
        return false;
    };
    let now = env.now_ms();
    let same =
        |a: &str, b: &str| a.eq_ignore_ascii_case(availability) && b.eq_ignore_ascii_case(activity);
    // A state counts as ours while it lasts in Teams and for the grace time after it lapsed.
    own.current
        .as_ref()
        .is_some_and(|(a, b, lapses)| lapses + GRACE_MS > now && same(a, b))
        || own
            .previous
            .iter()
            .any(|(a, b, until)| *until > now && same(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn current_and_recently_replaced_states_are_own() {
        let mut env = TestEnv::new();
        assert!(!is_own(&mut env, "U1", "Busy", "InACall"));
        let day = env.now_ms + 24 * 3600 * 1000;
        assert_state(&mut env, "U1", Some(("Busy", "InACall", day)));
        assert!(is_own(&mut env, "u1", "busy", "inacall"));
        assert!(!is_own(&mut env, "U1", "Away", "Away"));
        assert_state(&mut env, "U1", Some(("Away", "Away", day)));
        // A late notification of the call is still ours for a while, then it is not.
        assert!(is_own(&mut env, "U1", "Busy", "InACall"));
        env.now_ms += GRACE_MS + 1;
        assert!(!is_own(&mut env, "U1", "Busy", "InACall"));
        assert!(is_own(&mut env, "U1", "Away", "Away"));
        assert_state(&mut env, "U1", None);
        env.now_ms += GRACE_MS + 1;
        assert!(!is_own(&mut env, "U1", "Away", "Away"));
    }

    #[test]
    fn a_lapsed_state_is_no_longer_own() {
        // Found by the simulation host (seed 35): a preferred presence lapses in Teams after a
        // day; the user's own identical state after that is a real change, not an echo.
        let mut env = TestEnv::new();
        let day = env.now_ms + 24 * 3600 * 1000;
        assert_state(&mut env, "U1", Some(("DoNotDisturb", "DoNotDisturb", day)));
        env.now_ms = day;
        assert!(is_own(&mut env, "U1", "DoNotDisturb", "DoNotDisturb"));
        env.now_ms = day + GRACE_MS + 1;
        assert!(!is_own(&mut env, "U1", "DoNotDisturb", "DoNotDisturb"));
    }
}
