//! Settings read from the host's `config` interface (the instance's table in `apphost.toml`).
//!
//! Secrets (the instance password) are not cached here: they are read when needed, so they
//! live in guest memory as briefly as possible and never end up in a snapshot or a log.

use crate::env::{Env, Level, target};
use crate::graph::token::{self, Client};
use crate::graph::tokens::SignIn;

/// One setting's value, trimmed; `None` when missing or empty.
///
/// Every feature reads its settings through this function, so where settings come from is
/// decided in one place: a value saved from the admin page wins over the host's `config`.
pub fn value(env: &mut impl Env, name: &str) -> Option<String> {
    saved(env, name)
        .or_else(|| env.config_get(name))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// KV prefix of plain values saved from the admin page (`settings/value/<name>`).
pub const SAVED_PREFIX: &str = "settings/value/";
/// KV prefix of secret values saved from the admin page, sealed (`settings/sealed/<name>`).
pub const SEALED_PREFIX: &str = "settings/sealed/";

/// Whether a setting holds a secret: passwords, client secrets and the account list (which
/// carries account passwords). Secrets are stored sealed and never shown or logged.
pub fn is_secret(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || name == "presence.accounts"
}

/// The value saved from the admin page, if any (an empty string hides the host's value).
pub fn saved(env: &mut impl Env, name: &str) -> Option<String> {
    if is_secret(name) {
        let sealed = env.kv_get(&format!("{SEALED_PREFIX}{name}"))?;
        match env.unseal(&sealed) {
            Ok(plain) => String::from_utf8(plain).ok(),
            Err(_) => {
                // A changed master key: the host's value (if any) is better than nothing.
                env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("the saved value of {name} cannot be unsealed; save it again"),
                );
                None
            }
        }
    } else {
        let raw = env.kv_get(&format!("{SAVED_PREFIX}{name}"))?;
        String::from_utf8(raw).ok()
    }
}

/// Saves a value from the admin page (secrets sealed); `None` forgets the saved value, so the
/// host's `config` applies again.
pub fn save(env: &mut impl Env, name: &str, value: Option<&str>) {
    let (key, other) = if is_secret(name) {
        (
            format!("{SEALED_PREFIX}{name}"),
            format!("{SAVED_PREFIX}{name}"),
        )
    } else {
        (
            format!("{SAVED_PREFIX}{name}"),
            format!("{SEALED_PREFIX}{name}"),
        )
    };
    env.kv_delete(&other);
    match value {
        None => env.kv_delete(&key),
        Some(v) if is_secret(name) => {
            let sealed = env.seal(v.as_bytes());
            env.kv_set(&key, &sealed);
        }
        Some(v) => env.kv_set(&key, v.as_bytes()),
    }
}

/// Names of the settings whose value saved from the admin page hides a value the host's
/// `config` (`apphost.toml`) also has. Logged at every start, so an automated deployment's
/// file is never overridden silently.
pub fn overriding_host(env: &mut impl Env) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in [SAVED_PREFIX, SEALED_PREFIX] {
        for key in crate::store::keys(env, prefix) {
            let name = &key[prefix.len()..];
            if env.config_get(name).is_some() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names
}

/// The licence a user needs to be synced (innovaphone.md §6).
pub const DEFAULT_LICENCE: &str = "App(innovaphone-microsoft365)";

/// Settings the connector uses, with their defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `instance.name`.
    pub instance: String,
    /// `instance.domain`.
    pub domain: String,
    /// `pbx.presence-contact`: the contact of the presence item the connector owns in the PBX
    /// (never the user's `tel:`), default `teams:`.
    pub presence_contact: String,
    /// `pbx.calendar-contact`: the calendar presence contact, default `calendar:`.
    pub calendar_contact: String,
    /// `pbx.licence`: licence checked with `CheckAppLic`, default `App(innovaphone-microsoft365)`.
    pub licence: String,
    /// `pbx.master`: name of the master PBX; when absent the first PBX that logged in is master.
    pub master: Option<String>,
}

impl Settings {
    /// Reads every setting, applying defaults for what is missing or empty.
    pub fn read(env: &mut impl Env) -> Self {
        let mut get = |name: &str, default: &str| -> String {
            value(env, name).unwrap_or_else(|| default.to_string())
        };
        let s = Settings {
            instance: get("instance.name", ""),
            domain: get("instance.domain", ""),
            presence_contact: get("pbx.presence-contact", "teams:"),
            calendar_contact: get("pbx.calendar-contact", "calendar:"),
            licence: get("pbx.licence", DEFAULT_LICENCE),
            master: Some(get("pbx.master", "")).filter(|m| !m.is_empty()),
        };
        if s.presence_contact == "tel:" {
            env.log(
                Level::Warn,
                target::CONFIG,
                "pbx.presence-contact is `tel:`, the user's own item; the connector will overwrite it",
            );
        }
        s
    }

    /// The instance password (AppLogin shared secret), read fresh from the host.
    pub fn instance_password(env: &mut impl Env) -> Option<String> {
        env.config_get("instance.password")
            .filter(|p| !p.is_empty())
    }
}

/// One Teams communication user (F1) as configured in `presence.accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsAccount {
    /// Account name (key of its token and, later, its subscription).
    pub name: String,
    /// How it signs in.
    pub sign_in: SignIn,
}

/// The Teams -> PBX presence app registration and its communication users.
///
/// Settings: `graph.login-url` (default the global cloud), `graph.url` (Graph base URL, default
/// `https://graph.microsoft.com`), `graph.resource` (token resource, default `graph.url`), `presence.tenant`, `presence.client-id`, and
/// `presence.accounts`, a JSON array of `{"name", "username", "password"}` (ROPC) or
/// `{"name", "device-code": true}` objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSettings {
    /// The app registration (a public client: no secret).
    pub client: Client,
    /// Delegated scope requested for the accounts.
    pub scope: String,
    /// The communication users.
    pub accounts: Vec<TeamsAccount>,
}

impl PresenceSettings {
    /// Reads the presence settings; `None` when the feature is not configured. Problems are
    /// logged under the `config` target, naming the setting to fix.
    pub fn read(env: &mut impl Env) -> Option<Self> {
        let mut get = |name: &str| value(env, name);
        let tenant = get("presence.tenant").filter(|v| !v.is_empty());
        let client_id = get("presence.client-id").filter(|v| !v.is_empty());
        let accounts = get("presence.accounts").filter(|v| !v.is_empty());
        let login = get("graph.login-url").filter(|v| !v.is_empty());
        // The token's resource is Graph's identity, which differs from the base URL of the
        // calls only behind a proxy or in tests against a fake: `graph.resource` overrides it.
        let graph = get("graph.resource")
            .filter(|v| !v.is_empty())
            .or_else(|| get("graph.url").filter(|v| !v.is_empty()));
        let (Some(tenant), Some(client_id)) = (tenant, client_id) else {
            if accounts.is_some() {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    "presence.accounts is set but presence.tenant or presence.client-id is missing",
                );
            }
            return None;
        };
        let accounts = match accounts.as_deref().map(parse_accounts) {
            Some(Ok(list)) => list,
            Some(Err(e)) => {
                env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("presence.accounts: {e}"),
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        Some(PresenceSettings {
            client: Client {
                login_base: login.unwrap_or_else(|| token::DEFAULT_LOGIN_BASE.into()),
                tenant,
                client_id,
                client_secret: None,
            },
            scope: token::delegated_scope(
                graph.as_deref().unwrap_or(token::DEFAULT_GRAPH_RESOURCE),
            ),
            accounts,
        })
    }
}

/// Parses `presence.accounts`. Errors name the entry but never echo a password.
fn parse_accounts(text: &str) -> Result<Vec<TeamsAccount>, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON array of accounts: {e}"))?;
    let mut out: Vec<TeamsAccount> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let field = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let name = field("name");
        if name.is_empty() {
            return Err(format!("entry {i} has no name"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(format!("account name `{name}` is used twice"));
        }
        let device = a.get("device-code").and_then(|v| v.as_bool()) == Some(true);
        let (username, password) = (field("username"), field("password"));
        let sign_in = if device {
            SignIn::DeviceCode
        } else if !username.is_empty() && !password.is_empty() {
            SignIn::Password { username, password }
        } else {
            return Err(format!(
                "account `{name}` needs username and password, or \"device-code\": true"
            ));
        };
        out.push(TeamsAccount { name, sign_in });
    }
    Ok(out)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: String::new(),
            domain: String::new(),
            presence_contact: "teams:".into(),
            calendar_contact: "calendar:".into(),
            licence: DEFAULT_LICENCE.into(),
            master: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn defaults_apply() {
        let mut env = TestEnv::new();
        let s = Settings::read(&mut env);
        assert_eq!(s.presence_contact, "teams:");
        assert_eq!(s.licence, DEFAULT_LICENCE);
        assert_eq!(s.instance, "m365");
        assert_eq!(s.master, None);
    }

    #[test]
    fn presence_accounts_are_read() {
        let mut env = TestEnv::new();
        assert_eq!(PresenceSettings::read(&mut env), None);
        env.set_config("presence.tenant", "contoso.onmicrosoft.com");
        env.set_config("presence.client-id", "cid");
        env.set_config("graph.url", "https://graph.microsoft.us");
        env.set_config(
            "presence.accounts",
            r#"[{"name":"a","username":"svc@contoso.com","password":"P@ss&w+rd%! #<"},{"name":"b","device-code":true}]"#,
        );
        let p = PresenceSettings::read(&mut env).unwrap();
        assert_eq!(p.client.login_base, "https://login.microsoftonline.com");
        assert_eq!(
            p.scope,
            "https://graph.microsoft.us/.default offline_access"
        );
        assert_eq!(p.accounts.len(), 2);
        assert_eq!(p.accounts[1].sign_in, SignIn::DeviceCode);
        // Calls to a fake or proxy, tokens for the real resource.
        env.set_config("graph.url", "https://127.0.0.1:8443");
        env.set_config("graph.resource", "https://graph.microsoft.com");
        let p = PresenceSettings::read(&mut env).unwrap();
        assert_eq!(
            p.scope,
            "https://graph.microsoft.com/.default offline_access"
        );
    }

    #[test]
    fn bad_accounts_are_reported_without_secrets() {
        let mut env = TestEnv::new();
        env.set_config("presence.tenant", "t");
        env.set_config("presence.client-id", "c");
        env.set_config(
            "presence.accounts",
            r#"[{"name":"a","password":"hunter2"}]"#,
        );
        let p = PresenceSettings::read(&mut env).unwrap();
        assert!(p.accounts.is_empty());
        assert!(env.logged("account `a` needs username and password"));
        assert!(!env.logged("hunter2"));
        env.set_config("presence.accounts", "[{");
        PresenceSettings::read(&mut env);
        assert!(env.logged("not a JSON array"));
        env.set_config(
            "presence.accounts",
            r#"[{"name":"a","device-code":true},{"name":"a","device-code":true}]"#,
        );
        PresenceSettings::read(&mut env);
        assert!(env.logged("used twice"));
    }

    #[test]
    fn saved_values_that_hide_the_hosts_are_named() {
        let mut env = TestEnv::new();
        env.set_config("presence.tenant", "from-file");
        env.set_config("presence.client-secret", "file-secret");
        save(&mut env, "presence.tenant", Some("from-page"));
        save(&mut env, "presence.client-secret", Some("page-secret"));
        save(&mut env, "calendar.tenant", Some("only-on-page"));
        assert_eq!(
            overriding_host(&mut env),
            vec!["presence.client-secret", "presence.tenant"]
        );
    }

    #[test]
    fn saved_values_win_and_secrets_are_sealed() {
        let mut env = TestEnv::new();
        env.set_config("presence.tenant", "from-file");
        env.set_config("presence.client-secret", "file-secret");
        assert_eq!(
            value(&mut env, "presence.tenant").as_deref(),
            Some("from-file")
        );
        save(&mut env, "presence.tenant", Some(" saved "));
        save(&mut env, "presence.client-secret", Some("s3cr3t-value"));
        assert_eq!(value(&mut env, "presence.tenant").as_deref(), Some("saved"));
        assert_eq!(
            value(&mut env, "presence.client-secret").as_deref(),
            Some("s3cr3t-value")
        );
        // Nothing in the KV shows the secret in clear.
        assert!(
            env.kv
                .values()
                .all(|v| !String::from_utf8_lossy(v).contains("s3cr3t"))
        );
        // An empty saved value hides the host's; forgetting it brings the host's back.
        save(&mut env, "presence.tenant", Some(""));
        assert_eq!(value(&mut env, "presence.tenant"), None);
        save(&mut env, "presence.tenant", None);
        assert_eq!(
            value(&mut env, "presence.tenant").as_deref(),
            Some("from-file")
        );
        assert!(is_secret("presence.accounts") && !is_secret("presence.client-id"));
    }

    #[test]
    fn file_values_win() {
        let mut env = TestEnv::new();
        env.set_config("pbx.presence-contact", "ms-teams:");
        env.set_config("pbx.master", "pbx-main");
        let s = Settings::read(&mut env);
        assert_eq!(s.presence_contact, "ms-teams:");
        assert_eq!(s.master.as_deref(), Some("pbx-main"));
    }
}
