//! The status lights: green, amber (working on it) or red, each with its reason in words,
//! built from what the connector already knows (the `/status` figures and the token states).

use serde_json::{Value, json};

use crate::env::Env;
use crate::graph::tokens::AuthState;
use crate::http::StatusInput;
use crate::settings;

/// KV key holding when the last notification from Microsoft arrived (ms since the epoch).
pub const LAST_NOTIFICATION_KEY: &str = "admin/last-notification";

fn light(group: &str, name: &str, color: &str, reason: impl Into<String>) -> Value {
    json!({"group": group, "name": name, "color": color, "reason": reason.into()})
}

/// Every light, in page order, plus the device-code sign-ins waiting for the administrator.
pub fn lights(env: &mut impl Env, s: &StatusInput, status: &Value) -> Value {
    let mut out = Vec::new();
    let master_name = status["master"].as_str().map(str::to_string);
    let wanted_master = settings::value(env, "pbx.master");
    let pbx = status["pbx"].as_array().cloned().unwrap_or_default();
    let pbx_conns: Vec<&Value> = pbx
        .iter()
        .filter(|c| !c["pbx"].is_null() || !c["logged_in"].as_bool().unwrap_or(false))
        .collect();
    match &master_name {
        Some(m) => {
            let conn = pbx.iter().find(|c| c["pbx"].as_str() == Some(m));
            let users = conn.and_then(|c| c["users"].as_u64()).unwrap_or(0);
            out.push(light(
                "PBX",
                &format!("Master PBX {m}"),
                "green",
                format!("Connected, {users} users replicated"),
            ));
        }
        None => {
            let reason = match (&wanted_master, pbx_conns.is_empty()) {
                (Some(w), _) => format!(
                    "Master PBX {w} is not connected: check the App object's URL and password"
                ),
                (None, true) => {
                    "No PBX is connected: create the App object on the PBX (see Provisioning)"
                        .to_string()
                }
                (None, false) => {
                    "A PBX connected but has not logged in: the App object's password may be wrong"
                        .to_string()
                }
            };
            out.push(light("PBX", "Master PBX", "red", reason));
        }
    }
    for c in &pbx {
        let name = c["pbx"].as_str().unwrap_or("");
        if name.is_empty() || Some(name) == master_name.as_deref() {
            continue;
        }
        let users = c["users"].as_u64().unwrap_or(0);
        out.push(light(
            "PBX",
            &format!("Slave PBX {name}"),
            "green",
            format!("Connected, {users} users replicated"),
        ));
    }
    for c in pbx
        .iter()
        .filter(|c| !c["logged_in"].as_bool().unwrap_or(false))
    {
        let peer = c["peer"].as_str().unwrap_or("?");
        out.push(light(
            "PBX",
            &format!("Connection from {peer}"),
            "red",
            "Connected but not logged in: wrong App object password or waiting for AppLogin",
        ));
    }

    // Authentication of the F1 app registration and its communication users.
    let mut waiting = Vec::new();
    let mut any_ready = false;
    let mut first_error = None;
    for name in s.accounts {
        let (color, reason) = match s.tokens.state(name) {
            Some(AuthState::Ready) => {
                any_ready = true;
                ("green", "Signed in".to_string())
            }
            Some(AuthState::Requesting) => ("amber", "Signing in…".to_string()),
            Some(AuthState::Idle) | None => ("amber", "Not signed in yet".to_string()),
            Some(AuthState::AwaitingDeviceSignIn {
                user_code,
                verification_uri,
            }) => {
                waiting.push(json!({"account": name, "user_code": user_code, "verification_uri": verification_uri}));
                (
                    "amber",
                    format!(
                        "Waiting for the device sign-in: enter code {user_code} at {verification_uri}"
                    ),
                )
            }
            Some(AuthState::Failed(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
                ("red", e.to_string())
            }
        };
        out.push(light(
            "Authentication",
            &format!("Teams account {name}"),
            color,
            reason,
        ));
    }
    let f1 = settings::value(env, "presence.client-id").is_some()
        && settings::value(env, "presence.tenant").is_some();
    let registration = if !f1 {
        light(
            "Authentication",
            "App registration F1 (Teams → PBX)",
            "grey",
            "Not configured: set Tenant and Client ID",
        )
    } else if s.accounts.is_empty() {
        light(
            "Authentication",
            "App registration F1 (Teams → PBX)",
            "red",
            "No Teams account: add one under Manage Teams Accounts",
        )
    } else if any_ready {
        light(
            "Authentication",
            "App registration F1 (Teams → PBX)",
            "green",
            "Tokens are issued for it",
        )
    } else if let Some(e) = first_error {
        light(
            "Authentication",
            "App registration F1 (Teams → PBX)",
            "red",
            e,
        )
    } else {
        light(
            "Authentication",
            "App registration F1 (Teams → PBX)",
            "amber",
            "Signing in…",
        )
    };
    out.push(registration);
    // The app registrations of F2 and F3 sign in through the connector's token manager under
    // these account names; F4 keeps its own tokens and signs in at the first search.
    for (feature, prefix, account) in [
        (
            "F2 (PBX → Teams)",
            "presence-out",
            Some(crate::presence_out::ACCOUNT),
        ),
        ("F3 (Calendar)", "calendar", Some(crate::calendar::ACCOUNT)),
        ("F4 (Contact search)", "contact-search", None),
    ] {
        let configured = settings::value(env, &format!("{prefix}.client-id")).is_some()
            && settings::value(env, &format!("{prefix}.tenant")).is_some()
            && settings::value(env, &format!("{prefix}.client-secret")).is_some();
        let (color, reason) = if !configured {
            (
                "grey",
                "Not configured: set Tenant, Client ID and Client secret".to_string(),
            )
        } else {
            match account.map(|a| s.tokens.state(a)) {
                Some(Some(AuthState::Ready)) => ("green", "Tokens are issued for it".to_string()),
                Some(Some(AuthState::Failed(e))) => ("red", e.to_string()),
                Some(_) => ("amber", "Signing in…".to_string()),
                // Contact search keeps its own token; its status block says how it went.
                None => match status["contact_search"]["sign_in"].as_str() {
                    Some("ready") => ("green", "Tokens are issued for it".to_string()),
                    Some(f) if f.starts_with("failed") => ("red", f.to_string()),
                    _ => ("amber", "Signing in…".to_string()),
                },
            }
        };
        out.push(light(
            "Authentication",
            &format!("App registration {feature}"),
            color,
            reason,
        ));
    }

    // Presence subscriptions, one per account.
    let now = env.now_ms();
    let public_url = settings::value(env, "presence.public-url");
    if let Some(subs) = status["presence"]["subscriptions"].as_array() {
        for sub in subs {
            let account = sub["account"].as_str().unwrap_or("?");
            let users = sub["users"].as_u64().unwrap_or(0);
            let (color, reason) = match (sub["subscription"].as_str(), sub["expires"].as_str()) {
                (Some(_), Some(exp)) => {
                    ("green", format!("Active for {users} users, expires {exp}"))
                }
                _ if public_url.is_none() => (
                    "red",
                    "No Notification URL: presence is only read every 30 minutes".to_string(),
                ),
                _ if sub["phase"] == "busy" => ("amber", "Subscribing…".to_string()),
                // Listed and idle without a subscription: the users all fit on other accounts.
                _ if sub["phase"] == "idle"
                    && s.tokens.state(account) == Some(&AuthState::Ready) =>
                {
                    (
                        "grey",
                        "No users assigned to this account now, so no subscription is needed"
                            .to_string(),
                    )
                }
                _ => (
                    "red",
                    "No subscription yet: waiting for the account's sign-in or Microsoft's answer"
                        .to_string(),
                ),
            };
            out.push(light(
                "Subscriptions",
                &format!("Presence subscription {account}"),
                color,
                reason,
            ));
        }
        let matched = status["presence"]["matched"].as_u64().unwrap_or(0);
        let entra = status["presence"]["entra_users"].as_u64();
        let (color, reason) = match entra {
            None => ("amber", "Entra users not read yet".to_string()),
            Some(n) if matched > 0 => (
                "green",
                format!("{matched} PBX users matched of {n} Entra users"),
            ),
            Some(n) => (
                "red",
                format!("No PBX user matched any of {n} Entra users: check the matching fields"),
            ),
        };
        out.push(light("Subscriptions", "Matching", color, reason));
    }
    // Calendar (F3): one event subscription per matched user.
    let cal = &status["calendar"];
    let (color, reason) = if cal.is_null() {
        ("grey", "Not configured".to_string())
    } else {
        let users = cal["users"].as_u64().unwrap_or(0);
        let subs = cal["subscriptions"].as_u64().unwrap_or(0);
        let busy = cal["in_event"].as_u64().unwrap_or(0);
        if users == 0 {
            ("amber", "No matched users yet".to_string())
        } else if subs >= users {
            (
                "green",
                format!("{subs} subscriptions for {users} users; {busy} in an event now"),
            )
        } else {
            ("amber", format!("Subscribing: {subs} of {users} users"))
        }
    };
    out.push(light(
        "Subscriptions",
        "Calendar subscriptions",
        color,
        reason,
    ));
    // PBX -> Teams (F2): the PBX users whose presence is watched.
    let out_status = &status["presence_out"];
    if !out_status.is_null() {
        let watched = out_status["monitored"].as_u64().unwrap_or(0);
        let hidden = out_status["not_visible"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        let (color, reason) = match (out_status["auth"].as_str(), hidden) {
            (Some("ready"), 0) => ("green", format!("Watching {watched} PBX users")),
            (Some("ready"), n) => (
                "red",
                format!(
                    "Watching {watched} PBX users; {n} not visible to the App object (give it presence visibility)"
                ),
            ),
            _ => (
                "amber",
                "Waiting for the app registration's sign-in".to_string(),
            ),
        };
        out.push(light(
            "Subscriptions",
            "PBX presence monitors",
            color,
            reason,
        ));
    }
    let search = &status["contact_search"];
    let (color, reason) = match search["sign_in"].as_str() {
        None => ("grey", "Not configured".to_string()),
        Some("ready") => (
            "green",
            format!(
                "Answering the Phone App's searches: {} answered, {} with results{}",
                search["searches_answered"].as_u64().unwrap_or(0),
                search["searches_with_results"].as_u64().unwrap_or(0),
                match search["throttled_mailboxes"].as_u64() {
                    Some(n) if n > 0 => format!("; Microsoft throttles {n} mailbox(es) for now"),
                    _ => String::new(),
                }
            ),
        ),
        Some(f) if f.starts_with("failed") => (
            "red",
            format!("Searches answer empty: the app registration cannot sign in ({f})"),
        ),
        Some(_) => ("amber", "Signing in…".to_string()),
    };
    out.push(light("Subscriptions", "Contact search", color, reason));
    let last = crate::store::get_u64(env, LAST_NOTIFICATION_KEY);
    json!({
        "lights": out,
        "device_sign_ins": waiting,
        "last_notification_s_ago": last.map(|t| now.saturating_sub(t) / 1000),
        "version": s.version,
        "uptime_s": status["uptime_s"],
    })
}
