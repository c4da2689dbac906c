//! Directory objects: users (with or without a Teams licence) and app registrations, plus a
//! deterministic generator for realistic tenants of any size.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Teams service plan (TEAMS1, service `TeamspaceAPI`).
pub const TEAMS_PLAN_ID: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";
/// An E3-like SKU carrying the Teams plan.
pub const E3_SKU_ID: &str = "05e9a617-0261-4cee-bb44-138d3ef5d965";
/// Microsoft Graph Change Tracking app id (caller of validation tokens).
pub const CHANGE_TRACKING_APP_ID: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

/// Random GUID from a seeded RNG.
pub fn guid(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.r#gen();
    // RFC 4122 version 4 / variant bits, like Entra object ids.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An Entra user.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    /// Object id.
    pub id: String,
    /// Display name (may be duplicated, may be non-ASCII).
    pub display_name: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Surname.
    pub surname: Option<String>,
    /// SMTP address; None for unlicensed users without a mailbox.
    pub mail: Option<String>,
    /// Alias.
    pub mail_nickname: String,
    /// UPN.
    pub user_principal_name: String,
    /// Job title.
    pub job_title: Option<String>,
    /// Business phones.
    pub business_phones: Vec<String>,
    /// Mobile.
    pub mobile_phone: Option<String>,
    /// Account enabled.
    pub account_enabled: bool,
    /// Holds an enabled Teams plan.
    pub teams_licensed: bool,
    /// Synced from on-premises AD.
    pub on_premises_sam_account_name: Option<String>,
    /// Synced UPN.
    pub on_premises_user_principal_name: Option<String>,
    /// Synced DN.
    pub on_premises_distinguished_name: Option<String>,
    /// Password for ROPC.
    pub password: String,
    /// Requires MFA (ROPC then fails with 50076).
    pub mfa_required: bool,
}

/// Properties returned without `$select` (graph.md 2.1).
pub const USER_DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// Properties that are single-user only: `$select` on the collection gives 501.
pub const USER_SINGLE_ONLY_PROPS: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "mailboxSettings",
    "skills",
    "interests",
    "mySite",
    "pastProjects",
    "responsibilities",
    "schools",
];

impl User {
    /// Full JSON of every property the fake knows.
    pub fn full_json(&self) -> Map<String, Value> {
        let plans = if self.teams_licensed {
            json!([{"assignedDateTime": "2024-03-01T10:00:00Z", "capabilityStatus": "Enabled",
                    "service": "TeamspaceAPI", "servicePlanId": TEAMS_PLAN_ID}])
        } else {
            json!([])
        };
        let lic = if self.teams_licensed {
            json!([{"skuId": E3_SKU_ID, "disabledPlans": []}])
        } else {
            json!([])
        };
        let v = json!({
            "id": self.id, "displayName": self.display_name, "givenName": self.given_name,
            "surname": self.surname, "mail": self.mail, "mailNickname": self.mail_nickname,
            "userPrincipalName": self.user_principal_name, "jobTitle": self.job_title,
            "businessPhones": self.business_phones, "mobilePhone": self.mobile_phone,
            "officeLocation": null, "preferredLanguage": null,
            "accountEnabled": self.account_enabled, "assignedPlans": plans, "assignedLicenses": lic,
            "onPremisesSamAccountName": self.on_premises_sam_account_name,
            "onPremisesUserPrincipalName": self.on_premises_user_principal_name,
            "onPremisesDistinguishedName": self.on_premises_distinguished_name,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// JSON restricted to `select` (or the default set).
    pub fn to_json(&self, select: Option<&[String]>) -> Value {
        let full = self.full_json();
        let mut out = Map::new();
        match select {
            Some(props) => {
                // `id` is always returned.
                out.insert("id".into(), full["id"].clone());
                for p in props {
                    if let Some((k, v)) = full.iter().find(|(k, _)| k.eq_ignore_ascii_case(p)) {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            None => {
                for p in USER_DEFAULT_PROPS {
                    out.insert((*p).into(), full.get(*p).cloned().unwrap_or(Value::Null));
                }
            }
        }
        Value::Object(out)
    }
}

/// Input for creating a user through the control API.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct UserSpec {
    /// Display name (required).
    pub display_name: String,
    /// UPN; derived from the display name when missing.
    pub user_principal_name: Option<String>,
    /// Mail; `Some("")` means no mail.
    pub mail: Option<String>,
    /// Password (default `Passw0rd!`).
    pub password: Option<String>,
    /// Teams licence (default true).
    pub teams: Option<bool>,
    /// Fixed object id.
    pub id: Option<String>,
    /// Account enabled (default true).
    pub account_enabled: Option<bool>,
    /// MFA required.
    pub mfa_required: bool,
    /// Synced sAMAccountName.
    pub on_premises_sam_account_name: Option<String>,
}

/// An app registration (or, through its users, a "communication user" setup).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AppReg {
    /// Application (client) id.
    pub client_id: String,
    /// Display name.
    pub display_name: String,
    /// Client secret value; None = public client only.
    pub secret: Option<String>,
    /// Secret expired (AADSTS7000222).
    pub secret_expired: bool,
    /// "Allow public client flows" (ROPC/device code without secret).
    pub public_client: bool,
    /// Consented delegated scopes, e.g. `Presence.Read.All`.
    pub delegated: Vec<String>,
    /// Granted application roles, e.g. `Presence.ReadWrite.All`.
    pub roles: Vec<String>,
}

const GIVEN: &[&str] = &[
    "Adele",
    "Jürgen",
    "Zoë",
    "Åsa",
    "José",
    "Łukasz",
    "Søren",
    "Chloé",
    "Mårten",
    "Ana",
    "Björn",
    "Renée",
    "Ömer",
    "Sven",
    "Анна",
    "Дмитрий",
    "Ingrid",
    "François",
    "Nuño",
    "Grace",
    "Megan",
    "Alex",
    "Ólafur",
    "Zdeněk",
    "Žaneta",
    "Ιωάννης",
    "美咲",
    "Bernd",
];
const SUR: &[&str] = &[
    "Vance",
    "Müller",
    "Weiß",
    "Øster",
    "Nguyễn",
    "O'Brien",
    "Smith",
    "García",
    "Kowalski",
    "Ström",
    "Łęcki",
    "Dvořák",
    "Иванова",
    "Petersen",
    "Schröder",
    "Bowen",
    "Brown",
    "Fischer",
    "山田",
    "Σταύρου",
];

fn ascii_alias(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let m = match c {
            'ä' | 'á' | 'å' | 'à' => "a",
            'Ä' | 'Å' | 'Á' => "A",
            'ö' | 'ø' | 'ó' | 'Ö' | 'Ø' | 'Ó' => "o",
            'ü' | 'ú' | 'Ü' => "u",
            'é' | 'è' | 'ë' | 'ě' | 'É' => "e",
            'ł' | 'Ł' => "l",
            'ñ' => "n",
            'ç' => "c",
            'ß' => "ss",
            'ž' | 'Ž' => "z",
            'ę' => "e",
            'ễ' => "e",
            _ if c.is_ascii_alphanumeric() => {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            _ => "",
        };
        out.push_str(m);
    }
    out
}

/// Build one user from a spec in `domain`.
pub fn user_from_spec(spec: UserSpec, domain: &str, rng: &mut StdRng) -> User {
    let id = spec.id.unwrap_or_else(|| guid(rng));
    let mut alias = ascii_alias(&spec.display_name.replace(' ', "."));
    if alias.is_empty() {
        alias = format!("u{}", &id[..8]);
    }
    let upn = spec
        .user_principal_name
        .unwrap_or_else(|| format!("{alias}@{domain}"));
    let nick = upn.split('@').next().unwrap_or("").to_string();
    let teams = spec.teams.unwrap_or(true);
    let mail = match spec.mail {
        Some(m) if m.is_empty() => None,
        Some(m) => Some(m),
        None => Some(upn.clone()),
    };
    let mut parts = spec.display_name.splitn(2, ' ');
    User {
        id,
        given_name: parts.next().map(str::to_string),
        surname: parts.next().map(str::to_string),
        display_name: spec.display_name,
        mail,
        mail_nickname: nick,
        user_principal_name: upn,
        account_enabled: spec.account_enabled.unwrap_or(true),
        teams_licensed: teams,
        password: spec.password.unwrap_or_else(|| "Passw0rd!".into()),
        mfa_required: spec.mfa_required,
        on_premises_sam_account_name: spec.on_premises_sam_account_name,
        ..Default::default()
    }
}

/// Generate `count` realistic users deterministically from `seed`: non-ASCII names, duplicate
/// display names, ~10 % without mail, ~15 % without Teams, ~3 % disabled, some synced from AD.
pub fn generate_users(count: usize, seed: u64, domain: &str) -> Vec<User> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let g = GIVEN[rng.gen_range(0..GIVEN.len())];
        let s = SUR[rng.gen_range(0..SUR.len())];
        let display = format!("{g} {s}");
        let mut alias = ascii_alias(&format!("{g}.{s}"));
        if alias.is_empty() || alias == "." {
            alias = "user".into();
        }
        // Non-ASCII names collapse to the same alias: count per alias.
        let n = seen.entry(alias.clone()).or_insert(0);
        *n += 1;
        // UPNs must be unique even when display names repeat.
        let upn = format!(
            "{alias}{}@{domain}",
            if *n > 1 {
                format!("{n}")
            } else {
                String::new()
            }
        );
        let roll: u32 = rng.gen_range(0..100);
        let teams = roll >= 15;
        let has_mail = rng.gen_range(0..100) >= 10 && teams;
        let synced = rng.gen_range(0..100) < 30;
        let mut u = user_from_spec(
            UserSpec {
                display_name: display,
                user_principal_name: Some(upn.clone()),
                mail: Some(if has_mail { upn.clone() } else { String::new() }),
                teams: Some(teams),
                account_enabled: Some(rng.gen_range(0..100) >= 3),
                on_premises_sam_account_name: synced.then(|| alias.chars().take(20).collect()),
                ..Default::default()
            },
            domain,
            &mut rng,
        );
        if synced {
            u.on_premises_user_principal_name = Some(upn.replace(domain, "corp.contoso.local"));
            u.on_premises_distinguished_name = Some(format!(
                "CN={},OU=Staff,DC=corp,DC=contoso,DC=local",
                u.display_name
            ));
        }
        u.business_phones = vec![format!("+49 30 5550{:04}", i % 10_000)];
        out.push(u);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_is_deterministic_and_realistic() {
        let a = generate_users(10_000, 7, "contoso.com");
        let b = generate_users(10_000, 7, "contoso.com");
        assert_eq!(a.len(), 10_000);
        assert_eq!(a[1234].id, b[1234].id);
        assert!(a.iter().any(|u| !u.display_name.is_ascii()));
        assert!(a.iter().any(|u| u.mail.is_none()));
        assert!(a.iter().any(|u| !u.teams_licensed));
        let mut names: Vec<_> = a.iter().map(|u| &u.display_name).collect();
        names.sort();
        names.dedup();
        assert!(names.len() < a.len(), "duplicate display names expected");
        let mut upns: Vec<_> = a.iter().map(|u| &u.user_principal_name).collect();
        upns.sort();
        upns.dedup();
        assert_eq!(upns.len(), a.len(), "UPNs unique");
    }
}
