//! The admin page (product.md F5), served by the guest under `/<domain>/<instance>/admin/`.
//!
//! Static files (HTML, CSS, JS, all embedded; no external CDN) are public; the JSON API under
//! `admin/api/` needs a session ([`auth`]): status lights ([`lights`]), the settings forms
//! ([`fields`], saved through [`crate::settings::save`], secrets write-only), the Teams
//! accounts, the matching preview (also as CSV), the live log with the audit trail, and the
//! trace switches ([`logtap`]). A save asks the connector to re-apply the settings.

pub mod auth;
pub mod fields;
pub mod lights;
pub mod logtap;

use serde_json::{Value, json};

use crate::env::{Env, Level, target};
use crate::event::{Header, HttpResponse, InboundRequest};
use crate::http::StatusInput;
use crate::matching::{self, Matched, Problem};
use crate::settings::{self, Settings};
use crate::store;

pub use lights::LAST_NOTIFICATION_KEY;
pub use logtap::LogTap;

/// Whether a request path belongs to the admin page.
pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// The answer to an admin request and what the connector must do after it.
pub struct Outcome {
    /// The response.
    pub response: HttpResponse,
    /// Settings were saved: the connector re-applies them.
    pub reconfigure: bool,
}

impl From<HttpResponse> for Outcome {
    fn from(response: HttpResponse) -> Self {
        Outcome {
            response,
            reconfigure: false,
        }
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const ADMIN_CSS: &str = include_str!("assets/admin.css");
const ADMIN_JS: &str = include_str!("assets/admin.js");
const SHA256_JS: &str = include_str!("assets/sha256.js");

fn asset(content_type: &str, body: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![
            Header::new("content-type", content_type),
            Header::new("cache-control", "no-cache"),
            Header::new("x-content-type-options", "nosniff"),
            Header::new("referrer-policy", "no-referrer"),
            Header::new(
                "content-security-policy",
                "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:",
            ),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn api(status: u16, body: &Value) -> HttpResponse {
    let mut r = HttpResponse::json(status, body);
    r.headers.push(Header::new("cache-control", "no-store"));
    r.headers
        .push(Header::new("x-content-type-options", "nosniff"));
    r
}

fn error(status: u16, message: &str) -> HttpResponse {
    api(status, &json!({"error": message}))
}

/// Answers one admin request.
pub fn route(env: &mut impl Env, req: &InboundRequest, status: &StatusInput) -> Outcome {
    let mut outcome = answer(env, req, status);
    if req.method == "HEAD" {
        outcome.response.body.clear();
    }
    outcome
}

fn answer(env: &mut impl Env, req: &InboundRequest, status: &StatusInput) -> Outcome {
    let path = req.path.as_str();
    let method = req.method.as_str();
    match (method, path) {
        ("GET" | "HEAD", "/admin") => {
            let s = Settings::read(env);
            let mut r = HttpResponse::text(301, "moved\n");
            r.headers.push(Header::new(
                "location",
                &format!("/{}/{}/admin/", s.domain, s.instance),
            ));
            return r.into();
        }
        ("GET" | "HEAD", "/admin/" | "/admin/index.html") => {
            return asset("text/html; charset=utf-8", INDEX_HTML).into();
        }
        ("GET" | "HEAD", "/admin/admin.css") => return asset("text/css", ADMIN_CSS).into(),
        ("GET" | "HEAD", "/admin/admin.js") => {
            return asset("text/javascript", ADMIN_JS).into();
        }
        ("GET" | "HEAD", "/admin/sha256.js") => {
            return asset("text/javascript", SHA256_JS).into();
        }
        ("POST", "/admin/api/challenge") => {
            return match auth::challenge(env) {
                Some(c) => api(200, &c),
                None => error(
                    429,
                    "Too many logins in progress; try again in two minutes.",
                ),
            }
            .into();
        }
        ("POST", "/admin/api/login") => return login(env, req).into(),
        ("POST", "/admin/api/logout") => {
            auth::logout(env, req);
            let mut r = api(200, &json!({"ok": true}));
            let cookie = auth::set_cookie(env, req, None);
            r.headers.push(Header::new("set-cookie", &cookie));
            return r.into();
        }
        _ => {}
    }
    if !path.starts_with("/admin/api/") {
        return HttpResponse::text(404, "not found\n").into();
    }
    if auth::session(env, req).is_none() {
        return error(401, "Please log in (the session ended or is missing).").into();
    }
    let query = parse_query(&req.query);
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (method, path.trim_start_matches("/admin/api")) {
        ("GET", "/overview") => {
            let raw = crate::http::status_json(env, status);
            api(200, &lights::lights(env, status, &raw)).into()
        }
        ("GET", "/settings") => {
            let mut v = fields::current(env);
            let s = Settings::read(env);
            v["notification_path"] = json!(format!("/{}/{}/subscriptions", s.domain, s.instance));
            api(200, &v).into()
        }
        ("PUT" | "POST", "/settings") => save_settings(env, &req.body),
        ("GET", "/accounts") => api(200, &json!({"accounts": accounts_public(env)})).into(),
        ("POST", "/accounts") => add_account(env, &req.body),
        ("DELETE", p) if p.starts_with("/accounts/") => {
            remove_account(env, &percent_decode(&p["/accounts/".len()..]))
        }
        ("GET", "/matching") => {
            let pbx_names: Vec<String> = status
                .pbx
                .connections()
                .filter_map(|c| c.pbx.clone())
                .collect();
            let rows = matching_rows(env, &pbx_names, q("q").as_deref());
            if q("format").as_deref() == Some("csv") {
                HttpResponse {
                    status: 200,
                    headers: vec![
                        Header::new("content-type", "text/csv; charset=utf-8"),
                        Header::new(
                            "content-disposition",
                            "attachment; filename=\"matching.csv\"",
                        ),
                        Header::new("cache-control", "no-store"),
                    ],
                    body: to_csv(&rows).into_bytes(),
                }
                .into()
            } else {
                api(200, &json!({"rows": rows})).into()
            }
        }
        ("GET", "/log") => {
            let after = q("after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let filter = q("q").filter(|f| !f.is_empty());
            let audit = crate::audit::recent(env, 200, filter.as_deref());
            api(
                200,
                &json!({"lines": logtap::lines_after(after), "audit": audit}),
            )
            .into()
        }
        ("GET", "/provisioning") => api(200, &crate::provisioning::status(env, status.pbx)).into(),
        ("POST", "/provisioning") => match crate::provisioning::start(env, status.pbx) {
            Ok(state) => api(202, &json!({"last": state})).into(),
            Err(why) => error(409, &why).into(),
        },
        ("GET", "/trace") => api(200, &trace_json(env)).into(),
        ("PUT" | "POST", "/trace") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let t = body["target"].as_str().unwrap_or("");
            let on = body["on"].as_bool().unwrap_or(false);
            if logtap::HOST_ONLY.contains(&t) {
                return error(400, &format!("{t} is traced by the host: set its log filter on the control listener (PUT /log, e.g. `info,rustls=trace`).")).into();
            }
            if !logtap::set_switch(env, t, on) {
                return error(400, &format!("Unknown trace switch `{t}`.")).into();
            }
            env.log(
                Level::Info,
                target::CONFIG,
                &format!("trace switch {t} {}", if on { "on" } else { "off" }),
            );
            api(200, &trace_json(env)).into()
        }
        _ => error(404, "No such admin API.").into(),
    }
}

fn login(env: &mut impl Env, req: &InboundRequest) -> HttpResponse {
    match auth::login(env, &req.peer, &req.body) {
        Ok(ok) => {
            let cookie = auth::set_cookie(env, req, Some(&ok.token));
            let mut r = api(200, &json!({"csrf": ok.session.csrf}));
            r.headers.push(Header::new("set-cookie", &cookie));
            r
        }
        Err(auth::LoginError::Refused(why)) => error(401, why),
        Err(auth::LoginError::Wait(s)) => {
            let mut r = api(
                429,
                &json!({
                    "error": format!("Too many failed logins; try again in {s} s."),
                    "retry_after_s": s
                }),
            );
            r.headers.push(Header::new("retry-after", &s.to_string()));
            r
        }
    }
}

fn trace_json(env: &mut impl Env) -> Value {
    let switches: Vec<Value> = logtap::switches(env)
        .into_iter()
        .map(|(label, t, on)| {
            let host_only = logtap::HOST_ONLY.contains(&t);
            json!({"label": label, "target": t, "on": on, "host_only": host_only})
        })
        .collect();
    json!({"switches": switches})
}

/// Checks every value first; saves only when all pass, so a typo loses nothing.
fn save_settings(env: &mut impl Env, body: &[u8]) -> Outcome {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(400, "The request is not JSON.").into();
    };
    let Some(values) = body["values"].as_object() else {
        return error(400, "Expected {\"values\": {name: value}}.").into();
    };
    let mut errors = serde_json::Map::new();
    let mut changes: Vec<(&'static str, Option<String>)> = Vec::new();
    for (name, v) in values {
        let Some(field) = fields::field(name) else {
            errors.insert(name.clone(), json!(format!("{name} cannot be set here")));
            continue;
        };
        match v {
            Value::Null => changes.push((field.name, None)),
            Value::String(s) if field.kind == fields::Kind::Secret && s.is_empty() => {}
            Value::String(s) => match fields::check(field, s) {
                Ok(()) => changes.push((field.name, Some(s.trim().to_string()))),
                Err(e) => {
                    errors.insert(name.clone(), json!(e));
                }
            },
            Value::Bool(b) if field.kind == fields::Kind::Bool => {
                changes.push((field.name, Some(b.to_string())))
            }
            _ => {
                errors.insert(
                    name.clone(),
                    json!(format!("{}: expected text", field.label)),
                );
            }
        }
    }
    if !errors.is_empty() {
        return api(400, &json!({"error": "Nothing was saved; please correct the marked fields.", "errors": errors})).into();
    }
    let names: Vec<&str> = changes.iter().map(|(n, _)| *n).collect();
    for (name, value) in &changes {
        settings::save(env, name, value.as_deref());
    }
    // Names only: values may be secrets.
    env.log(
        Level::Info,
        target::CONFIG,
        &format!("admin page saved {}", names.join(", ")),
    );
    Outcome {
        response: api(200, &json!({"saved": names})),
        reconfigure: !names.is_empty(),
    }
}

fn accounts_all(env: &mut impl Env) -> Vec<Value> {
    settings::value(env, "presence.accounts")
        .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
        .unwrap_or_default()
}

/// The accounts without their passwords.
fn accounts_public(env: &mut impl Env) -> Vec<Value> {
    accounts_all(env)
        .iter()
        .map(|a| {
            let device = a["device-code"].as_bool() == Some(true);
            json!({
                "name": a["name"],
                "username": a["username"],
                "sign_in": if device { "device-code" } else { "password" },
                "password": if device { "" } else if a["password"].as_str().is_some_and(|p| !p.is_empty()) { "set" } else { "not set" },
            })
        })
        .collect()
}

fn add_account(env: &mut impl Env, body: &[u8]) -> Outcome {
    let a: Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| a[k].as_str().unwrap_or("").trim().to_string();
    let (name, username) = (text("name"), text("username"));
    let password = a["password"].as_str().unwrap_or("").to_string();
    let device = a["device-code"].as_bool() == Some(true);
    let mut list = accounts_all(env);
    let problem = if name.is_empty() || name.contains(['/', ' ']) {
        Some("Name: a short name without spaces or slashes, e.g. teams1".to_string())
    } else if list.iter().any(|x| x["name"].as_str() == Some(&name)) {
        Some(format!("Name: an account named {name} exists already"))
    } else if !device && !username.contains('@') {
        Some("User: the account's sign-in name, like teams1@contoso.com".to_string())
    } else if !device && password.is_empty() {
        Some("Password: required for password sign-in (or choose device code)".to_string())
    } else {
        None
    };
    if let Some(p) = problem {
        return error(400, &p).into();
    }
    list.push(if device {
        json!({"name": name, "username": username, "device-code": true})
    } else {
        json!({"name": name, "username": username, "password": password})
    });
    settings::save(
        env,
        "presence.accounts",
        Some(&Value::Array(list).to_string()),
    );
    env.log(
        Level::Info,
        target::CONFIG,
        &format!("admin page added Teams account {name}"),
    );
    Outcome {
        response: api(200, &json!({"accounts": accounts_public(env)})),
        reconfigure: true,
    }
}

fn remove_account(env: &mut impl Env, name: &str) -> Outcome {
    let mut list = accounts_all(env);
    let before = list.len();
    list.retain(|a| a["name"].as_str() != Some(name));
    if list.len() == before {
        return error(404, &format!("No Teams account named {name}.")).into();
    }
    settings::save(
        env,
        "presence.accounts",
        Some(&Value::Array(list).to_string()),
    );
    env.log(
        Level::Info,
        target::CONFIG,
        &format!("admin page removed Teams account {name}"),
    );
    Outcome {
        response: api(200, &json!({"accounts": accounts_public(env)})),
        reconfigure: true,
    }
}

/// Every PBX user the matching looked at: matched (with the Entra id) or why not.
fn matching_rows(env: &mut impl Env, pbx_names: &[String], filter: Option<&str>) -> Vec<Value> {
    let mut rows = Vec::new();
    store::for_each(env, matching::USER_PREFIX, |_, v| {
        if let Ok(m) = serde_json::from_slice::<Matched>(v) {
            rows.push(json!({"pbx_user": m.name, "guid": m.guid, "pbx": m.loc, "entra_id": m.id, "status": "matched", "reason": ""}));
        }
    });
    store::for_each(env, matching::PROBLEM_PREFIX, |_, v| {
        if let Ok(p) = serde_json::from_slice::<Problem>(v) {
            let reason = serde_json::to_value(p.reason)
                .ok()
                .and_then(|r| r.as_str().map(str::to_string))
                .unwrap_or_default();
            let words = match reason.as_str() {
                "no-candidate" => "No Entra user has this name".to_string(),
                "several-candidates" => {
                    format!("Several Entra users match: {}", p.candidates.join(", "))
                }
                "not-teams-licensed" => "The Entra user has no Teams licence".to_string(),
                "not-pbx-licensed" => "The PBX user has no connector licence".to_string(),
                other => other.to_string(),
            };
            rows.push(json!({"pbx_user": p.name, "guid": p.guid, "pbx": "", "entra_id": "", "status": reason, "reason": words}));
        }
    });
    // The PBX user's names, from the replicated rows of whichever PBX has them.
    for row in &mut rows {
        let guid = row["guid"].as_str().unwrap_or("").to_string();
        let assigned = row["pbx"].as_str().unwrap_or("").to_string();
        let found = std::iter::once(&assigned)
            .chain(pbx_names)
            .filter(|p| !p.is_empty())
            .find_map(|p| crate::pbx::users::get(env, p, &guid));
        if let Some(u) = found {
            row["name"] = json!(if u.dn.is_empty() { u.cn } else { u.dn });
            row["h323"] = json!(u.h323);
            if row["pbx"] == "" {
                row["pbx"] = json!(u.loc);
            }
        }
    }
    if let Some(f) = filter.map(str::to_lowercase).filter(|f| !f.is_empty()) {
        // Values only, so searching for a column name finds nothing.
        rows.retain(|r| {
            r.as_object().is_some_and(|o| {
                o.values()
                    .any(|v| v.as_str().is_some_and(|t| t.to_lowercase().contains(&f)))
            })
        });
    }
    rows.sort_by(|a, b| a["pbx_user"].as_str().cmp(&b["pbx_user"].as_str()));
    rows
}

fn to_csv(rows: &[Value]) -> String {
    let cols = [
        "name", "h323", "pbx_user", "guid", "pbx", "status", "entra_id", "reason",
    ];
    let cell = |s: &str| {
        // Quote everything; a leading formula character is neutralised for spreadsheets.
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    let mut out = cols.join(",") + "\r\n";
    for r in rows {
        let line: Vec<String> = cols
            .iter()
            .map(|c| cell(r[*c].as_str().unwrap_or("")))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
