//! The Graph writes of F2 (graph.md 4.5-4.7) and how they travel: `POST /$batch` with up to
//! [`MAX_REQUESTS`] requests (graph.md 7.1), a user's second write `dependsOn` its first so
//! Graph never reorders one user's states.

use serde_json::{Value, json};

use super::mapping::{IN_A_CALL, Pair, preferred_lifetime};

/// Graph's limit of requests per `$batch`.
pub const MAX_REQUESTS: usize = 20;

/// Lifetime of the call session; renewed well before it ends (product.md F2).
pub const CALL_EXPIRATION: &str = "PT10M";
/// [`CALL_EXPIRATION`] in milliseconds.
pub const CALL_EXPIRATION_MS: u64 = 10 * 60 * 1000;

/// One presence write for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `setPresence` Busy/InACall with the app's session (also the renewal).
    SetCall,
    /// `clearPresence` of the app's session.
    ClearCall,
    /// `setUserPreferredPresence`.
    SetPreferred(Pair),
    /// `clearUserPreferredPresence`.
    ClearPreferred,
}

impl Op {
    /// The Graph action name.
    pub fn action(&self) -> &'static str {
        match self {
            Op::SetCall => "setPresence",
            Op::ClearCall => "clearPresence",
            Op::SetPreferred(_) => "setUserPreferredPresence",
            Op::ClearPreferred => "clearUserPreferredPresence",
        }
    }

    /// A short description for logs and the audit trail, e.g. `setPresence Busy/InACall`.
    pub fn describe(&self) -> String {
        match self {
            Op::SetCall => format!("setPresence {}/{}", IN_A_CALL.0, IN_A_CALL.1),
            Op::SetPreferred((a, b)) => format!("setUserPreferredPresence {a}/{b}"),
            other => other.action().to_string(),
        }
    }

    fn body(&self, client_id: &str) -> Value {
        match self {
            Op::SetCall => json!({
                "sessionId": client_id,
                "availability": IN_A_CALL.0,
                "activity": IN_A_CALL.1,
                "expirationDuration": CALL_EXPIRATION,
            }),
            Op::ClearCall => json!({"sessionId": client_id}),
            Op::SetPreferred(p) => json!({
                "availability": p.0,
                "activity": p.1,
                "expirationDuration": preferred_lifetime(*p),
            }),
            Op::ClearPreferred => json!({}),
        }
    }

    /// This write as one request of a `$batch`.
    pub fn batch_request(
        &self,
        id: &str,
        user: &str,
        depends_on: Option<&str>,
        client_id: &str,
    ) -> Value {
        let mut r = json!({
            "id": id,
            "method": "POST",
            "url": format!("/users/{user}/presence/{}", self.action()),
            "headers": {"Content-Type": "application/json"},
            "body": self.body(client_id),
        });
        if let Some(d) = depends_on {
            r["dependsOn"] = json!([d]);
        }
        r
    }
}

/// One answer inside a `$batch` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request id.
    pub id: String,
    /// Its own status.
    pub status: u16,
    /// `Retry-After` of a throttled request, in ms.
    pub retry_after_ms: Option<u64>,
    /// `error.code` and `error.message`, if any.
    pub error: String,
}

/// The answers of a `$batch` response body; `None` if it is not one.
pub fn answers(body: &[u8]) -> Option<Vec<Answer>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = v.get("responses")?.as_array()?;
    Some(
        list.iter()
            .map(|r| {
                let retry = r
                    .get("headers")
                    .and_then(Value::as_object)
                    .and_then(|h| {
                        h.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                            .map(|(_, v)| v.clone())
                    })
                    .and_then(|v| {
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    })
                    .map(|s| s.min(3600) * 1000);
                let err = &r["body"]["error"];
                let error = match (err["code"].as_str(), err["message"].as_str()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ => String::new(),
                };
                Answer {
                    id: r["id"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| r["id"].to_string()),
                    status: r["status"].as_u64().unwrap_or(0) as u16,
                    retry_after_ms: retry,
                    error,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_documented_shapes() {
        let r = Op::SetCall.batch_request("1", "u1", None, "cid");
        assert_eq!(r["url"], "/users/u1/presence/setPresence");
        assert_eq!(r["headers"]["Content-Type"], "application/json");
        assert_eq!(
            r["body"],
            json!({"sessionId":"cid","availability":"Busy","activity":"InACall","expirationDuration":"PT10M"})
        );
        assert!(r.get("dependsOn").is_none());
        let r = Op::SetPreferred(("Away", "Away")).batch_request("2", "u1", Some("1"), "cid");
        assert_eq!(r["dependsOn"], json!(["1"]));
        assert_eq!(r["body"]["expirationDuration"], "P7D");
        let r = Op::ClearPreferred.batch_request("3", "u1", None, "cid");
        assert_eq!(r["url"], "/users/u1/presence/clearUserPreferredPresence");
        assert_eq!(r["body"], json!({}));
        let r = Op::ClearCall.batch_request("4", "u1", None, "cid");
        assert_eq!(r["body"], json!({"sessionId":"cid"}));
    }

    #[test]
    fn answers_carry_status_and_retry_after() {
        let body = json!({"responses":[
            {"id":"2","status":200,"body":{}},
            {"id":"1","status":429,"headers":{"Retry-After":"7"},"body":{"error":{"code":"TooManyRequests","message":"slow"}}},
            {"id":"3","status":424}
        ]});
        let a = answers(body.to_string().as_bytes()).unwrap();
        assert_eq!(a[0].status, 200);
        assert_eq!(a[1].retry_after_ms, Some(7000));
        assert_eq!(a[1].error, "TooManyRequests: slow");
        assert_eq!((a[2].id.as_str(), a[2].status), ("3", 424));
        assert!(answers(b"<html>").is_none());
    }
}
