//! The settings the admin page edits: one row per field with its form group, label, kind and
//! the check a value must pass before anything is saved.

use serde_json::{Value, json};

use crate::env::Env;
use crate::settings;

/// What a field holds, which decides its check and its form control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// Entra tenant: a tenant id (GUID) or a domain.
    Tenant,
    /// Application (client) id: a GUID.
    ClientId,
    /// Write-only secret.
    Secret,
    /// An absolute `https://` URL (or `http://` on loopback, for tests against fakes).
    Url,
    /// `true` or `false`.
    Bool,
    /// One of a fixed list.
    Choice(&'static [&'static str]),
}

/// One editable setting.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Setting name, as in `guest/README.md`.
    pub name: &'static str,
    /// Form group (feature).
    pub group: &'static str,
    /// Label on the page.
    pub label: &'static str,
    /// Kind of value.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
}

const ENTRA_FIELDS: &[&str] = &[
    "displayName",
    "mail",
    "mailNickname",
    "onPremisesDistinguishedName",
    "onPremisesSamAccountName",
    "onPremisesUserPrincipalName",
    "userPrincipalName",
];

/// Every field the page edits, in page order.
pub const FIELDS: &[Field] = &[
    Field {
        name: "pbx.master",
        group: "PBX",
        label: "Master PBX",
        kind: Kind::Text,
        help: "Name of the master PBX; empty: the first PBX that logs in",
    },
    Field {
        name: "presence.tenant",
        group: "F1 Teams → PBX presence",
        label: "Tenant",
        kind: Kind::Tenant,
        help: "Tenant ID or domain of the app registration",
    },
    Field {
        name: "presence.client-id",
        group: "F1 Teams → PBX presence",
        label: "Client ID",
        kind: Kind::ClientId,
        help: "Application (client) ID; a public client, no secret",
    },
    Field {
        name: "presence.public-url",
        group: "F1 Teams → PBX presence",
        label: "Notification URL",
        kind: Kind::Url,
        help: "Public HTTPS base; Graph posts to <url>/<domain>/<instance>/subscriptions",
    },
    Field {
        name: "presence.notifications",
        group: "F1 Teams → PBX presence",
        label: "Notifications",
        kind: Kind::Choice(&["rich", "plain"]),
        help: "rich: encrypted with the presence; plain: read after each notification",
    },
    Field {
        name: "presence-out.tenant",
        group: "F2 PBX → Teams presence",
        label: "Tenant",
        kind: Kind::Tenant,
        help: "Tenant ID or domain of the app registration",
    },
    Field {
        name: "presence-out.client-id",
        group: "F2 PBX → Teams presence",
        label: "Client ID",
        kind: Kind::ClientId,
        help: "Application (client) ID",
    },
    Field {
        name: "presence-out.client-secret",
        group: "F2 PBX → Teams presence",
        label: "Client secret",
        kind: Kind::Secret,
        help: "Write-only; leave empty to keep the saved one",
    },
    Field {
        name: "presence-out.dnd-during-calls",
        group: "F2 PBX → Teams presence",
        label: "DND during PBX calls",
        kind: Kind::Bool,
        help: "Teams does not ring while the user is in a PBX call",
    },
    Field {
        name: "presence-out.alien-calls",
        group: "F2 PBX → Teams presence",
        label: "Alien calls",
        kind: Kind::Bool,
        help: "A Teams call makes the user busy for PBX calls",
    },
    Field {
        name: "calendar.tenant",
        group: "F3 Calendar presence",
        label: "Tenant",
        kind: Kind::Tenant,
        help: "Tenant ID or domain of the app registration",
    },
    Field {
        name: "calendar.client-id",
        group: "F3 Calendar presence",
        label: "Client ID",
        kind: Kind::ClientId,
        help: "Application (client) ID",
    },
    Field {
        name: "calendar.client-secret",
        group: "F3 Calendar presence",
        label: "Client secret",
        kind: Kind::Secret,
        help: "Write-only; leave empty to keep the saved one",
    },
    Field {
        name: "calendar.public-url",
        group: "F3 Calendar presence",
        label: "Notification URL",
        kind: Kind::Url,
        help: "Public HTTPS base for calendar notifications; empty: the F1 Notification URL",
    },
    Field {
        name: "contact-search.tenant",
        group: "F4 Contact search",
        label: "Tenant",
        kind: Kind::Tenant,
        help: "Tenant ID or domain of the app registration",
    },
    Field {
        name: "contact-search.client-id",
        group: "F4 Contact search",
        label: "Client ID",
        kind: Kind::ClientId,
        help: "Application (client) ID",
    },
    Field {
        name: "contact-search.client-secret",
        group: "F4 Contact search",
        label: "Client secret",
        kind: Kind::Secret,
        help: "Write-only; leave empty to keep the saved one",
    },
    Field {
        name: "contact-search.directory",
        group: "F4 Contact search",
        label: "Search the directory",
        kind: Kind::Bool,
        help: "Also search the company directory, not only the user's own contacts",
    },
    Field {
        name: "matching.pbx-field",
        group: "Matching",
        label: "PBX field",
        kind: Kind::Choice(&["cn", "h323"]),
        help: "cn: Long Name, h323: Name",
    },
    Field {
        name: "matching.entra-field",
        group: "Matching",
        label: "Entra field",
        kind: Kind::Choice(ENTRA_FIELDS),
        help: "The Entra user property compared with the PBX field",
    },
    Field {
        name: "matching.strip-domain",
        group: "Matching",
        label: "Strip domain",
        kind: Kind::Bool,
        help: "Compare only the part before @ (both sides)",
    },
];

/// The field of a setting name, if the page may edit it.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Every field with its current value (secrets only `set` or `not set`) and where it comes from.
pub fn current(env: &mut impl Env) -> Value {
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|f| {
            let saved = settings::saved(env, f.name);
            let source = if saved.is_some() {
                "saved"
            } else if env.config_get(f.name).is_some() {
                "host"
            } else {
                "default"
            };
            let value = settings::value(env, f.name);
            let mut row = json!({
                "name": f.name, "group": f.group, "label": f.label, "help": f.help,
                "kind": kind_name(f.kind), "source": source,
                // A saved value hiding apphost.toml's says so on the page (and in the log).
                "overrides_host": saved.is_some() && env.config_get(f.name).is_some(),
            });
            if let Kind::Choice(options) = f.kind {
                row["options"] = json!(options);
            }
            if f.kind == Kind::Secret {
                row["set"] = json!(value.is_some());
            } else {
                row["value"] = json!(value.unwrap_or_default());
            }
            row
        })
        .collect();
    json!({ "fields": fields })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Tenant => "tenant",
        Kind::ClientId => "client-id",
        Kind::Secret => "secret",
        Kind::Url => "url",
        Kind::Bool => "bool",
        Kind::Choice(_) => "choice",
    }
}

/// Checks one value; the error says what is expected. Empty values are always allowed (they
/// switch the feature off or restore the default).
pub fn check(field: &Field, value: &str) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(());
    }
    match field.kind {
        Kind::Text | Kind::Secret => Ok(()),
        Kind::Tenant if is_guid(v) || is_domain(v) => Ok(()),
        Kind::Tenant => Err(format!(
            "{}: a tenant ID (GUID) or a domain like contoso.onmicrosoft.com",
            field.label
        )),
        Kind::ClientId if is_guid(v) => Ok(()),
        Kind::ClientId => Err(format!(
            "{}: a GUID like 00000000-0000-0000-0000-000000000000, from the app registration's overview",
            field.label
        )),
        Kind::Url if is_url(v) => Ok(()),
        Kind::Url => Err(format!(
            "{}: an absolute https:// URL without a path, like https://connector.example.com",
            field.label
        )),
        Kind::Bool if v == "true" || v == "false" => Ok(()),
        Kind::Bool => Err(format!("{}: true or false", field.label)),
        Kind::Choice(options) if options.contains(&v) => Ok(()),
        Kind::Choice(options) => Err(format!("{}: one of {}", field.label, options.join(", "))),
    }
}

/// 8-4-4-4-12 hex digits.
pub fn is_guid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_domain(v: &str) -> bool {
    v.contains('.')
        && v.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_url(v: &str) -> bool {
    let rest = if let Some(r) = v.strip_prefix("https://") {
        r
    } else if let Some(r) = v.strip_prefix("http://") {
        // Plain HTTP only for loopback (tests against fakes); Graph insists on HTTPS.
        if !(r.starts_with("127.0.0.1") || r.starts_with("localhost") || r.starts_with("[::1]")) {
            return false;
        }
        r
    } else {
        return false;
    };
    let host = rest.trim_end_matches('/');
    !host.is_empty() && !host.contains(['/', ' ', '?', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_explain_what_is_expected() {
        let tenant = field("presence.tenant").unwrap();
        assert!(check(tenant, "contoso.onmicrosoft.com").is_ok());
        assert!(check(tenant, "0b5e8c0a-1111-4a4a-9b9b-0123456789ab").is_ok());
        assert!(
            check(tenant, "not a tenant")
                .unwrap_err()
                .contains("tenant ID (GUID)")
        );
        let id = field("presence.client-id").unwrap();
        assert!(check(id, "abc").unwrap_err().contains("GUID"));
        let url = field("presence.public-url").unwrap();
        assert!(check(url, "https://connector.example.com").is_ok());
        assert!(check(url, "http://connector.example.com").is_err());
        assert!(check(url, "https://x.example.com/path").is_err());
        assert!(check(url, "http://127.0.0.1:8080").is_ok());
        let strip = field("matching.strip-domain").unwrap();
        assert_eq!(
            check(strip, "yes").unwrap_err(),
            "Strip domain: true or false"
        );
        assert!(check(field("matching.entra-field").unwrap(), "mail").is_ok());
        assert!(check(tenant, "").is_ok());
    }
}
