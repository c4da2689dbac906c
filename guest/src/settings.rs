//! Settings read from the host's `config` interface (the instance's table in `apphost.toml`).
//!
//! Secrets (the instance password) are not cached here: they are read when needed, so they
//! live in guest memory as briefly as possible and never end up in a snapshot or a log.

use crate::env::{Env, Level, target};

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
            match env.config_get(name) {
                Some(v) if !v.trim().is_empty() => v.trim().to_string(),
                _ => default.to_string(),
            }
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
    fn file_values_win() {
        let mut env = TestEnv::new();
        env.set_config("pbx.presence-contact", "ms-teams:");
        env.set_config("pbx.master", "pbx-main");
        let s = Settings::read(&mut env);
        assert_eq!(s.presence_contact, "ms-teams:");
        assert_eq!(s.master.as_deref(), Some("pbx-main"));
    }
}
