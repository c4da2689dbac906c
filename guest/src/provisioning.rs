//! Provisioning, the PBX Manager plugin's job (innovaphone.md §1.2, §7.3, §8.2): the two App
//! objects the PBX needs, as data the admin page and a command show ready to copy, and an
//! operation that creates or updates the `microsoft365-api` object through the PbxAdminApi of
//! the connected App object.
//!
//! The operation is idempotent: it lists the instance's App objects (`GetAppObjects`, head
//! match on the instance URL) and sends one `UpdateObject`, addressed by the guid of the
//! existing `microsoft365-api` object when there is one, so running it again changes nothing.
//! The password is never sent: `copyPwd` names the connected App object, whose password is the
//! instance password by construction (it just logged in with it).
//!
//! Progress lives in KV (`provisioning/state`), and the PBX's answers are correlated by `src`,
//! so a result that arrives after a hot swap is still understood.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::env::{Env, Level, target};
use crate::event::{HttpResponse, InboundRequest, WsFrame, WsId};
use crate::pbx::Pbx;
use crate::pbx::search::API_OBJECT;
use crate::settings;
use crate::store;

/// HTML name of the main app (the last segment of the main App object's URL).
pub const APP_NAME: &str = "innovaphone-microsoft365";

/// KV key of the last operation's progress.
pub const STATE_KEY: &str = "provisioning/state";

/// How long the PBX may take to answer before the operation counts as failed.
const ANSWER_MS: u64 = 30_000;

/// `src` of the `GetAppObjects` request.
const SRC_LIST: &str = "prov:list";
/// `src` of the `UpdateObject` request.
const SRC_UPDATE: &str = "prov:update";

/// What the password field of both objects must hold. Never the password itself: secrets are
/// write-only, and the operation copies it inside the PBX instead.
pub const PASSWORD_HINT: &str = "the instance password";

/// The checkmarks of an App object (`pseudo.app` of `UpdateObject`, innovaphone.md §1.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Internal app, no access from myApps' web view.
    pub web: bool,
    /// "Websocket": the PBX keeps an AppWebsocket to the service.
    pub websocket: bool,
    /// Hidden from the users' home screen.
    pub hidden: bool,
    /// PbxApi (presence).
    pub pbx: bool,
    /// PbxSignal.
    pub pbxsignal: bool,
    /// EpSignal.
    pub epsignal: bool,
    /// Messages API.
    pub messages: bool,
    /// PbxTableUsers (user replication).
    pub tableusers: bool,
    /// PbxAdminApi (licence checks, this provisioning).
    pub admin: bool,
    /// Services API.
    pub services: bool,
    /// RCC.
    pub rcc: bool,
}

/// One App object as the PBX Manager plugin would create it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppObject {
    /// What it is for, in words.
    pub role: &'static str,
    /// Name (Long Name, `cn`).
    pub name: String,
    /// SIP (`h323`).
    pub sip: String,
    /// App URL (the instance base plus the app's HTML name).
    pub url: String,
    /// What the password must be (see [`PASSWORD_HINT`]).
    pub password: &'static str,
    /// Checkmarks.
    pub flags: Flags,
    /// Settings the plugin cannot make, to be done by hand.
    pub by_hand: &'static str,
}

/// Progress of the last create-or-update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// When it started or finished (ms since the epoch).
    pub at_ms: u64,
    /// `created` or `updated` when done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// GUID of the `microsoft365-api` object when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub guid: String,
    /// What happened, in words.
    pub detail: String,
}

/// The instance's base URL (`https://<ap>/<domain>/<instance>`): the `provisioning.base-url`
/// setting, else the master App object's URL without its last segment.
pub fn base_url(env: &mut impl Env, pbx: &Pbx) -> Option<String> {
    if let Some(url) = settings::value(env, "provisioning.base-url") {
        return Some(url.trim_end_matches('/').to_string());
    }
    let url = &pbx.master()?.login.as_ref()?.app_url;
    let (base, _) = url.trim_end_matches('/').rsplit_once('/')?;
    Some(base.to_string())
}

/// The two App objects: `<instance>` (the connector itself) and `microsoft365-api` (contact
/// search). Without a known base URL the URLs say where it goes.
pub fn objects(env: &mut impl Env, pbx: &Pbx) -> Vec<AppObject> {
    let instance = settings::value(env, "instance.name").unwrap_or_else(|| "microsoft365".into());
    let domain = settings::value(env, "instance.domain").unwrap_or_else(|| "<domain>".into());
    let base =
        base_url(env, pbx).unwrap_or_else(|| format!("https://<app platform>/{domain}/{instance}"));
    vec![
        AppObject {
            role: "the connector: presence, users, licences",
            name: instance.clone(),
            sip: instance,
            url: format!("{base}/{APP_NAME}"),
            password: PASSWORD_HINT,
            flags: Flags {
                websocket: true,
                pbx: true,
                tableusers: true,
                admin: true,
                ..Flags::default()
            },
            by_hand: "give the App object visibility (presence, on-the-phone) of the synced users; \
                      tick PbxImpersonation for alien calls (F2); add it on every slave PBX \
                      without full replication",
        },
        api_object(&base),
    ]
}

/// The `microsoft365-api` object below `base`.
fn api_object(base: &str) -> AppObject {
    AppObject {
        role: "contact search (com.innovaphone.search) for the Phone App",
        name: API_OBJECT.into(),
        sip: API_OBJECT.into(),
        url: format!("{base}/{APP_NAME}api"),
        password: PASSWORD_HINT,
        flags: Flags {
            hidden: true,
            ..Flags::default()
        },
        by_hand: "give the users who may search access to it (their apps or a config template)",
    }
}

/// Why the operation cannot run now, if it cannot.
fn blocker(env: &mut impl Env, pbx: &Pbx) -> Option<String> {
    let Some(master) = pbx.master() else {
        return Some("no PBX is connected".into());
    };
    if !master.has_api("PbxAdminApi") {
        return Some(format!(
            "the App object of PBX `{}` does not enable the PbxAdminApi (tick \"Admin\" on it)",
            master.pbx.as_deref().unwrap_or("?")
        ));
    }
    if base_url(env, pbx).is_none() {
        return Some(
            "the instance URL is unknown (the PBX sent no App URL; set provisioning.base-url)"
                .into(),
        );
    }
    None
}

/// Everything the admin page and the command show: the objects, whether the button works, and
/// the last operation's outcome.
pub fn status(env: &mut impl Env, pbx: &Pbx) -> Value {
    let objects = objects(env, pbx);
    let blocked = blocker(env, pbx);
    let mut last: Option<State> = store::get_json(env, STATE_KEY);
    // A PBX that never answers must not leave the page saying "pending" forever.
    if let Some(l) = last.as_mut().filter(|l| l.state == "pending")
        && env.now_ms().saturating_sub(l.at_ms) > ANSWER_MS
    {
        l.state = "failed".into();
        l.detail = format!("no answer from the PBX ({})", l.detail);
    }
    json!({
        "objects": objects,
        "can_apply": blocked.is_none(),
        "why_not": blocked,
        "last": last,
    })
}

fn save(env: &mut impl Env, state: &State) {
    store::set_json(env, STATE_KEY, state);
}

fn send(env: &mut impl Env, ws: WsId, msg: &Value) -> bool {
    env.ws_send(ws, WsFrame::Text(msg.to_string()))
}

/// Starts the create-or-update of the `microsoft365-api` object. The outcome arrives later
/// (see [`on_admin_result`]) and is shown by [`status`].
pub fn start(env: &mut impl Env, pbx: &Pbx) -> Result<State, String> {
    if let Some(why) = blocker(env, pbx) {
        return Err(why);
    }
    let (Some(master), Some(base)) = (pbx.master(), base_url(env, pbx)) else {
        return Err("no PBX is connected".into());
    };
    let msg = json!({"api": "PbxAdminApi", "mt": "GetAppObjects", "src": SRC_LIST, "uri": base});
    if !send(env, master.ws, &msg) {
        return Err("the PBX connection closed".into());
    }
    let state = State {
        state: "pending".into(),
        at_ms: env.now_ms(),
        detail: format!("listing the App objects below {base}"),
        ..State::default()
    };
    save(env, &state);
    Ok(state)
}

/// Handles a PbxAdminApi answer on PBX connection `ws`; `false` if it is not ours.
pub fn on_admin_result(
    env: &mut impl Env,
    pbx: &Pbx,
    ws: WsId,
    mt: &str,
    src: Option<&str>,
    text: &str,
) -> bool {
    let msg: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match (mt, src) {
        ("GetAppObjectsResult", Some(SRC_LIST)) => {
            if let Some(error) = error_of(&msg) {
                return fail(env, &format!("GetAppObjects refused: {error}"));
            }
            let existing = msg["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["sip"].as_str() == Some(API_OBJECT))
                .and_then(|o| o["guid"].as_str())
                .map(str::to_string);
            let (Some(base), Some(own)) = (
                base_url(env, pbx),
                pbx.connection(ws)
                    .and_then(|c| c.login.as_ref())
                    .map(|l| l.sip.clone()),
            ) else {
                return fail(env, "the PBX connection closed");
            };
            let obj = api_object(&base);
            let mut app = serde_json::to_value(obj.flags).unwrap_or(Value::Null);
            app["url"] = json!(obj.url);
            let mut update = json!({
                "api": "PbxAdminApi", "mt": "UpdateObject", "src": SRC_UPDATE,
                "cn": obj.name, "h323": obj.sip, "hide": true, "critical": true,
                "copyPwd": own, "pseudo": {"type": "app", "app": app},
            });
            if let Some(guid) = &existing {
                update["guid"] = json!(guid);
            }
            if !send(env, ws, &update) {
                return fail(env, "the PBX connection closed");
            }
            let mut state: State = store::get_json(env, STATE_KEY).unwrap_or_default();
            state.detail = match &existing {
                Some(g) => format!("updating {API_OBJECT} ({g})"),
                None => format!("creating {API_OBJECT}"),
            };
            state.guid = existing.unwrap_or_default();
            save(env, &state);
            true
        }
        ("UpdateObjectResult", Some(SRC_UPDATE)) => {
            if let Some(error) = error_of(&msg) {
                return fail(env, &format!("UpdateObject refused: {error}"));
            }
            let mut state: State = store::get_json(env, STATE_KEY).unwrap_or_default();
            // The PBX returns a guid only when it created the object.
            let created = msg["guid"].as_str().filter(|g| !g.is_empty());
            state.action = if created.is_some() {
                "created"
            } else {
                "updated"
            }
            .into();
            if let Some(g) = created {
                state.guid = g.to_string();
            }
            state.state = "done".into();
            state.at_ms = env.now_ms();
            state.detail = format!("{API_OBJECT} {}", state.action);
            env.log(
                Level::Info,
                target::APP,
                &format!("provisioning: {}", state.detail),
            );
            save(env, &state);
            true
        }
        _ => false,
    }
}

fn fail(env: &mut impl Env, why: &str) -> bool {
    env.log(Level::Warn, target::APP, &format!("provisioning: {why}"));
    let state = State {
        state: "failed".into(),
        at_ms: env.now_ms(),
        detail: why.to_string(),
        ..State::default()
    };
    save(env, &state);
    true
}

/// The error of a PbxAdminApi result (`error` and/or `errorText`), if it reports one.
fn error_of(msg: &Value) -> Option<String> {
    let text = msg.get("errorText").and_then(Value::as_str);
    match msg.get("error") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => None,
        Some(Value::String(s)) => Some(text.unwrap_or(s).to_string()),
        Some(other) => Some(text.map_or_else(|| other.to_string(), str::to_string)),
    }
}

/// `GET /provisioning` (the objects, JSON) and `POST /provisioning` (create or update
/// `microsoft365-api`; only for a signed-in administrator, `authorized`).
pub fn route(
    env: &mut impl Env,
    req: &InboundRequest,
    pbx: &Pbx,
    authorized: bool,
) -> HttpResponse {
    match req.method.as_str() {
        "GET" => HttpResponse::json(200, &status(env, pbx)),
        "POST" if !authorized => {
            HttpResponse::json(401, &json!({"error": "sign in to the admin page first"}))
        }
        "POST" => match start(env, pbx) {
            Ok(state) => HttpResponse::json(202, &json!({"last": state})),
            Err(why) => HttpResponse::json(409, &json!({"error": why})),
        },
        _ => {
            let mut resp = HttpResponse::text(405, "method not allowed\n");
            resp.headers
                .push(crate::event::Header::new("allow", "GET, POST"));
            resp
        }
    }
}
