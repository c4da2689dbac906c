//! The `com.innovaphone.search` provider on the AppWebsocket (innovaphone.md §7, F4).
//!
//! The PBX learns from `AppInfoResult` that the API app (HTML name ending in `api`, behind the
//! `microsoft365-api` App object) provides `com.innovaphone.search`; myApps then loads it hidden
//! and its connection, logged in as the searching user through `microsoft365-api`, relays
//! `Search` requests. The connector answers with `SearchInfo`* and exactly one `SearchResult`,
//! each carrying the request's `src`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Conn, PbxEvent, send};
use crate::env::{Env, Level, target};
use crate::event::WsId;

/// The client API the connector provides.
pub const API: &str = "com.innovaphone.search";

/// Name (and SIP) of the App object searches come through (product decision "Names").
pub const API_OBJECT: &str = "microsoft365-api";

/// Whether `app` is the HTML name of the API app (`innovaphone-microsoft365api`): the PBX
/// Manager plugin names it after the main app with `api` appended.
pub fn is_api_app(app: &str) -> bool {
    app.ends_with("api")
}

/// The `AppInfoResult` for an `AppInfo` about `app`: the API app is hidden and provides the
/// search API; the others provide nothing.
pub fn app_info_result(app: &str, src: Option<&str>) -> Value {
    let info = if is_api_app(app) {
        json!({"hidden": true, "apis": {API: {"info": {}}}})
    } else {
        json!({"hidden": false, "apis": {}})
    };
    let mut msg = json!({"mt": "AppInfoResult", "app": app, "info": info});
    if let Some(src) = src {
        msg["src"] = json!(src);
    }
    msg
}

/// Answers an `AppInfo` (the PBX may ask at any time, on any of its connections).
pub fn answer_app_info(env: &mut impl Env, ws: WsId, text: &str, src: Option<&str>) {
    let msg: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let app = msg.get("app").and_then(Value::as_str).unwrap_or("");
    send(env, ws, &app_info_result(app, src));
}

#[derive(Deserialize)]
struct SearchMsg {
    #[serde(default)]
    src: String,
    #[serde(default)]
    search: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Turns a `Search` on `conn` into a [`PbxEvent::Search`]. Searches are only served on a
/// user's connection through the `microsoft365-api` object; elsewhere they are ignored.
pub fn request(env: &mut impl Env, conn: &Conn, text: &str, out: &mut Vec<PbxEvent>) {
    let Some(login) = conn.login.as_ref() else {
        return;
    };
    if login.object || login.pbx_obj.as_deref() != Some(API_OBJECT) {
        env.log(
            Level::Warn,
            target::APP_WEBSOCKET,
            &format!(
                "{}: Search ignored: not a user connection through `{API_OBJECT}` (app `{}`)",
                conn.ws, login.app
            ),
        );
        return;
    }
    let msg: SearchMsg = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            env.log(
                Level::Debug,
                target::APP_WEBSOCKET,
                &format!("{}: malformed Search ignored: {e}", conn.ws),
            );
            return;
        }
    };
    out.push(PbxEvent::Search {
        ws: conn.ws,
        src: msg.src,
        query: msg.search,
        kind: msg.kind,
        guid: login.guid.clone(),
        sip: login.sip.clone(),
        unlicensed: login.unlicensed,
    });
}

/// Sends one `SearchInfo` (a found contact) for the search `src` on `ws`.
pub fn send_info(env: &mut impl Env, ws: WsId, src: &str, dn: &str, contact: &Value) -> bool {
    send(
        env,
        ws,
        &json!({"api": API, "mt": "SearchInfo", "src": src, "dn": dn, "type": "contact",
                "contact": contact}),
    )
}

/// Sends the `SearchResult` that ends the search `src` on `ws`.
pub fn send_result(env: &mut impl Env, ws: WsId, src: &str) -> bool {
    send(
        env,
        ws,
        &json!({"api": API, "mt": "SearchResult", "src": src}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_app_announces_the_search_api_hidden() {
        let r = app_info_result("innovaphone-microsoft365api", Some("7"));
        assert_eq!(r["mt"], "AppInfoResult");
        assert_eq!(r["src"], "7");
        assert_eq!(r["info"]["hidden"], true);
        assert!(r["info"]["apis"][API].is_object());
        let main = app_info_result("innovaphone-microsoft365", None);
        assert_eq!(main["info"]["hidden"], false);
        assert!(main["info"]["apis"][API].is_null());
        assert!(main.get("src").is_none());
    }
}
