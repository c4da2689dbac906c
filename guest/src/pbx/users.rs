//! PbxTableUsers replication (innovaphone.md §3): the connector is the replicator, each PBX a
//! publisher. Rows are kept compactly in KV under `user/row/<pbx>/<guid>` with only the
//! columns the connector uses; the resume point (database guid, last usn) under `pbx/repl/<pbx>`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::env::Env;
use crate::store;

/// The `src` tag of replication messages.
pub const SRC: &str = "users";

/// The columns requested in `ReplicateStart` (read-only: no `update`, no `add`/`del`).
pub const COLUMNS: [&str; 7] = ["guid", "h323", "cn", "dn", "e164", "emails", "loc"];

/// One replicated PBX user, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    /// Object GUID (hex).
    pub guid: String,
    /// Name (SIP user part).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub h323: String,
    /// Long Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cn: String,
    /// Display Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dn: String,
    /// Number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e164: String,
    /// E-mail addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// The PBX the user is assigned to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub loc: String,
}

/// Resume point of one PBX's replication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Database guid from `ReplicateStartResult`.
    pub guid: String,
    /// Highest update sequence number seen.
    pub usn: u64,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl UserRow {
    /// Reads a row from the `columns` object of a replication message. Unknown columns are
    /// ignored; a row without a guid cannot be stored and gives `None`.
    pub fn from_columns(columns: &Value) -> Option<UserRow> {
        let obj = columns.as_object()?;
        let get = |k: &str| obj.get(k).map(text).unwrap_or_default();
        let guid = get("guid");
        if guid.is_empty() {
            return None;
        }
        let emails = obj
            .get("emails")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| e.get("email").and_then(Value::as_str))
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(UserRow {
            guid,
            h323: get("h323"),
            cn: get("cn"),
            dn: get("dn"),
            e164: get("e164"),
            emails,
            loc: get("loc"),
        })
    }
}

/// `user/row/<pbx>/` prefix.
pub fn row_prefix(pbx: &str) -> String {
    format!("user/row/{}/", store::segment(pbx))
}

fn row_key(pbx: &str, guid: &str) -> String {
    format!("{}{}", row_prefix(pbx), store::segment(guid))
}

fn resume_key(pbx: &str) -> String {
    format!("pbx/repl/{}", store::segment(pbx))
}

/// Stores (adds or replaces) a row.
pub fn put(env: &mut impl Env, pbx: &str, row: &UserRow) {
    store::set_json(env, &row_key(pbx, &row.guid), row);
}

/// Deletes a row.
pub fn remove(env: &mut impl Env, pbx: &str, guid: &str) {
    env.kv_delete(&row_key(pbx, guid));
}

/// One row.
pub fn get(env: &mut impl Env, pbx: &str, guid: &str) -> Option<UserRow> {
    store::get_json(env, &row_key(pbx, guid))
}

/// Every row replicated from `pbx`, in guid order.
pub fn list(env: &mut impl Env, pbx: &str) -> Vec<UserRow> {
    let mut out = Vec::new();
    store::for_each(env, &row_prefix(pbx), |_, v| {
        if let Ok(row) = serde_json::from_slice(v) {
            out.push(row);
        }
    });
    out
}

/// Number of rows replicated from `pbx`.
pub fn count(env: &mut impl Env, pbx: &str) -> u64 {
    store::count(env, &row_prefix(pbx))
}

/// Deletes every row of `pbx` (its database was replaced).
pub fn clear(env: &mut impl Env, pbx: &str) -> usize {
    store::delete_prefix(env, &row_prefix(pbx))
}

/// The stored resume point of `pbx`.
pub fn resume(env: &mut impl Env, pbx: &str) -> Option<Resume> {
    store::get_json(env, &resume_key(pbx))
}

/// Stores the resume point of `pbx`.
pub fn set_resume(env: &mut impl Env, pbx: &str, r: &Resume) {
    store::set_json(env, &resume_key(pbx), r);
}

/// The `ReplicateStart` request, resuming where the last replication of `pbx` stopped.
pub fn start_request(resume: Option<&Resume>) -> Value {
    let columns: serde_json::Map<String, Value> =
        COLUMNS.iter().map(|c| (c.to_string(), json!({}))).collect();
    let mut msg = json!({
        "api": "PbxTableUsers",
        "mt": "ReplicateStart",
        "src": SRC,
        "columns": columns,
    });
    if let Some(r) = resume.filter(|r| !r.guid.is_empty()) {
        msg["guid"] = json!(r.guid);
        msg["usn"] = json!(r.usn);
    }
    msg
}

/// The `ReplicateNext` request.
pub fn next_request() -> Value {
    json!({"api": "PbxTableUsers", "mt": "ReplicateNext", "src": SRC})
}

/// The `usn` of a message, if it carries one (number or numeric text).
pub fn usn_of(msg: &Value) -> Option<u64> {
    match msg.get("usn")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn row_keeps_only_used_columns_compactly() {
        let cols = json!({"guid":"c9eb","h323":"user0","cn":"User0","config":"Config","node":"root",
            "loc":"master","hide":false,"e164":"201","emails":[{"email":"user0@example.com"}],
            "grps":[{"name":"group1","mode":"active","dyn":"in"}]});
        let row = UserRow::from_columns(&cols).unwrap();
        assert_eq!(row.emails, vec!["user0@example.com"]);
        let stored = serde_json::to_string(&row).unwrap();
        assert_eq!(
            stored,
            r#"{"guid":"c9eb","h323":"user0","cn":"User0","e164":"201","emails":["user0@example.com"],"loc":"master"}"#
        );
    }

    #[test]
    fn row_without_guid_is_refused() {
        assert!(UserRow::from_columns(&json!({"h323":"x"})).is_none());
        assert!(UserRow::from_columns(&json!("garbage")).is_none());
    }

    #[test]
    fn start_request_resumes_when_known() {
        let fresh = start_request(None);
        assert!(fresh.get("guid").is_none());
        assert_eq!(fresh["columns"].as_object().unwrap().len(), COLUMNS.len());
        let r = Resume {
            guid: "db1".into(),
            usn: 42,
        };
        let again = start_request(Some(&r));
        assert_eq!(again["guid"], "db1");
        assert_eq!(again["usn"], 42);
    }

    #[test]
    fn rows_are_kept_per_pbx() {
        let mut env = TestEnv::new();
        let row = UserRow {
            guid: "g1".into(),
            h323: "alice".into(),
            ..Default::default()
        };
        put(&mut env, "master", &row);
        put(&mut env, "slave/1", &row);
        assert_eq!(count(&mut env, "master"), 1);
        assert_eq!(get(&mut env, "slave/1", "g1"), Some(row));
        assert!(env.kv.contains_key("user/row/slave%2F1/g1"));
        assert_eq!(clear(&mut env, "master"), 1);
        assert_eq!(count(&mut env, "slave/1"), 1);
    }
}
