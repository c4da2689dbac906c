//! Per-user licence checks with `PbxAdminApi CheckAppLic` (innovaphone.md §6). The result is
//! kept in KV under `user/lic/<guid>` (`1` licensed, `0` not) so that changes can be detected.

use serde_json::{Value, json};

use crate::env::Env;
use crate::store;

/// `CheckAppLic` for a user by guid.
pub fn request(guid: &str, licence: &str) -> Value {
    json!({
        "api": "PbxAdminApi",
        "mt": "CheckAppLic",
        "src": format!("lic:{guid}"),
        "guid": guid,
        "lic": licence,
    })
}

/// The user guid a `CheckAppLicResult` refers to.
pub fn parse_src(src: &str) -> Option<&str> {
    src.strip_prefix("lic:").filter(|g| !g.is_empty())
}

fn key(guid: &str) -> String {
    format!("user/lic/{}", store::segment(guid))
}

/// The last known licence state of a user.
pub fn get(env: &mut impl Env, guid: &str) -> Option<bool> {
    env.kv_get(&key(guid)).map(|v| v == b"1")
}

/// Records a licence state; returns whether it differs from what was known before.
pub fn record(env: &mut impl Env, guid: &str, licensed: bool) -> bool {
    let before = get(env, guid);
    env.kv_set(&key(guid), if licensed { b"1" } else { b"0" });
    before != Some(licensed)
}
