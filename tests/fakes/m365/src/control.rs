//! The control API (HTTP/JSON on its own loopback port, or called in-process): tests and the demo
//! create users and apps, act as the Teams client, add calendar data, inject faults and read back
//! what the connector did. Sans-IO like the rest: `control(method, path, body) -> (status, json)`.

use serde_json::{Value, json};

use crate::config::Config;
use crate::core::{Fake, Fault};
use crate::tenant::{AppReg, UserSpec};

fn bad(m: impl std::fmt::Display) -> (u16, Value) {
    (400, json!({ "error": m.to_string() }))
}

impl Fake {
    /// Handle one control request. See the crate docs for the endpoint list.
    pub fn control(&mut self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.tick();
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        let s = |k: &str| body[k].as_str().map(str::to_string);
        match (method, segs.as_slice()) {
            ("GET", ["control", "tenant"]) => (
                200,
                json!({"tenantId": self.tenant_id, "domain": self.domain, "users": self.users.len(), "cloud": self.cfg.cloud, "now": self.now()}),
            ),
            ("POST", ["control", "users"]) => match serde_json::from_value::<UserSpec>(body) {
                Ok(spec) if !spec.display_name.is_empty() => (
                    201,
                    serde_json::to_value(self.add_user(spec)).unwrap_or_default(),
                ),
                Ok(_) => bad("displayName is required"),
                Err(e) => bad(e),
            },
            ("POST", ["control", "populate"]) => {
                let n = body["count"].as_u64().unwrap_or(100) as usize;
                let seed = body["seed"].as_u64().unwrap_or(1);
                (200, json!({"users": self.populate(n, seed)}))
            }
            ("GET", ["control", "users"]) => (
                200,
                json!(
                    self.users
                        .by_id
                        .values()
                        .map(|e| &e.user)
                        .collect::<Vec<_>>()
                ),
            ),
            ("PATCH", ["control", "users", id]) => (
                if self.update_user(id, &body) {
                    200
                } else {
                    404
                },
                json!({}),
            ),
            ("DELETE", ["control", "users", id]) => (
                if self.delete_user(id, body["permanent"].as_bool().unwrap_or(false)) {
                    204
                } else {
                    404
                },
                json!({}),
            ),
            ("POST", ["control", "apps"]) => match serde_json::from_value::<AppReg>(body) {
                Ok(mut a) => {
                    if a.client_id.is_empty() {
                        a.client_id = self.new_guid();
                    }
                    self.add_app(a.clone());
                    (201, serde_json::to_value(a).unwrap_or_default())
                }
                Err(e) => bad(e),
            },
            ("POST", ["control", "token"]) => {
                // Shortcut for tests: mint a token without the token endpoint.
                let scopes: Vec<String> = body["scopes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let t = self.issue_token(
                    &s("clientId").unwrap_or_default(),
                    s("user").as_deref(),
                    &refs,
                );
                (200, json!({"access_token": t}))
            }
            ("POST", ["control", "aadsts"]) => {
                let code = body["code"].as_u64().map(|c| c as u32);
                if let Some(u) = s("user") {
                    self.script_user_error(&u, code);
                } else if let Some(a) = s("clientId") {
                    self.script_app_error(&a, code);
                } else {
                    return bad("user or clientId required");
                }
                (200, json!({}))
            }
            ("POST", ["control", "revoke"]) => {
                self.revoke_refresh_tokens(&s("user").unwrap_or_default());
                (200, json!({}))
            }
            ("POST", ["control", "device", "approve"]) => (
                if self.approve_device_code(
                    &s("userCode").unwrap_or_default(),
                    &s("user").unwrap_or_default(),
                ) {
                    200
                } else {
                    404
                },
                json!({}),
            ),
            ("POST", ["control", "device", "decline"]) => (
                if self.decline_device_code(&s("userCode").unwrap_or_default()) {
                    200
                } else {
                    404
                },
                json!({}),
            ),
            ("POST", ["control", "presence", "teams"]) => match self.teams_client_presence(
                &s("user").unwrap_or_default(),
                s("session").as_deref(),
                &s("availability").unwrap_or("Available".into()),
                &s("activity").unwrap_or("Available".into()),
            ) {
                Ok(()) => (200, json!({})),
                Err(e) => (404, json!({ "error": e })),
            },
            ("POST", ["control", "presence", "signout"]) => {
                self.teams_client_signout(&s("user").unwrap_or_default(), s("session").as_deref());
                (200, json!({}))
            }
            ("POST", ["control", "presence", "oof"]) => {
                self.set_out_of_office(
                    &s("user").unwrap_or_default(),
                    body["on"].as_bool().unwrap_or(true),
                );
                (200, json!({}))
            }
            ("GET", ["control", "presence", id]) => match self.current_presence(id) {
                Some((a, b)) => {
                    let uid = self.resolve_user(id).unwrap_or_default();
                    (
                        200,
                        json!({"availability": a, "activity": b, "detail": self.presence_detail(&uid)}),
                    )
                }
                None => (404, json!({})),
            },
            ("POST", ["control", "events"]) => {
                match self.add_event(&s("user").unwrap_or_default(), body["event"].clone()) {
                    Ok(id) => (201, json!({ "id": id })),
                    Err(e) => bad(e),
                }
            }
            ("PATCH", ["control", "events", id]) => {
                match self.update_event(&s("user").unwrap_or_default(), id, &body["patch"]) {
                    Ok(()) => (200, json!({})),
                    Err(e) => (404, json!({ "error": e })),
                }
            }
            ("DELETE", ["control", "events", id]) => (
                if self.delete_event(&s("user").unwrap_or_default(), id) {
                    204
                } else {
                    404
                },
                json!({}),
            ),
            ("POST", ["control", "events", "exception"]) => {
                let patch = if body["cancel"].as_bool() == Some(true) {
                    None
                } else {
                    Some(body["patch"].clone())
                };
                (
                    if self.set_occurrence_exception(
                        &s("user").unwrap_or_default(),
                        &s("eventId").unwrap_or_default(),
                        &s("date").unwrap_or_default(),
                        patch,
                    ) {
                        200
                    } else {
                        404
                    },
                    json!({}),
                )
            }
            ("POST", ["control", "contacts"]) => {
                match self.add_contact(&s("user").unwrap_or_default(), body["contact"].clone()) {
                    Ok(id) => (201, json!({ "id": id })),
                    Err(e) => bad(e),
                }
            }
            ("POST", ["control", "faults"]) => match serde_json::from_value::<Fault>(body) {
                Ok(f) => {
                    self.add_fault(f);
                    (200, json!({}))
                }
                Err(e) => bad(e),
            },
            ("DELETE", ["control", "faults"]) => {
                self.clear_faults();
                (204, json!({}))
            }
            ("POST", ["control", "clock"]) => {
                if let Some(ms) = body["skewMs"].as_i64() {
                    self.set_skew(ms);
                }
                if let Some(ms) = body["advanceMs"].as_i64() {
                    self.set_skew(self.skew_ms + ms);
                }
                (200, json!({"now": self.now(), "skewMs": self.skew_ms}))
            }
            ("GET", ["control", "config"]) => {
                (200, serde_json::to_value(&self.cfg).unwrap_or_default())
            }
            ("PATCH", ["control", "config"]) => {
                let mut cur = serde_json::to_value(&self.cfg).unwrap_or_default();
                if let (Some(c), Some(p)) = (cur.as_object_mut(), body.as_object()) {
                    for (k, v) in p {
                        c.insert(k.clone(), v.clone());
                    }
                }
                match serde_json::from_value::<Config>(cur) {
                    Ok(c) => {
                        self.cfg = c;
                        (200, serde_json::to_value(&self.cfg).unwrap_or_default())
                    }
                    Err(e) => bad(e),
                }
            }
            ("GET", ["control", "requests"]) => (
                200,
                serde_json::to_value(self.requests()).unwrap_or_default(),
            ),
            ("DELETE", ["control", "requests"]) => {
                self.seen.clear();
                (204, json!({}))
            }
            ("GET", ["control", "subscriptions"]) => (
                200,
                serde_json::to_value(self.subscriptions()).unwrap_or_default(),
            ),
            ("POST", ["control", "subscriptions", id, "outage"]) => (
                if self.set_subscription_outage(id, body["on"].as_bool().unwrap_or(true)) {
                    200
                } else {
                    404
                },
                json!({}),
            ),
            ("POST", ["control", "subscriptions", id, "lifecycle"]) => (
                if self.lifecycle_event(id, &s("event").unwrap_or_default()) {
                    200
                } else {
                    404
                },
                json!({}),
            ),
            ("GET", ["control", "deliveries"]) => (
                200,
                serde_json::to_value(self.deliveries()).unwrap_or_default(),
            ),
            ("POST", ["control", "jwks", "rotate"]) => {
                self.rotate_signing_key();
                (200, self.jwks())
            }
            // The `validationTokens` entry Graph would put into a rich notification for
            // `appId`, so a load driver can post notifications exactly as Graph sends them.
            ("POST", ["control", "validation-token"]) => match body["appId"].as_str() {
                Some(app) => (200, json!({ "token": self.validation_token(app) })),
                None => bad("appId is required"),
            },
            ("POST", ["control", "delta", "invalidate"]) => {
                self.invalidate_delta_tokens();
                (200, json!({}))
            }
            _ => (
                404,
                json!({"error": format!("no control endpoint {method} {path}")}),
            ),
        }
    }
}
