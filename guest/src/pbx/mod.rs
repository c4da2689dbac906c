//! The PBX side of the AppWebsocket (innovaphone.md §2-6), sans-IO.
//!
//! Every PBX (master and slaves) dials the connector and keeps its own connection; each has its
//! own state machine here, keyed by the host's WebSocket id:
//!
//! 1. open: nothing is sent; the PBX speaks first.
//! 2. `AppChallenge` -> `AppChallengeResult` with a fresh random challenge.
//! 3. `AppLogin` -> digest checked with the instance password -> `AppLoginResult` ok true/false.
//!    The challenge is consumed by the attempt, so it can never be reused.
//! 4. `PbxInfo` -> PBX name and enabled APIs remembered; user replication starts if
//!    `PbxTableUsers` is enabled.
//! 5. API traffic: replication, presence, licence checks.
//!
//! Connection state is mirrored to KV (`pbx/conn/<ws-id>`) so a restarted or upgraded guest
//! picks up connections that the host kept open. Anything before a successful login other than
//! the handshake is ignored and never answered with API traffic.

pub mod licence;
pub mod login;
pub mod monitor;
pub mod presence;
pub mod search;
pub mod users;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::{Env, Level, target};
use crate::event::{WsFrame, WsId, WsOpen};
use crate::settings::Settings;
use crate::store;

pub use presence::PresenceItem;
pub use users::UserRow;

/// KV prefix of connection state.
const CONN_PREFIX: &str = "pbx/conn/";

/// Failed logins or garbage frames before a login after which the connection is closed.
const MAX_FAILURES: u32 = 5;

/// WebSocket close code for policy violations (RFC 6455).
const CLOSE_POLICY: u16 = 1008;

/// Where a connection's user replication stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Replication {
    /// Not started (API not enabled, or not logged in yet).
    #[default]
    Off,
    /// `ReplicateStart` sent.
    Starting,
    /// Initial load: `ReplicateNext` loop running.
    Loading,
    /// Initial load complete; live Add/Update/Del pushes.
    Live,
}

/// A successful AppLogin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// App name the client logged in to.
    pub app: String,
    /// PBX system name.
    pub domain: String,
    /// SIP name of the App object (PBX logins) or user (myApps logins).
    pub sip: String,
    /// Display name.
    pub dn: String,
    /// Set for user logins brokered by myApps; absent for the PBX's own connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbx_obj: Option<String>,
    /// The PBX's own App-object login (see [`login::AppLogin::is_object_login`]); only such
    /// connections may identify as a PBX and carry PBX API traffic.
    #[serde(default)]
    pub object: bool,
    /// `info.pbx`: the PBX the login came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_pbx: Option<String>,
    /// GUID of the object or user that logged in.
    #[serde(default)]
    pub guid: String,
    /// `info.appurl`: URL of the App object the login came through.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_url: String,
    /// `info.unlicensed`: the PBX says the user holds no licence for the app.
    #[serde(default)]
    pub unlicensed: bool,
}

/// The state of one AppWebsocket connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conn {
    /// Host WebSocket id.
    pub ws: WsId,
    /// Peer address.
    #[serde(default)]
    pub peer: String,
    /// The outstanding challenge, if one was issued and not yet used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// Failed logins and garbage frames so far (before login).
    #[serde(default)]
    pub failures: u32,
    /// Set once AppLogin succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
    /// PBX name from `PbxInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbx: Option<String>,
    /// APIs enabled on the App object, from `PbxInfo`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<String>,
    /// User replication progress.
    #[serde(default)]
    pub users: Replication,
}

impl Conn {
    fn new(ws: WsId, peer: &str) -> Self {
        Conn {
            ws,
            peer: peer.to_string(),
            ..Default::default()
        }
    }

    /// Whether this is a logged-in PBX connection (not a myApps user) that sent `PbxInfo`.
    pub fn is_pbx(&self) -> bool {
        self.login.as_ref().is_some_and(|l| l.object) && self.pbx.is_some()
    }

    /// Whether `PbxInfo` listed `api` as enabled.
    pub fn has_api(&self, api: &str) -> bool {
        self.apis.iter().any(|a| a == api)
    }
}

/// What happened on the PBX side that features may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbxEvent {
    /// A PBX logged in and sent `PbxInfo`.
    Connected {
        /// Connection.
        ws: WsId,
        /// PBX name.
        pbx: String,
    },
    /// A logged-in connection closed.
    Disconnected {
        /// Connection.
        ws: WsId,
        /// PBX name, if it had sent `PbxInfo`.
        pbx: Option<String>,
    },
    /// The initial user load of a PBX completed.
    UsersLoaded {
        /// PBX name.
        pbx: String,
        /// Rows stored for that PBX.
        count: u64,
    },
    /// A user row was added or changed (live push).
    UserChanged {
        /// PBX name.
        pbx: String,
        /// User guid.
        guid: String,
    },
    /// A user row was deleted.
    UserRemoved {
        /// PBX name.
        pbx: String,
        /// User guid.
        guid: String,
    },
    /// A monitored user's presence list (newest first).
    Presence {
        /// PBX name.
        pbx: String,
        /// User guid.
        guid: String,
        /// The items.
        items: Vec<PresenceItem>,
    },
    /// A presence monitor went up or down, or could not be set up.
    PresenceMonitor {
        /// PBX name.
        pbx: String,
        /// User guid.
        guid: String,
        /// Whether the monitor delivers presence.
        up: bool,
    },
    /// `SetPresence` failed (after the on-the-phone fallback, if one applied).
    SetPresenceFailed {
        /// PBX name.
        pbx: String,
        /// User guid.
        guid: String,
        /// The PBX's error text.
        error: String,
    },
    /// A result of impersonation traffic (alien calls).
    Impersonation(ImpersonationResult),
    /// A licence check answered.
    Licence {
        /// User guid.
        guid: String,
        /// Whether the user holds the licence.
        licensed: bool,
        /// Whether this differs from the last known state.
        changed: bool,
    },
    /// A user searched (`com.innovaphone.search` `Search` through `microsoft365-api`).
    Search {
        /// Connection to answer on.
        ws: WsId,
        /// The request's `src`, echoed in every answer.
        src: String,
        /// What the user typed.
        query: String,
        /// `type` of the search (`contact`, `app`), if given.
        kind: Option<String>,
        /// GUID of the searching user.
        guid: String,
        /// SIP name of the searching user.
        sip: String,
        /// The login said the user holds no licence for the app.
        unlicensed: bool,
    },
}

/// A result on `PbxImpersonation` or an impersonated `PbxApi.<n>` (alien calls, see
/// [`monitor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpersonationResult {
    /// Connection.
    pub ws: WsId,
    /// The API it came on.
    pub api: String,
    /// The message type, e.g. `CreateApiResult`.
    pub mt: String,
    /// The message.
    pub msg: Value,
}

/// Why a PBX request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbxError {
    /// No logged-in PBX connection to send it on.
    NotConnected,
    /// The App object does not enable the API (missing checkmark in the PBX).
    ApiNotEnabled(&'static str),
    /// The connection refused the frame (closed meanwhile).
    SendFailed,
}

impl std::fmt::Display for PbxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PbxError::NotConnected => write!(f, "no PBX connected"),
            PbxError::ApiNotEnabled(api) => {
                write!(f, "{api} is not enabled on the PBX's App object")
            }
            PbxError::SendFailed => write!(f, "the PBX connection is closed"),
        }
    }
}

/// The envelope fields every message may carry.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    mt: Option<String>,
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    src: Option<String>,
}

/// Every AppWebsocket connection of this instance.
#[derive(Debug, Default)]
pub struct Pbx {
    conns: BTreeMap<WsId, Conn>,
    settings: Settings,
}

fn send(env: &mut impl Env, ws: WsId, msg: &Value) -> bool {
    let text = msg.to_string();
    if env.log_enabled(Level::Trace, target::APP_WEBSOCKET) {
        // Never log AppLogin frames: they carry digests.
        env.log(
            Level::Trace,
            target::APP_WEBSOCKET,
            &format!("{ws} <- {text}"),
        );
    }
    env.ws_send(ws, WsFrame::Text(text))
}

/// Sends `ReplicateStart` for PBX `name` on `conn`, resuming from the stored point.
fn start_replication(env: &mut impl Env, conn: &mut Conn, name: &str) {
    let resume = users::resume(env, name);
    if send(env, conn.ws, &users::start_request(resume.as_ref())) {
        conn.users = Replication::Starting;
    }
}

fn conn_key(ws: WsId) -> String {
    format!("{CONN_PREFIX}{ws}")
}

impl Pbx {
    /// An empty set of connections using `settings`.
    pub fn new(settings: Settings) -> Self {
        Pbx {
            conns: BTreeMap::new(),
            settings,
        }
    }

    /// Replaces the settings (after a configuration change).
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// All connections, by id.
    pub fn connections(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values()
    }

    /// One connection.
    pub fn connection(&self, ws: WsId) -> Option<&Conn> {
        self.conns.get(&ws)
    }

    /// Rebuilds connection state after `init`: connections the host kept open are restored
    /// from KV, state of connections that are gone is deleted.
    pub fn restore(&mut self, env: &mut impl Env, open: &[WsOpen]) {
        self.conns.clear();
        for o in open
            .iter()
            .filter(|o| o.direction == crate::event::WsDirection::Inbound)
        {
            let conn = store::get_json::<Conn>(env, &conn_key(o.id))
                .filter(|c| c.ws == o.id)
                .unwrap_or_else(|| Conn::new(o.id, &o.peer));
            self.conns.insert(o.id, conn);
        }
        for key in store::keys(env, CONN_PREFIX) {
            let id = key[CONN_PREFIX.len()..].parse::<WsId>().ok();
            if id.is_none_or(|id| !self.conns.contains_key(&id)) {
                env.kv_delete(&key);
            }
        }
        for conn in self.conns.values() {
            store::set_json(env, &conn_key(conn.ws), conn);
        }
    }

    /// An inbound WebSocket opened. The PBX speaks first, so nothing is sent.
    pub fn open(&mut self, env: &mut impl Env, open: &WsOpen) {
        let conn = Conn::new(open.id, &open.peer);
        store::set_json(env, &conn_key(open.id), &conn);
        self.conns.insert(open.id, conn);
        env.log(
            Level::Debug,
            target::APP_WEBSOCKET,
            &format!("{} connected from {} on {}", open.id, open.peer, open.path),
        );
    }

    /// A connection closed. Its subscriptions and replication end with it (the PBX forgets
    /// them too); stored user rows stay for the next connection to resume from.
    pub fn closed(&mut self, env: &mut impl Env, ws: WsId) -> Vec<PbxEvent> {
        env.kv_delete(&conn_key(ws));
        let gone = self.conns.remove(&ws);
        // If it replicated its PBX's users, another connection of that PBX takes over.
        if let Some(Conn {
            pbx: Some(name),
            users,
            ..
        }) = &gone
            && *users != Replication::Off
            && let Some(next) = self.conns.values_mut().find(|c| {
                c.is_pbx()
                    && c.pbx.as_deref() == Some(name.as_str())
                    && c.has_api("PbxTableUsers")
                    && c.users == Replication::Off
            })
        {
            start_replication(env, next, name);
            store::set_json(env, &conn_key(next.ws), &*next);
        }
        match gone {
            Some(c) if c.login.is_some() => {
                env.log(
                    Level::Info,
                    target::APP_WEBSOCKET,
                    &format!(
                        "{ws} ({}) disconnected",
                        c.pbx.as_deref().unwrap_or("not identified")
                    ),
                );
                vec![PbxEvent::Disconnected { ws, pbx: c.pbx }]
            }
            _ => Vec::new(),
        }
    }

    /// A frame arrived on `ws`. Returns what features may need to act on.
    pub fn message(&mut self, env: &mut impl Env, ws: WsId, frame: &WsFrame) -> Vec<PbxEvent> {
        let Some(conn) = self.conns.get(&ws) else {
            // Not an AppWebsocket we track (an outbound socket of another feature).
            return Vec::new();
        };
        let before = conn.clone();
        let mut out = Vec::new();
        let mut conn = before.clone();
        match frame {
            WsFrame::Text(text) => self.text(env, &mut conn, text, &mut out),
            WsFrame::Binary(_) => {
                env.log(
                    Level::Debug,
                    target::APP_WEBSOCKET,
                    &format!("{ws}: binary frame ignored"),
                );
                self.garbage(env, &mut conn);
            }
        }
        if conn != before {
            store::set_json(env, &conn_key(ws), &conn);
        }
        self.conns.insert(ws, conn);
        out
    }

    /// Counts a bad frame before login; too many close the connection.
    fn garbage(&self, env: &mut impl Env, conn: &mut Conn) {
        if conn.login.is_some() {
            return;
        }
        conn.failures += 1;
        env.counter_add("pbx_rejected_frames_total", &[], 1);
        if conn.failures >= MAX_FAILURES {
            env.log(
                Level::Warn,
                target::APP_WEBSOCKET,
                &format!(
                    "{} ({}): closing after repeated bad input",
                    conn.ws, conn.peer
                ),
            );
            env.ws_close(conn.ws, CLOSE_POLICY, "login required");
        }
    }

    fn text(&self, env: &mut impl Env, conn: &mut Conn, text: &str, out: &mut Vec<PbxEvent>) {
        let head: Head = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => {
                env.log(
                    Level::Debug,
                    target::APP_WEBSOCKET,
                    &format!("{}: ignoring frame that is not a JSON object: {e}", conn.ws),
                );
                self.garbage(env, conn);
                return;
            }
        };
        let mt = head.mt.as_deref().unwrap_or("");
        if mt != "AppLogin" && env.log_enabled(Level::Trace, target::APP_WEBSOCKET) {
            env.log(
                Level::Trace,
                target::APP_WEBSOCKET,
                &format!("{} -> {text}", conn.ws),
            );
        }
        match (head.api.as_deref(), mt) {
            (None, "AppChallenge") => self.challenge(env, conn),
            (None, "AppLogin") => self.login(env, conn, text),
            (None, "KeepAlive") => {}
            _ if conn.login.is_none() => {
                env.log(
                    Level::Debug,
                    target::APP_WEBSOCKET,
                    &format!("{}: `{mt}` before login ignored", conn.ws),
                );
                self.garbage(env, conn);
            }
            (None, "PbxInfo") | (Some("PbxTableUsers" | "PbxApi" | "PbxAdminApi"), _)
                if !conn.login.as_ref().is_some_and(|l| l.object) =>
            {
                // A myApps user session must not pose as a PBX or feed PBX data.
                env.log(
                    Level::Warn,
                    target::APP_WEBSOCKET,
                    &format!("{}: `{mt}` on a user session ignored", conn.ws),
                );
            }
            (None, "PbxInfo") => self.pbx_info(env, conn, text, out),
            (Some("PbxTableUsers"), _) => self.replication(env, conn, mt, text, out),
            (Some("PbxApi"), _) => self.pbx_api(env, conn, mt, head.src.as_deref(), text, out),
            (Some("PbxAdminApi"), "CheckAppLicResult") => {
                self.licence_result(env, head.src.as_deref(), text, out)
            }
            (Some("PbxAdminApi"), "GetAppObjectsResult" | "UpdateObjectResult") => {
                let src = head.src.as_deref();
                crate::provisioning::on_admin_result(env, self, conn.ws, mt, src, text);
            }
            (Some(api), _)
                if monitor::is_impersonation(api)
                    && conn.login.as_ref().is_some_and(|l| l.object) =>
            {
                out.push(PbxEvent::Impersonation(ImpersonationResult {
                    ws: conn.ws,
                    api: api.to_string(),
                    mt: mt.to_string(),
                    msg: serde_json::from_str(text).unwrap_or(Value::Null),
                }));
            }
            (None, "AppInfo") => search::answer_app_info(env, conn.ws, text, head.src.as_deref()),
            (Some(search::API), "Search") => search::request(env, conn, text, out),
            _ => env.log(
                Level::Debug,
                target::APP_WEBSOCKET,
                &format!(
                    "{}: unhandled {}/{mt} ignored",
                    conn.ws,
                    head.api.as_deref().unwrap_or("-")
                ),
            ),
        }
    }

    fn challenge(&self, env: &mut impl Env, conn: &mut Conn) {
        // A fresh challenge every time: an old one is never valid again.
        let challenge = login::new_challenge(env.random_u64());
        send(
            env,
            conn.ws,
            &serde_json::json!({"mt": "AppChallengeResult", "challenge": challenge}),
        );
        conn.challenge = Some(challenge);
    }

    fn login(&self, env: &mut impl Env, conn: &mut Conn, text: &str) {
        // The attempt consumes the challenge, whatever its outcome.
        let challenge = conn.challenge.take();
        let msg: login::AppLogin = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return self.refuse(env, conn, &format!("malformed AppLogin: {e}"));
            }
        };
        let Some(challenge) = challenge else {
            return self.refuse(env, conn, "AppLogin without a challenge");
        };
        let Some(password) = Settings::instance_password(env) else {
            env.log(
                Level::Error,
                target::CONFIG,
                "instance.password is not set; every AppLogin is refused",
            );
            return self.refuse(env, conn, "no instance password configured");
        };
        if !msg.verify(&challenge, &password) {
            return self.refuse(
                env,
                conn,
                &format!(
                    "wrong digest for app `{}` sip `{}` (instance password differs?)",
                    msg.app, msg.sip
                ),
            );
        }
        let info = msg.info();
        conn.login = Some(Login {
            app: msg.app.clone(),
            domain: msg.domain.clone(),
            sip: msg.sip.clone(),
            dn: msg.dn.clone(),
            pbx_obj: msg.pbx_obj.clone(),
            info_pbx: info.pbx.clone(),
            object: msg.is_object_login(),
            guid: msg.guid.clone(),
            app_url: info.appurl.clone().unwrap_or_default(),
            unlicensed: info.unlicensed == Some(true),
        });
        conn.failures = 0;
        send(
            env,
            conn.ws,
            &serde_json::json!({"mt": "AppLoginResult", "ok": true}),
        );
        env.log(
            Level::Info,
            target::APP_WEBSOCKET,
            &format!(
                "{} logged in: app `{}` sip `{}` pbx `{}`",
                conn.ws,
                msg.app,
                msg.sip,
                info.pbx.as_deref().unwrap_or("?")
            ),
        );
    }

    fn refuse(&self, env: &mut impl Env, conn: &mut Conn, why: &str) {
        conn.login = None;
        env.log(
            Level::Warn,
            target::APP_WEBSOCKET,
            &format!("{} ({}): login refused: {why}", conn.ws, conn.peer),
        );
        env.counter_add("pbx_login_failures_total", &[], 1);
        send(
            env,
            conn.ws,
            &serde_json::json!({"mt": "AppLoginResult", "ok": false, "errorText": "login failed"}),
        );
        self.garbage(env, conn);
    }

    fn pbx_info(&self, env: &mut impl Env, conn: &mut Conn, text: &str, out: &mut Vec<PbxEvent>) {
        let msg: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let name = msg
            .get("pbx")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| conn.login.as_ref().and_then(|l| l.info_pbx.clone()))
            .unwrap_or_else(|| format!("ws{}", conn.ws));
        conn.apis = msg
            .get("apis")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        conn.pbx = Some(name.clone());
        env.log(
            Level::Info,
            target::APP_WEBSOCKET,
            &format!(
                "{}: PBX `{name}` with APIs [{}]",
                conn.ws,
                conn.apis.join(", ")
            ),
        );
        for api in ["PbxApi", "PbxTableUsers", "PbxAdminApi"] {
            if !conn.has_api(api) {
                env.log(
                    Level::Warn,
                    target::APP_WEBSOCKET,
                    &format!("PBX `{name}`: {api} is not enabled on the App object"),
                );
            }
        }
        // One replication per PBX: its second App object (`microsoft365-api`) may have the
        // API enabled too, and two replications would only duplicate the work.
        let replicated = self.conns.values().any(|c| {
            c.ws != conn.ws
                && c.is_pbx()
                && c.pbx.as_deref() == Some(name.as_str())
                && c.users != Replication::Off
        });
        if conn.has_api("PbxTableUsers") && !replicated {
            start_replication(env, conn, &name);
        }
        out.push(PbxEvent::Connected {
            ws: conn.ws,
            pbx: name,
        });
    }

    fn replication(
        &self,
        env: &mut impl Env,
        conn: &mut Conn,
        mt: &str,
        text: &str,
        out: &mut Vec<PbxEvent>,
    ) {
        let Some(pbx) = conn.pbx.clone() else {
            return;
        };
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match mt {
            "ReplicateStartResult" => {
                if let Some(err) = presence::error_of(&msg) {
                    env.log(
                        Level::Warn,
                        target::APP_WEBSOCKET,
                        &format!("PBX `{pbx}`: user replication refused: {err}"),
                    );
                    conn.users = Replication::Off;
                    return;
                }
                let db = msg.get("guid").and_then(Value::as_str).unwrap_or("");
                let known = users::resume(env, &pbx);
                // Another database (or none known): the stored rows cannot be resumed from.
                if known.as_ref().is_none_or(|k| k.guid != db) {
                    let n = users::clear(env, &pbx);
                    if n > 0 {
                        env.log(
                            Level::Info,
                            target::APP_WEBSOCKET,
                            &format!("PBX `{pbx}`: database changed, {n} stored users reloaded"),
                        );
                    }
                }
                let usn = users::usn_of(&msg)
                    .or(known.filter(|k| k.guid == db).map(|k| k.usn))
                    .unwrap_or(0);
                users::set_resume(
                    env,
                    &pbx,
                    &users::Resume {
                        guid: db.to_string(),
                        usn,
                    },
                );
                if send(env, conn.ws, &users::next_request()) {
                    conn.users = Replication::Loading;
                }
            }
            "ReplicateNextResult" => match msg.get("columns") {
                Some(cols) => {
                    self.store_row(env, &pbx, cols, &msg);
                    send(env, conn.ws, &users::next_request());
                }
                None => {
                    conn.users = Replication::Live;
                    let count = users::count(env, &pbx);
                    env.log(
                        Level::Info,
                        target::APP_WEBSOCKET,
                        &format!("PBX `{pbx}`: {count} users replicated"),
                    );
                    out.push(PbxEvent::UsersLoaded { pbx, count });
                }
            },
            "ReplicateAdd" | "ReplicateUpdate" => {
                if let Some(guid) = msg
                    .get("columns")
                    .and_then(|c| self.store_row(env, &pbx, c, &msg))
                {
                    out.push(PbxEvent::UserChanged { pbx, guid });
                }
            }
            "ReplicateDel" => {
                let guid = msg
                    .get("columns")
                    .and_then(|c| c.get("guid"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !guid.is_empty() {
                    users::remove(env, &pbx, guid);
                    self.bump_usn(env, &pbx, &msg);
                    out.push(PbxEvent::UserRemoved {
                        pbx,
                        guid: guid.to_string(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Stores one replicated row; returns its guid.
    fn store_row(
        &self,
        env: &mut impl Env,
        pbx: &str,
        columns: &Value,
        msg: &Value,
    ) -> Option<String> {
        let row = UserRow::from_columns(columns);
        match &row {
            Some(row) => users::put(env, pbx, row),
            None => env.log(
                Level::Debug,
                target::APP_WEBSOCKET,
                &format!("PBX `{pbx}`: replicated row without guid ignored"),
            ),
        }
        self.bump_usn(env, pbx, msg);
        row.map(|r| r.guid)
    }

    fn bump_usn(&self, env: &mut impl Env, pbx: &str, msg: &Value) {
        let Some(usn) = users::usn_of(msg) else {
            return;
        };
        let mut r = users::resume(env, pbx).unwrap_or_default();
        if usn > r.usn {
            r.usn = usn;
            users::set_resume(env, pbx, &r);
        }
    }

    fn pbx_api(
        &self,
        env: &mut impl Env,
        conn: &mut Conn,
        mt: &str,
        src: Option<&str>,
        text: &str,
        out: &mut Vec<PbxEvent>,
    ) {
        let pbx = conn.pbx.clone().unwrap_or_default();
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let src = src.unwrap_or("");
        match mt {
            "SetPresenceResult" => {
                let Some((guid, activity)) = presence::parse_set_src(src) else {
                    return;
                };
                let Some(error) = presence::error_of(&msg) else {
                    return;
                };
                if activity == presence::ON_THE_PHONE {
                    // Product decision: a PBX that refuses on-the-phone gets busy instead.
                    env.log(
                        Level::Info,
                        target::APP_WEBSOCKET,
                        &format!("PBX `{pbx}` refused on-the-phone ({error}); setting busy"),
                    );
                    let req = presence::set_request(
                        guid,
                        &self.settings.presence_contact,
                        "busy",
                        presence::TEAMS_CALL_NOTE,
                    );
                    let result = if send(env, conn.ws, &req) {
                        "sent".to_string()
                    } else {
                        format!("failed: {}", PbxError::SendFailed)
                    };
                    let why = format!("PBX refused on-the-phone ({error})");
                    crate::audit::pbx_write(
                        env,
                        Some(&pbx),
                        guid,
                        "busy",
                        presence::TEAMS_CALL_NOTE,
                        &why,
                        result,
                    );
                    return;
                }
                env.log(
                    Level::Warn,
                    target::APP_WEBSOCKET,
                    &format!("PBX `{pbx}`: SetPresence for {guid} failed: {error}"),
                );
                let result = format!("refused: {error}");
                let why = "the PBX answered the write";
                crate::audit::pbx_write(env, Some(&pbx), guid, activity, "", why, result);
                out.push(PbxEvent::SetPresenceFailed {
                    pbx,
                    guid: guid.to_string(),
                    error,
                });
            }
            "SubscribePresenceResult" => {
                if let (Some(guid), Some(error)) =
                    (presence::parse_monitor_src(src), presence::error_of(&msg))
                {
                    env.log(
                        Level::Warn,
                        target::APP_WEBSOCKET,
                        &format!("PBX `{pbx}`: presence monitor for {guid} refused: {error}"),
                    );
                    out.push(PbxEvent::PresenceMonitor {
                        pbx,
                        guid: guid.to_string(),
                        up: false,
                    });
                }
            }
            "PresenceState" => {
                if let Some(guid) = presence::parse_monitor_src(src) {
                    let up = msg.get("up").and_then(Value::as_bool).unwrap_or(false);
                    out.push(PbxEvent::PresenceMonitor {
                        pbx,
                        guid: guid.to_string(),
                        up,
                    });
                }
            }
            "PresenceUpdate" => {
                if let Some(guid) = presence::parse_monitor_src(src) {
                    out.push(PbxEvent::Presence {
                        pbx,
                        guid: guid.to_string(),
                        items: presence::items(&msg),
                    });
                }
            }
            _ => {}
        }
    }

    fn licence_result(
        &self,
        env: &mut impl Env,
        src: Option<&str>,
        text: &str,
        out: &mut Vec<PbxEvent>,
    ) {
        let Some(guid) = src.and_then(licence::parse_src) else {
            return;
        };
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let licensed = msg.get("ok").and_then(Value::as_bool).unwrap_or(false);
        let changed = licence::record(env, guid, licensed);
        if changed {
            env.log(
                Level::Info,
                target::APP_WEBSOCKET,
                &format!(
                    "user {guid}: licence {} {}",
                    self.settings.licence,
                    if licensed { "granted" } else { "missing" }
                ),
            );
        }
        out.push(PbxEvent::Licence {
            guid: guid.to_string(),
            licensed,
            changed,
        });
    }

    /// The name of the master PBX: `pbx.master` if set, else the PBX of the logged-in PBX
    /// connection with the lowest id.
    pub fn master_name(&self) -> Option<&str> {
        match &self.settings.master {
            Some(name) => Some(name.as_str()),
            None => self
                .conns
                .values()
                .find(|c| c.is_pbx())
                .and_then(|c| c.pbx.as_deref()),
        }
    }

    /// The master PBX connection (its main App object's connection when the PBX has several,
    /// e.g. also `microsoft365-api`).
    pub fn master(&self) -> Option<&Conn> {
        let name = self.master_name()?;
        let mut conns = self.pbx_conns(name);
        conns
            .clone()
            .find(|c| c.has_api("PbxApi"))
            .or_else(|| conns.next())
    }

    fn pbx_conns<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Conn> + Clone + 'a {
        self.conns
            .values()
            .filter(move |c| c.is_pbx() && c.pbx.as_deref() == Some(name))
    }

    /// The connection to use for `api` for a user assigned to PBX `loc`: that PBX when it is
    /// connected with the API enabled, else the master (product decision "Routing").
    pub fn route(&self, loc: Option<&str>, api: &'static str) -> Result<WsId, PbxError> {
        let with_api = |name: &str| self.pbx_conns(name).find(|c| c.has_api(api)).map(|c| c.ws);
        if let Some(ws) = loc.filter(|l| !l.is_empty()).and_then(with_api) {
            return Ok(ws);
        }
        let master = self.master_name().ok_or(PbxError::NotConnected)?;
        match with_api(master) {
            Some(ws) => Ok(ws),
            None if self.pbx_conns(master).next().is_some() => Err(PbxError::ApiNotEnabled(api)),
            None => Err(PbxError::NotConnected),
        }
    }

    /// Sets the connector's own presence item of user `guid` on the PBX of `loc` (or the
    /// master). Empty activity and note unset it. Returns the connection used.
    pub fn set_presence(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        guid: &str,
        activity: &str,
        note: &str,
    ) -> Result<WsId, PbxError> {
        let why = "Teams presence of the matched user";
        self.set_presence_because(env, loc, guid, activity, note, why)
    }

    /// [`Pbx::set_presence`] with the reason the audit trail shows for it.
    pub fn set_presence_because(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        guid: &str,
        activity: &str,
        note: &str,
        why: &str,
    ) -> Result<WsId, PbxError> {
        let contact = self.settings.presence_contact.clone();
        self.write_presence_item(env, loc, guid, &contact, activity, note, why)
    }

    /// Sets the calendar presence item (`pbx.calendar-contact`) of user `guid` on the PBX of
    /// `loc` (or the master); it lives beside the Teams item. Empty activity and note unset it.
    pub fn set_calendar_presence(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        guid: &str,
        activity: &str,
        note: &str,
    ) -> Result<WsId, PbxError> {
        let contact = self.settings.calendar_contact.clone();
        let why = "calendar event of the matched user (calendar item)";
        self.write_presence_item(env, loc, guid, &contact, activity, note, why)
    }

    /// The single write point of presence items into the PBX: every write, sent or not, is
    /// audited with `why`.
    #[allow(clippy::too_many_arguments)]
    fn write_presence_item(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        guid: &str,
        contact: &str,
        activity: &str,
        note: &str,
        why: &str,
    ) -> Result<WsId, PbxError> {
        let sent = self.route(loc, "PbxApi").and_then(|ws| {
            let req = presence::set_request(guid, contact, activity, note);
            send(env, ws, &req)
                .then_some(ws)
                .ok_or(PbxError::SendFailed)
        });
        let result = match &sent {
            Ok(_) => "sent".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        crate::audit::pbx_write(env, self.master_name(), guid, activity, note, why, result);
        sent
    }

    /// Starts monitoring the presence of user `sip`/`guid` on the PBX of `loc` (or the master).
    pub fn subscribe_presence(
        &mut self,
        env: &mut impl Env,
        loc: Option<&str>,
        sip: &str,
        guid: &str,
    ) -> Result<WsId, PbxError> {
        let ws = self.route(loc, "PbxApi")?;
        send(env, ws, &presence::subscribe_request(sip, guid))
            .then_some(ws)
            .ok_or(PbxError::SendFailed)
    }

    /// Stops monitoring a user's presence on connection `ws`.
    pub fn unsubscribe_presence(
        &mut self,
        env: &mut impl Env,
        ws: WsId,
        sip: &str,
        guid: &str,
    ) -> Result<(), PbxError> {
        let conn = self.conns.get(&ws).ok_or(PbxError::NotConnected)?;
        if !conn.has_api("PbxApi") {
            return Err(PbxError::ApiNotEnabled("PbxApi"));
        }
        send(env, ws, &presence::unsubscribe_request(sip, guid))
            .then_some(())
            .ok_or(PbxError::SendFailed)
    }

    /// Asks the master PBX whether user `guid` holds the connector's licence.
    pub fn check_licence(&mut self, env: &mut impl Env, guid: &str) -> Result<WsId, PbxError> {
        let ws = self.route(None, "PbxAdminApi")?;
        send(env, ws, &licence::request(guid, &self.settings.licence))
            .then_some(ws)
            .ok_or(PbxError::SendFailed)
    }
}
