//! Alien calls (innovaphone.md §5.2): a Teams call makes the PBX user busy for PBX calls.
//! `AddAlienCall` has no user field, so it is sent on a `PbxImpersonation` API created for the
//! user (`CreateApi {sip, target: "PbxApi"}` -> `PbxApi.<n>`), and removed with `DelAlienCall`
//! and `DeleteApi` when the Teams call ends.
//!
//! Correlation is in `src` (`al:<user guid>`), so results are understood without bookkeeping
//! here; the feature that adds the calls (`presence_out::alien`) keeps the state.

use serde_json::{Value, json};

use super::{Pbx, PbxError, send};
use crate::env::Env;
use crate::event::WsId;

/// The API that creates impersonated APIs.
pub const IMPERSONATION: &str = "PbxImpersonation";

const SRC_PREFIX: &str = "al:";

/// Whether frames of `api` are impersonation traffic (`PbxImpersonation`, `PbxApi.<n>`).
pub fn is_impersonation(api: &str) -> bool {
    api == IMPERSONATION || api.strip_prefix("PbxApi.").is_some_and(|n| !n.is_empty())
}

/// The user guid an impersonation result refers to.
pub fn parse_src(src: &str) -> Option<&str> {
    src.strip_prefix(SRC_PREFIX).filter(|g| !g.is_empty())
}

fn src(guid: &str) -> String {
    format!("{SRC_PREFIX}{guid}")
}

impl Pbx {
    fn send_on(&mut self, env: &mut impl Env, ws: WsId, msg: &Value) -> Result<(), PbxError> {
        if !self.conns.get(&ws).is_some_and(|c| c.is_pbx()) {
            return Err(PbxError::NotConnected);
        }
        send(env, ws, msg).then_some(()).ok_or(PbxError::SendFailed)
    }

    /// Creates a `PbxApi` acting as user `sip` on the PBX of `loc` (or the master).
    pub fn create_user_api(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        sip: &str,
        guid: &str,
    ) -> Result<WsId, PbxError> {
        let ws = self.route(loc, IMPERSONATION)?;
        let msg = json!({"api": IMPERSONATION, "mt": "CreateApi", "src": src(guid), "sip": sip, "target": "PbxApi"});
        self.send_on(env, ws, &msg).map(|_| ws)
    }

    /// `AddAlienCall` on the impersonated API `target` (`PbxApi.<n>`).
    pub fn add_alien_call(
        &mut self,
        env: &mut impl Env,
        ws: WsId,
        target: &str,
        guid: &str,
    ) -> Result<(), PbxError> {
        let msg = json!({"api": target, "mt": "AddAlienCall", "src": src(guid)});
        self.send_on(env, ws, &msg)
    }

    /// `DelAlienCall` of call `id`, then `DeleteApi` of `target`.
    pub fn remove_alien_call(
        &mut self,
        env: &mut impl Env,
        ws: WsId,
        target: &str,
        id: u64,
        guid: &str,
    ) -> Result<(), PbxError> {
        let del = json!({"api": target, "mt": "DelAlienCall", "src": src(guid), "id": id});
        self.send_on(env, ws, &del)?;
        self.delete_user_api(env, ws, target, guid)
    }

    /// `DeleteApi` of the impersonated API `target`.
    pub fn delete_user_api(
        &mut self,
        env: &mut impl Env,
        ws: WsId,
        target: &str,
        guid: &str,
    ) -> Result<(), PbxError> {
        let msg =
            json!({"api": IMPERSONATION, "mt": "DeleteApi", "src": src(guid), "target": target});
        self.send_on(env, ws, &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_traffic_is_recognised() {
        assert!(is_impersonation("PbxImpersonation"));
        assert!(is_impersonation("PbxApi.3"));
        assert!(!is_impersonation("PbxApi"));
        assert!(!is_impersonation("PbxApi."));
        assert_eq!(parse_src("al:g1"), Some("g1"));
        assert_eq!(parse_src("pr:g1"), None);
    }
}
