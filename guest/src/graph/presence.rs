//! Reading Teams presence in bulk: `POST /communications/getPresencesByUserId`, at most 650 ids
//! per call (graph.md §4.3), used for reconciliation.

use serde::Deserialize;
use serde_json::json;

use super::api;
use crate::event::{HttpRequest, HttpResponse};

/// Maximum ids per `getPresencesByUserId` call.
pub const MAX_IDS: usize = 650;

/// One user's Teams presence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Presence {
    /// Entra object id.
    #[serde(default)]
    pub id: String,
    /// Availability, e.g. `Busy` (spelling as received).
    #[serde(default)]
    pub availability: String,
    /// Activity, e.g. `InAMeeting` (spelling as received).
    #[serde(default)]
    pub activity: String,
    /// Sortable version stamp, to drop out-of-order updates (absent on some responses).
    #[serde(default, rename = "sequenceNumber")]
    pub sequence_number: Option<String>,
}

/// One request per chunk of at most [`MAX_IDS`] ids.
pub fn requests(graph_url: &str, token: &str, ids: &[String]) -> Vec<HttpRequest> {
    ids.chunks(MAX_IDS)
        .map(|chunk| {
            api::request(
                "POST",
                format!(
                    "{}/communications/getPresencesByUserId",
                    api::root(graph_url)
                ),
                token,
                Some(&json!({ "ids": chunk })),
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct Value {
    #[serde(default)]
    value: Vec<serde_json::Value>,
}

/// Parses the answer; entries without an id are skipped.
pub fn parse(resp: &HttpResponse) -> Result<Vec<Presence>, api::GraphError> {
    let resp = api::check(resp)?;
    let raw: Value = serde_json::from_slice(&resp.body).map_err(|e| api::GraphError {
        status: resp.status,
        code: "invalid_response".into(),
        message: e.to_string(),
        retry_after_ms: None,
    })?;
    Ok(raw
        .value
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Presence>(v).ok())
        .filter(|p| !p.id.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_chunked_by_650() {
        let ids: Vec<String> = (0..1_500).map(|i| format!("id{i}")).collect();
        let reqs = requests("https://graph.microsoft.com", "t", &ids);
        assert_eq!(reqs.len(), 3);
        let sizes: Vec<usize> = reqs
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                v["ids"].as_array().unwrap().len()
            })
            .collect();
        assert_eq!(sizes, vec![650, 650, 200]);
        assert!(requests("https://graph.microsoft.com", "t", &[]).is_empty());
    }

    #[test]
    fn answer_parsed() {
        let body = r#"{"value":[
  {"id":"fa8bf3dc-eca7-46b7-bad1-db199b62afc3","availability":"Busy","activity":"InAMeeting",
   "outOfOfficeSettings":{"message":null,"isOutOfOffice":false}},
  {"id":"66825e03-7ef5-42da-9069-724602c31f6b","availability":"Away","activity":"Away","sequenceNumber":"C01"},
  {"availability":"Away"}, 7]}"#;
        let p = parse(&HttpResponse::text(200, body)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].activity, "InAMeeting");
        assert_eq!(p[1].sequence_number.as_deref(), Some("C01"));
    }
}
