//! The same people on both sides: users that exist in the fake tenant and in the fake PBX with
//! matching e-mail addresses, so the connector can pair them. Deterministic for a given seed.

use serde_json::{Value, json};

/// The licence the connector checks (innovaphone.md §6).
pub const CONNECTOR_LICENCE: &str = "App(innovaphone-microsoft365)";
/// Mail domain of every generated person.
pub const MAIL_DOMAIN: &str = "contoso.onmicrosoft.com";

const GIVEN: &[&str] = &[
    "Ada", "Björn", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Ines", "José", "Kai",
    "Lena", "Mårten", "Nora", "Ömer", "Priya", "Quentin", "Renée", "Søren", "Tomasz", "Ulla",
    "Vera", "Wen", "Yusuf", "Zoë",
];
const FAMILY: &[&str] = &[
    "Almeida",
    "Berg",
    "Chen",
    "Dubois",
    "Eriksson",
    "Fischer",
    "García",
    "Hansen",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Lindqvist",
    "Müller",
    "Novak",
    "O'Brien",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Umarov",
    "Virtanen",
    "Weber",
    "Yilmaz",
    "Zimmermann",
];

/// One person, present in both fakes.
#[derive(Debug, Clone)]
pub struct Person {
    /// Display name ("Given Family").
    pub name: String,
    /// E-mail and UPN.
    pub email: String,
    /// PBX object GUID (32 hex digits).
    pub guid: String,
    /// PBX name (SIP user part).
    pub h323: String,
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn ascii(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'å' | 'ä' => Some('a'),
            'é' => Some('e'),
            'ö' | 'Ö' | 'ø' => Some('o'),
            'ü' => Some('u'),
            'í' => Some('i'),
            c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// `count` people; names repeat, e-mail addresses and GUIDs never do.
pub fn people(count: usize, seed: u64) -> Vec<Person> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let (g, f) = (
                GIVEN[rng.below(GIVEN.len())],
                FAMILY[rng.below(FAMILY.len())],
            );
            let h323 = format!("{}.{}{i}", ascii(g), ascii(f));
            Person {
                name: format!("{g} {f}"),
                email: format!("{h323}@{MAIL_DOMAIN}"),
                guid: format!("{:032x}", 0xde30_0000_0000u64 + i as u64),
                h323,
            }
        })
        .collect()
}

impl Person {
    /// The fake PBX's user object (licensed, on PBX `loc`).
    pub fn pbx_user(&self, loc: &str) -> Value {
        let (given, family) = self.name.split_once(' ').unwrap_or((&self.name, ""));
        json!({
            "guid": self.guid, "h323": self.h323, "cn": format!("{family}, {given}"),
            "dn": self.name, "emails": [self.email], "loc": loc, "node": "root",
            "config": "Config", "apps": ["microsoft365", "microsoft365-api"],
            "lics": [CONNECTOR_LICENCE],
        })
    }

    /// The fake tenant's user (`UserSpec`, Teams-licensed).
    pub fn m365_user(&self) -> Value {
        json!({"displayName": self.name, "userPrincipalName": self.email, "mail": self.email,
               "teams": true})
    }
}

/// The matching settings that fit these people, as many sites configure them: PBX Long Names
/// are "Family, Given" while Entra displayNames are "Given Family", so the PBX Name (the mail
/// alias) is compared with the UPN without its domain.
pub fn match_by_alias() -> Vec<(String, String)> {
    vec![
        ("matching.pbx-field".into(), "\"h323\"".into()),
        (
            "matching.entra-field".into(),
            "\"userPrincipalName\"".into(),
        ),
        ("matching.strip-domain".into(), "true".into()),
    ]
}

/// A stack in which `persons` are synced: the same people in the fake tenant and in the fake
/// PBX (every other one on a slave), all licensed, signed in through `accounts`, matched by alias.
pub fn synced_stack(persons: &[Person], accounts: Vec<crate::TeamsAccount>) -> crate::StackOptions {
    crate::StackOptions {
        m365: Some(crate::M365Options {
            accounts,
            users: persons.iter().map(Person::m365_user).collect(),
            ..Default::default()
        }),
        pbx: Some(crate::PbxOptions {
            slaves: vec!["slave".into()],
            users: 0,
            licences: Some(persons.len() as u32),
            extra_users: persons
                .iter()
                .enumerate()
                .map(|(i, p)| p.pbx_user(if i % 2 == 0 { "master" } else { "slave" }))
                .collect(),
            ..Default::default()
        }),
        settings: match_by_alias(),
        ..Default::default()
    }
}

/// The one Teams account most stacks sign in with (`teams1`, a password account).
pub fn one_account() -> Vec<crate::TeamsAccount> {
    vec![crate::TeamsAccount::Password {
        name: "teams1".into(),
        username: format!("teams.sync1@{MAIL_DOMAIN}"),
        password: "Passw0rd!".into(),
    }]
}

/// Registers an app (client credentials) in the fake tenant and configures `feature`'s
/// `tenant`, `client-id` and `client-secret` settings with it (`presence-out`, `calendar`, ...).
pub fn with_app(
    o: &mut crate::StackOptions,
    feature: &str,
    client_id: &str,
    secret: &str,
    roles: &[&str],
) {
    if let Some(m) = o.m365.as_mut() {
        m.apps.push(json!({
            "clientId": client_id, "displayName": format!("Connector {feature} ({client_id})"),
            "secret": secret, "roles": roles,
        }));
    }
    let q = |s: &str| serde_json::to_string(s).expect("string");
    o.settings.extend([
        (format!("{feature}.tenant"), q(MAIL_DOMAIN)),
        (format!("{feature}.client-id"), q(client_id)),
        (format!("{feature}.client-secret"), q(secret)),
    ]);
}
