//! PbxApi presence (innovaphone.md §4): setting the connector's own presence item and
//! monitoring users' presence.
//!
//! Correlation lives in `src` itself (`sp:<guid>:<activity>`, `pr:<guid>`), so a result that
//! arrives after a hot swap or restart is still understood without in-memory bookkeeping.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The PBX's activity for "on the phone".
pub const ON_THE_PHONE: &str = "on-the-phone";

/// Product decision: if the PBX refuses `on-the-phone`, fall back to `busy` with this note.
pub const TEAMS_CALL_NOTE: &str = "In a Teams call";

/// One item of a user's presence list (newest first in `PresenceUpdate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceItem {
    /// Source of the item (`tel:`, `im:`, `teams:` ...).
    #[serde(default)]
    pub contact: String,
    /// `open` or `closed`.
    #[serde(default)]
    pub status: String,
    /// Activity; empty means available.
    #[serde(default)]
    pub activity: String,
    /// Free text.
    #[serde(default)]
    pub note: String,
}

/// `SetPresence` for `guid` on the connector's own `contact`. Empty activity and note unset it.
pub fn set_request(guid: &str, contact: &str, activity: &str, note: &str) -> Value {
    json!({
        "api": "PbxApi",
        "mt": "SetPresence",
        "src": format!("sp:{guid}:{activity}"),
        "guid": guid,
        "contact": contact,
        "activity": activity,
        "note": note,
    })
}

/// `SubscribePresence` for a user by SIP name, correlated by guid.
pub fn subscribe_request(sip: &str, guid: &str) -> Value {
    json!({"api": "PbxApi", "mt": "SubscribePresence", "sip": sip, "src": format!("pr:{guid}")})
}

/// `UnsubscribePresence` for a user.
pub fn unsubscribe_request(sip: &str, guid: &str) -> Value {
    json!({"api": "PbxApi", "mt": "UnsubscribePresence", "sip": sip, "src": format!("pr:{guid}")})
}

/// The user guid and activity a `SetPresenceResult` refers to.
pub fn parse_set_src(src: &str) -> Option<(&str, &str)> {
    src.strip_prefix("sp:")?.split_once(':')
}

/// The user guid a presence monitor message refers to.
pub fn parse_monitor_src(src: &str) -> Option<&str> {
    src.strip_prefix("pr:").filter(|g| !g.is_empty())
}

/// The presence items of a `PresenceUpdate`; malformed items are skipped.
pub fn items(msg: &Value) -> Vec<PresenceItem> {
    msg.get("presence")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| serde_json::from_value(i.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The error text of a result message, if it reports one (`error` and/or `errorText`).
pub fn error_of(msg: &Value) -> Option<String> {
    let text = msg.get("errorText").and_then(Value::as_str);
    match (msg.get("error"), text) {
        (None | Some(Value::Null), None) => None,
        (_, Some(t)) if !t.is_empty() => Some(t.to_string()),
        (Some(e), _) => Some(format!("error {e}")),
        (None, Some(_)) => Some("error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_round_trips() {
        let m = set_request("abc", "teams:", ON_THE_PHONE, "");
        assert_eq!(
            parse_set_src(m["src"].as_str().unwrap()),
            Some(("abc", ON_THE_PHONE))
        );
        assert_eq!(parse_monitor_src("pr:abc"), Some("abc"));
        assert_eq!(parse_monitor_src("pr:"), None);
        assert_eq!(parse_set_src("zz"), None);
    }

    #[test]
    fn items_skip_garbage() {
        let msg = json!({"presence":[{"contact":"tel:","status":"open","activity":"away","note":"x"}, 5, {"contact":"im:"}]});
        let it = items(&msg);
        assert_eq!(it.len(), 2);
        assert_eq!(it[0].activity, "away");
        assert_eq!(it[1].contact, "im:");
    }

    #[test]
    fn errors_are_recognised() {
        assert_eq!(error_of(&json!({"mt":"SetPresenceResult"})), None);
        assert_eq!(
            error_of(&json!({"error":3,"errorText":"unknown user"})).as_deref(),
            Some("unknown user")
        );
        assert_eq!(error_of(&json!({"error":3})).as_deref(), Some("error 3"));
    }
}
