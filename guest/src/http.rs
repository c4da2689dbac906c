//! Routing of inbound HTTP requests (paths are below the instance prefix `/<domain>/<instance>`).
//!
//! `GET /status` (JSON: versions, uptime, event counts, PBX connections, F1 matching and
//! subscriptions); `GET`/`POST /provisioning` (the App objects to create; create or update
//! `microsoft365-api`, admin session only, see `crate::provisioning`); everything else is 404,
//! as the notification URL must be for a browser GET (product.md F5). Graph's
//! `POST /subscriptions` and `POST /lifecycle` never reach this module: the connector hands
//! them to `presence_in::sync`.

use serde_json::{Value, json};

use crate::env::Env;
use crate::event::{HttpResponse, InboundRequest};
use crate::graph::tokens::{AuthState, Tokens};
use crate::pbx::{Pbx, users};
use crate::store;

/// What the status page needs from the connector.
pub struct StatusInput<'a> {
    /// `guest.version()`.
    pub version: &'a str,
    /// When this guest instance was initialised (ms since the epoch).
    pub started_ms: u64,
    /// The PBX connections.
    pub pbx: &'a Pbx,
    /// Token states.
    pub tokens: &'a Tokens,
    /// Configured Teams accounts.
    pub accounts: &'a [String],
    /// Teams -> PBX presence status (matching, subscriptions), when configured.
    pub presence: Option<Value>,
    /// Calendar presence status (users, subscriptions), when configured.
    pub calendar: Option<Value>,
    /// PBX -> Teams presence status (sign-in, monitors, writes), when configured.
    pub presence_out: Option<Value>,
    /// Contact search status (sign-in, searches answered), when configured.
    pub contact_search: Option<Value>,
}

/// Answers one request.
pub fn route(env: &mut impl Env, req: &InboundRequest, status: &StatusInput) -> HttpResponse {
    // Trailing slashes and a query string do not change the resource.
    let path = req.path.trim_end_matches('/');
    match (req.method.as_str(), path) {
        ("GET" | "HEAD", "/status") => {
            let mut resp = HttpResponse::json(200, &status_json(env, status));
            if req.method == "HEAD" {
                resp.body.clear();
            }
            resp
        }
        (_, "/status") => {
            let mut resp = HttpResponse::text(405, "method not allowed\n");
            resp.headers
                .push(crate::event::Header::new("allow", "GET, HEAD"));
            resp
        }
        (_, "/provisioning") => {
            // Showing the objects is harmless (no secrets); changing the PBX needs an admin.
            let admin = req.method == "GET" || crate::admin::auth::session(env, req).is_some();
            crate::provisioning::route(env, req, status.pbx, admin)
        }
        _ => HttpResponse::text(404, "not found\n"),
    }
}

/// The `/status` figures (also the admin page's source for its lights).
pub fn status_json(env: &mut impl Env, s: &StatusInput) -> Value {
    let uptime_ms = env.now_ms().saturating_sub(s.started_ms);
    let events = store::event_counts(env);
    let mut connections = Vec::new();
    for c in s.pbx.connections() {
        let users = match &c.pbx {
            Some(p) => users::count(env, p),
            None => 0,
        };
        connections.push(json!({
            "id": c.ws,
            "peer": c.peer,
            "logged_in": c.login.is_some(),
            "app": c.login.as_ref().map(|l| l.app.as_str()),
            "pbx": c.pbx,
            "apis": c.apis,
            "replication": format!("{:?}", c.users).to_lowercase(),
            "users": users,
        }));
    }
    // No codes, tokens or secrets here: this page is reachable without a login. A device-code
    // user code is only logged, since whoever enters it decides whose account signs in.
    let accounts: Vec<Value> = s
        .accounts
        .iter()
        .map(|name| {
            let (state, advice) = match s.tokens.state(name) {
                Some(AuthState::Idle) | None => ("idle", None),
                Some(AuthState::Requesting) => ("requesting", None),
                Some(AuthState::AwaitingDeviceSignIn { .. }) => ("awaiting-device-sign-in", None),
                Some(AuthState::Ready) => ("ready", None),
                Some(AuthState::Failed(e)) => ("failed", Some(e.to_string())),
            };
            json!({"name": name, "state": state, "advice": advice})
        })
        .collect();
    json!({
        "name": "microsoft365",
        "accounts": accounts,
        "version": s.version,
        "api_version": crate::API_VERSION,
        "schema_version": store::get_u64(env, store::SCHEMA_KEY),
        "uptime_s": uptime_ms / 1000,
        "events": events,
        "master": s.pbx.master().and_then(|c| c.pbx.clone()),
        "pbx": connections,
        "presence": s.presence,
        "calendar": s.calendar,
        "presence_out": s.presence_out,
        "contact_search": s.contact_search,
    })
}
