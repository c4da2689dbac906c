//! JSON batching: `POST /$batch` (graph.md 7.1, item 31).

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};

use crate::core::{Caller, Fake, GResult, Handled, gerr, ok_json};
use crate::http::Request;

impl Fake {
    pub(crate) fn batch(&mut self, req: &Request, _caller: &Caller) -> GResult {
        let body = req
            .json_body()
            .ok_or_else(|| gerr(400, "BadRequest", "Invalid batch payload format."))?;
        let reqs = body["requests"]
            .as_array()
            .ok_or_else(|| {
                gerr(
                    400,
                    "BadRequest",
                    "Invalid batch payload format: 'requests' is required.",
                )
            })?
            .clone();
        if reqs.len() > 20 {
            return Err(gerr(
                400,
                "BadRequest",
                "Number of requests exceeds the maximum of 20.",
            ));
        }
        let mut ids = HashSet::new();
        for r in &reqs {
            let id = r["id"]
                .as_str()
                .map(str::to_string)
                .or_else(|| r["id"].as_i64().map(|n| n.to_string()))
                .ok_or_else(|| gerr(400, "BadRequest", "Each batch request must have an id."))?;
            if !ids.insert(id.to_lowercase()) {
                return Err(gerr(400, "BadRequest", "Batch request ids must be unique."));
            }
            let url = r["url"]
                .as_str()
                .ok_or_else(|| gerr(400, "BadRequest", "Each batch request must have a url."))?;
            if url.starts_with("http") {
                return Err(gerr(
                    400,
                    "BadRequest",
                    "Batch request urls must be relative to the version root.",
                ));
            }
            if r["method"].as_str().is_none() {
                return Err(gerr(
                    400,
                    "BadRequest",
                    "Each batch request must have a method.",
                ));
            }
            if !r["body"].is_null() {
                let has_ct = r["headers"]
                    .as_object()
                    .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
                if !has_ct {
                    return Err(gerr(
                        400,
                        "BadRequest",
                        "Write request id : {id} does not contain Content-Type header or body.",
                    ));
                }
            }
        }
        let auth = req.get_header("authorization").unwrap_or("").to_string();
        let mut status: HashMap<String, u16> = HashMap::new();
        let mut out: Vec<Value> = vec![];
        let mut remaining: Vec<Value> = reqs;
        // Run in dependency order; a request whose dependency failed gets 424.
        while !remaining.is_empty() {
            let pos = remaining
                .iter()
                .position(|r| {
                    r["dependsOn"].as_array().is_none_or(|d| {
                        d.iter().all(|x| {
                            x.as_str()
                                .is_some_and(|x| status.contains_key(&x.to_lowercase()))
                        })
                    })
                })
                .unwrap_or(0);
            let r = remaining.remove(pos);
            let id = r["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| r["id"].to_string());
            let deps_failed = r["dependsOn"].as_array().is_some_and(|d| {
                d.iter().any(|x| {
                    x.as_str().is_none_or(|x| {
                        status
                            .get(&x.to_lowercase())
                            .is_none_or(|s| !(200..300).contains(s))
                    })
                })
            });
            let item = if deps_failed {
                json!({"id": id, "status": 424, "body": {"error": {"code": "BadRequest", "message": "Failed dependency"}}})
            } else {
                self.batch_item(&id, &r, &auth)
            };
            status.insert(
                id.to_lowercase(),
                item["status"].as_u64().unwrap_or(500) as u16,
            );
            out.push(item);
        }
        // Responses may come in any order.
        out.shuffle(&mut self.rng);
        ok_json(json!({ "responses": out }))
    }

    fn batch_item(&mut self, id: &str, r: &Value, auth: &str) -> Value {
        let url = r["url"].as_str().unwrap_or("");
        let rel = if url.starts_with('/') {
            url.to_string()
        } else {
            format!("/{url}")
        };
        let mut inner = Request::new(
            r["method"].as_str().unwrap_or("GET"),
            &format!("/v1.0{rel}"),
        )
        .header("Authorization", auth);
        let mut ct = String::new();
        if let Some(h) = r["headers"].as_object() {
            for (k, v) in h {
                let v = v.as_str().unwrap_or("").to_string();
                if k.eq_ignore_ascii_case("content-type") {
                    ct = v.clone();
                }
                inner.headers.push((k.clone(), v));
            }
        }
        match &r["body"] {
            Value::Null => {}
            Value::String(s) if !ct.contains("json") => {
                inner.body = STANDARD.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec())
            }
            v => inner.body = serde_json::to_vec(v).unwrap_or_default(),
        }
        // Requests that need a validation handshake cannot be answered synchronously here.
        let handshake = (inner.method == "POST"
            && inner
                .path()
                .trim_end_matches('/')
                .ends_with("/subscriptions"))
            || (inner.method == "PATCH"
                && inner.path().contains("/subscriptions/")
                && !r["body"]["notificationUrl"].is_null());
        if handshake {
            return json!({"id": id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "Subscription requests with a validation handshake are not supported inside $batch by the fake."}}});
        }
        let path = inner.path().trim_start_matches("/v1.0").to_string();
        match self.graph_entry(&inner, &path) {
            Handled::Response(resp) => {
                let mut headers = Map::new();
                for (k, v) in &resp.headers {
                    if k.eq_ignore_ascii_case("content-type")
                        || k.eq_ignore_ascii_case("retry-after")
                        || k.eq_ignore_ascii_case("location")
                    {
                        headers.insert(k.clone(), json!(v));
                    }
                }
                let body = if resp.body.is_empty() {
                    Value::Null
                } else if resp
                    .get_header("content-type")
                    .is_some_and(|c| c.contains("json"))
                {
                    resp.body_json()
                } else {
                    json!(STANDARD.encode(&resp.body))
                };
                let mut v = json!({"id": id, "status": resp.status, "headers": headers});
                if !body.is_null() {
                    v["body"] = body;
                }
                v
            }
            _ => {
                json!({"id": id, "status": 504, "body": {"error": {"code": "GatewayTimeout", "message": "The inner request timed out."}}})
            }
        }
    }
}
