//! Typed clients for the control APIs of the host and the fakes, and for the connector's own
//! HTTP endpoints. Fields the tests do not need stay JSON, so the fakes and the guest can grow
//! without breaking the harness.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Reply, request, request_raw};

/// One entry of the host's `GET /instances`.
#[derive(Debug, Clone, Deserialize)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// Instance domain.
    pub domain: String,
    /// Plugin (component file stem).
    pub plugin: String,
    /// The host's view of the guest (version, state).
    #[serde(default)]
    pub status: Value,
    /// Events handled.
    #[serde(default)]
    pub events: u64,
    /// Traps so far.
    #[serde(default)]
    pub traps: u64,
    /// Dead-lettered events.
    #[serde(default)]
    pub dead_letters: u64,
    /// Completed hot swaps.
    #[serde(default)]
    pub swaps: u64,
    /// Open WebSockets of the instance.
    #[serde(default)]
    pub websockets: u64,
}

/// The host's control listener (`GET /instances`, `POST /instances/<name>/reload`, `/log`).
#[derive(Debug, Clone)]
pub struct HostControl {
    /// `http://127.0.0.1:port`.
    pub url: String,
}

impl HostControl {
    /// Every instance.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>> {
        let v = request("GET", &format!("{}/instances", self.url), None)?.ok_json()?;
        Ok(serde_json::from_value(v)?)
    }

    /// One instance by name.
    pub fn instance(&self, name: &str) -> Result<InstanceInfo> {
        self.instances()?
            .into_iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no instance {name} on the host"))
    }

    /// Asks for a hot swap from the plugins directory; `Err` carries the host's rejection.
    pub fn reload(&self, name: &str) -> Result<String> {
        let r = request(
            "POST",
            &format!("{}/instances/{name}/reload", self.url),
            None,
        )?;
        if r.status != 200 {
            bail!("reload refused ({}): {}", r.status, r.body.trim());
        }
        Ok(r.body.trim().to_string())
    }

    /// The log filter in force.
    pub fn log_filter(&self) -> Result<String> {
        Ok(request("GET", &format!("{}/log", self.url), None)?
            .body
            .trim()
            .to_string())
    }

    /// Replaces the log filter at run time.
    pub fn set_log_filter(&self, filter: &str) -> Result<()> {
        let r = request_raw(
            "PUT",
            &format!("{}/log", self.url),
            Some(filter),
            "text/plain",
        )?;
        if r.status != 200 {
            bail!("log filter refused ({}): {}", r.status, r.body.trim());
        }
        Ok(())
    }
}

/// A PBX connection as the connector's `/status` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct PbxConnection {
    /// Host WebSocket id.
    pub id: u64,
    /// Whether AppLogin succeeded.
    #[serde(default)]
    pub logged_in: bool,
    /// PBX name once known.
    #[serde(default)]
    pub pbx: Option<String>,
    /// Replication state.
    #[serde(default)]
    pub replication: String,
    /// Users replicated from this PBX.
    #[serde(default)]
    pub users: u64,
}

/// A Teams account as the connector's `/status` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountStatus {
    /// Account name from `presence.accounts`.
    pub name: String,
    /// `idle`, `requesting`, `awaiting-device-sign-in`, `ready` or `failed`.
    pub state: String,
    /// What to do when failed.
    #[serde(default)]
    pub advice: Option<String>,
}

/// The connector's `GET /<domain>/<instance>/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorStatus {
    /// Guest version.
    #[serde(default)]
    pub version: String,
    /// Master PBX name.
    #[serde(default)]
    pub master: Option<String>,
    /// PBX connections.
    #[serde(default)]
    pub pbx: Vec<PbxConnection>,
    /// Teams accounts.
    #[serde(default)]
    pub accounts: Vec<AccountStatus>,
    /// Event counts by kind.
    #[serde(default)]
    pub events: Value,
}

impl ConnectorStatus {
    /// The logged-in connection of PBX `name`.
    pub fn logged_in(&self, name: &str) -> Option<&PbxConnection> {
        self.pbx
            .iter()
            .find(|c| c.logged_in && c.pbx.as_deref() == Some(name))
    }

    /// A Teams account by name.
    pub fn account(&self, name: &str) -> Option<&AccountStatus> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

/// The connector instance, reached through the host's public listener.
#[derive(Debug, Clone)]
pub struct Connector {
    /// `http://127.0.0.1:port/<domain>/<instance>`.
    pub url: String,
}

impl Connector {
    /// `GET /status`, typed.
    pub fn status(&self) -> Result<ConnectorStatus> {
        let v = self.get("/status")?.ok_json()?;
        serde_json::from_value(v.clone()).with_context(|| format!("unexpected /status: {v}"))
    }

    /// `GET /status` as raw JSON.
    pub fn status_json(&self) -> Result<Value> {
        self.get("/status")?.ok_json()
    }

    /// Any request below the instance prefix.
    pub fn get(&self, path: &str) -> Result<Reply> {
        request("GET", &format!("{}{path}", self.url), None)
    }
}

/// A PBX node as the fake PBX's `GET /status` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct PbxNode {
    /// PBX name.
    pub name: String,
    /// `dialing`, `await-challenge`, `await-login-result`, `logged-in`, `waiting` or `killed`.
    pub state: String,
    /// Failed attempts since the last successful login.
    #[serde(default)]
    pub attempts: u32,
    /// Successful logins so far.
    #[serde(default)]
    pub logins: u32,
}

/// The fake PBX's control API (see `tests/fakes/pbx/src/control.rs`).
#[derive(Debug, Clone)]
pub struct FakePbx {
    /// `http://127.0.0.1:port`.
    pub url: String,
}

impl FakePbx {
    /// Any control call; fails on a non-2xx answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        request(method, &format!("{}{path}", self.url), body.as_ref())?
            .ok_json()
            .with_context(|| format!("fake PBX {method} {path}"))
    }

    /// Every node's connection state.
    pub fn nodes(&self) -> Result<Vec<PbxNode>> {
        Ok(serde_json::from_value(self.call("GET", "/status", None)?)?)
    }

    /// One node's connection state.
    pub fn node(&self, name: &str) -> Result<PbxNode> {
        self.nodes()?
            .into_iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no PBX node {name}"))
    }

    /// Every user object (JSON as the fake stores it).
    pub fn users(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call("GET", "/users", None)?)?)
    }

    /// Presence of a user (GUID or h323): `{stored: [...], view: {node: [...]}}`.
    pub fn presence(&self, user: &str) -> Result<Value> {
        self.call("GET", &format!("/users/{user}/presence"), None)
    }

    /// Merges `switches` into the fake's behaviour switches.
    pub fn set_switches(&self, switches: Value) -> Result<Value> {
        self.call("PUT", "/switches", Some(switches))
    }

    /// Drops a node's connection abruptly and keeps it down until [`FakePbx::restore`].
    pub fn kill(&self, node: &str) -> Result<()> {
        self.call("POST", &format!("/nodes/{node}/kill"), None)
            .map(drop)
    }

    /// Lets a killed node dial again.
    pub fn restore(&self, node: &str) -> Result<()> {
        self.call("POST", &format!("/nodes/{node}/restore"), None)
            .map(drop)
    }

    /// Merges `patch` into a node's configuration (effective at its next login), e.g.
    /// `{"app": {"password": "..."}}`.
    pub fn patch_node(&self, node: &str, patch: Value) -> Result<Value> {
        self.call("PATCH", &format!("/nodes/{node}"), Some(patch))
    }

    /// Protocol violations the fake saw from the connector.
    pub fn violations(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            "/violations",
            None,
        )?)?)
    }

    /// `CheckAppLic` requests the connector made.
    pub fn licence_checks(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            "/licence-checks",
            None,
        )?)?)
    }
}

/// The fake Microsoft 365's control API (see the crate docs of `fake-m365`).
#[derive(Debug, Clone)]
pub struct FakeM365 {
    /// `https://127.0.0.1:port`: login and Graph base URL.
    pub url: String,
    /// `http://127.0.0.1:port` of the control API.
    pub control_url: String,
    /// The fake's test CA (PEM file).
    pub ca_file: std::path::PathBuf,
    /// The tenant id.
    pub tenant_id: String,
}

impl FakeM365 {
    /// Any control call below `/control`; fails on a non-2xx answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        request(
            method,
            &format!("{}/control{path}", self.control_url),
            body.as_ref(),
        )?
        .ok_json()
        .with_context(|| format!("fake M365 {method} /control{path}"))
    }

    /// Registers an app (`AppReg` JSON: `clientId`, `publicClient`, `delegated`, ...).
    pub fn add_app(&self, app: Value) -> Result<Value> {
        self.call("POST", "/apps", Some(app))
    }

    /// Creates a user (`UserSpec` JSON: `displayName`, `userPrincipalName`, `password`, ...).
    pub fn add_user(&self, user: Value) -> Result<Value> {
        self.call("POST", "/users", Some(user))
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call("GET", "/users", None)?)?)
    }

    /// Switches the fake's own notification deliveries for subscription `id` off (`on`) or back.
    pub fn subscription_outage(&self, id: &str, on: bool) -> Result<()> {
        self.call(
            "POST",
            &format!("/subscriptions/{id}/outage"),
            Some(json!({ "on": on })),
        )
        .map(drop)
    }

    /// Acts as the user's Teams client.
    pub fn set_teams_presence(&self, user: &str, availability: &str, activity: &str) -> Result<()> {
        self.call(
            "POST",
            "/presence/teams",
            Some(json!({"user": user, "availability": availability, "activity": activity})),
        )
        .map(drop)
    }

    /// The user's aggregated presence.
    pub fn presence(&self, user: &str) -> Result<Value> {
        self.call("GET", &format!("/presence/{user}"), None)
    }

    /// Merges `patch` (snake_case `Config` fields) into the fake's switches.
    pub fn patch_config(&self, patch: Value) -> Result<Value> {
        self.call("PATCH", "/config", Some(patch))
    }

    /// Completes a device-code sign-in as `user`.
    pub fn approve_device_code(&self, user_code: &str, user: &str) -> Result<()> {
        self.call(
            "POST",
            "/device/approve",
            Some(json!({"userCode": user_code, "user": user})),
        )
        .map(drop)
    }

    /// Requests the fake has seen (method, path, status...).
    pub fn requests(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            "/requests",
            None,
        )?)?)
    }
}
