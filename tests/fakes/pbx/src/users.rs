//! The PBX user table (`users`, spec §3.2) and a deterministic generator for realistic PBXs.

use crate::clock::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What the App object may see of a user (the user's `allows` entry for the App object,
/// spec §4.1/§5.1). All true by default, as after a correctly configured installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visibility {
    /// `presence` flag: the watcher may see presence at all.
    pub presence: bool,
    /// `otf` flag: the watcher may see on-the-phone.
    pub otf: bool,
    /// `note` flag: the watcher may see presence notes.
    pub note: bool,
}

impl Default for Visibility {
    fn default() -> Self {
        Self {
            presence: true,
            otf: true,
            note: true,
        }
    }
}

/// One row of the `users` table (user objects and pseudo objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Object GUID (32 hex digits).
    pub guid: String,
    /// Name (`h323`, SIP user part).
    pub h323: String,
    /// Long Name.
    pub cn: String,
    /// Display Name.
    pub dn: String,
    /// Number (may be empty).
    #[serde(default)]
    pub e164: String,
    /// E-mail addresses (may be empty).
    #[serde(default)]
    pub emails: Vec<String>,
    /// PBX the object is assigned to (`loc`).
    pub loc: String,
    /// Node.
    #[serde(default = "default_node")]
    pub node: String,
    /// Config template.
    #[serde(default)]
    pub config: String,
    /// App access rights (comma list in the table).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Group memberships (`name`, `mode`, `dyn`).
    #[serde(default)]
    pub grps: Vec<Value>,
    /// Devices (`hw`, `text`, `app`, flags).
    #[serde(default)]
    pub devices: Vec<Value>,
    /// Hide from LDAP (omitted when false).
    #[serde(default)]
    pub hide: bool,
    /// Pseudo type (`None` = plain user; `Some("app")`, `Some("waiting")`, ...).
    #[serde(default)]
    pub pseudo: Option<String>,
    /// App licences assigned to the user, e.g. `App(innovaphone-microsoft365)`.
    #[serde(default)]
    pub lics: Vec<String>,
    /// What the connector's App object may see of this user.
    #[serde(default)]
    pub visibility: Visibility,
    /// Update sequence number of the last change (maintained by the PBX).
    #[serde(default)]
    pub usn: u64,
}

fn default_node() -> String {
    "root".into()
}

impl User {
    /// A plain user with the given name on `loc`; other fields empty.
    pub fn new(guid: &str, h323: &str, cn: &str, loc: &str) -> Self {
        Self {
            guid: guid.into(),
            h323: h323.into(),
            cn: cn.into(),
            dn: cn.into(),
            e164: String::new(),
            emails: vec![],
            loc: loc.into(),
            node: default_node(),
            config: String::new(),
            apps: vec![],
            grps: vec![],
            devices: vec![],
            hide: false,
            pseudo: None,
            lics: vec![],
            visibility: Visibility::default(),
            usn: 0,
        }
    }

    /// The pseudo type as the replication `pseudo` filter sees it (`""` for users).
    pub fn pseudo_type(&self) -> &str {
        self.pseudo.as_deref().unwrap_or("")
    }

    /// First e-mail or empty.
    pub fn email(&self) -> &str {
        self.emails.first().map(String::as_str).unwrap_or("")
    }

    /// The row as the PBX replicates it, restricted to `columns` (all known columns if empty).
    /// Like the PBX, false booleans and empty values are omitted.
    pub fn row(&self, columns: &[String]) -> Value {
        let want = |c: &str| columns.is_empty() || columns.iter().any(|x| x == c);
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            if want(k) {
                m.insert(k.into(), v);
            }
        };
        put("guid", json!(self.guid));
        put("h323", json!(self.h323));
        if !self.cn.is_empty() {
            put("cn", json!(self.cn));
        }
        if !self.dn.is_empty() {
            put("dn", json!(self.dn));
        }
        if !self.config.is_empty() {
            put("config", json!(self.config));
        }
        put("node", json!(self.node));
        put("loc", json!(self.loc));
        if self.hide {
            put("hide", json!(true));
        }
        if !self.e164.is_empty() {
            put("e164", json!(self.e164));
        }
        if !self.emails.is_empty() {
            let e: Vec<Value> = self.emails.iter().map(|e| json!({"email": e})).collect();
            put("emails", Value::Array(e));
        }
        if !self.apps.is_empty() {
            put("apps", json!(self.apps.join(",")));
        }
        if !self.grps.is_empty() {
            put("grps", Value::Array(self.grps.clone()));
        }
        if !self.devices.is_empty() {
            put("devices", Value::Array(self.devices.clone()));
        }
        if let Some(p) = &self.pseudo {
            put("pseudo", json!(format!("<pseudo type=\"{p}\"/>")));
        }
        Value::Object(m)
    }
}

/// Parameters of [`populate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PopulateSpec {
    /// Number of plain users.
    pub users: usize,
    /// Number of additional non-user pseudo objects (waiting queues, voicemail, trunks).
    pub pseudo_objects: usize,
    /// Seed: the same seed gives the same PBX.
    pub seed: u64,
    /// PBX names for `loc`; the first is the master, users are spread over the others too.
    pub locs: Vec<String>,
    /// Percentage of users living on a slave `loc` (if there is one).
    pub slave_percent: u64,
    /// Percentage of users without any e-mail.
    pub no_email_percent: u64,
    /// Percentage of users without the connector licence.
    pub unlicensed_percent: u64,
    /// Percentage of users sharing a display name with another user.
    pub duplicate_name_percent: u64,
    /// Licence assigned to licensed users.
    pub licence: String,
    /// E-mail domain.
    pub mail_domain: String,
    /// App access rights given to every user.
    pub apps: Vec<String>,
}

impl Default for PopulateSpec {
    fn default() -> Self {
        Self {
            users: 100,
            pseudo_objects: 5,
            seed: 1,
            locs: vec!["master".into(), "slave".into()],
            slave_percent: 20,
            no_email_percent: 10,
            unlicensed_percent: 10,
            duplicate_name_percent: 3,
            licence: "App(innovaphone-microsoft365)".into(),
            mail_domain: "example.com".into(),
            apps: vec!["microsoft365".into(), "microsoft365-api".into()],
        }
    }
}

const GIVEN: &[&str] = &[
    "Jürgen",
    "Zoë",
    "Åsa",
    "Łukasz",
    "Renée",
    "François",
    "Çağla",
    "Søren",
    "Mário",
    "Anna",
    "Peter",
    "Maria",
    "John",
    "Ødegård",
    "Ђорђе",
    "Νίκος",
    "Ирина",
    "美咲",
    "Siobhán",
    "Ana-Lucía",
    "Thomas",
    "Sabine",
    "Émile",
    "Zsófia",
    "Jiří",
];
const FAMILY: &[&str] = &[
    "Müller",
    "Schäfer",
    "O'Brien",
    "Nuñez",
    "Dvořák",
    "Straße",
    "Kowalczyk",
    "Smith",
    "Ångström",
    "Öztürk",
    "van der Berg",
    "Lefèvre",
    "Јовановић",
    "Παπαδόπουλος",
    "Иванова",
    "佐藤",
    "Meyer",
    "Schmidt",
    "García-López",
    "Nguyễn",
];

fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'ä' | 'à' | 'á' | 'å' | 'Å' | 'Ä' => Some('a'),
            'ö' | 'ø' | 'ó' | 'Ø' | 'Ö' => Some('o'),
            'ü' | 'ú' | 'Ü' => Some('u'),
            'é' | 'è' | 'ë' | 'É' | 'ễ' => Some('e'),
            'ç' | 'Ç' => Some('c'),
            'ñ' => Some('n'),
            'ß' => Some('s'),
            'ł' | 'Ł' => Some('l'),
            'ř' => Some('r'),
            'í' | 'ı' => Some('i'),
            'ğ' => Some('g'),
            'š' => Some('s'),
            _ => None,
        })
        .collect()
}

/// Generates a realistic user table: non-ASCII names, users without e-mail, users only on a
/// slave `loc`, unlicensed users, duplicate display names and non-user pseudo objects.
/// Deterministic for a given spec; GUIDs are unique.
pub fn populate(spec: &PopulateSpec) -> Vec<User> {
    let mut rng = Rng::new(spec.seed);
    let master = spec
        .locs
        .first()
        .cloned()
        .unwrap_or_else(|| "master".into());
    let mut out = Vec::with_capacity(spec.users + spec.pseudo_objects);
    let mut last_cn = String::new();
    let mut last_dn = String::new();
    for i in 0..spec.users {
        let g = GIVEN[rng.below(GIVEN.len() as u64) as usize];
        let f = FAMILY[rng.below(FAMILY.len() as u64) as usize];
        // Duplicate display names: reuse the previous person's name.
        let dup = i > 0 && rng.percent(spec.duplicate_name_percent);
        let (cn, dn) = if dup {
            (last_cn.clone(), last_dn.clone())
        } else {
            (format!("{f}, {g}"), format!("{g} {f}"))
        };
        last_cn = cn.clone();
        last_dn = dn.clone();
        let mut local = format!("{}.{}", ascii_fold(g), ascii_fold(f));
        if local.len() < 3 || local.starts_with('.') || local.ends_with('.') {
            local = format!("user{i}");
        }
        let h323 = format!("{local}{i}");
        let loc = if spec.locs.len() > 1 && rng.percent(spec.slave_percent) {
            spec.locs[1 + rng.below(spec.locs.len() as u64 - 1) as usize].clone()
        } else {
            master.clone()
        };
        let mut u = User::new(&rng.guid(), &h323, &cn, &loc);
        u.dn = dn;
        u.e164 = format!("{}", 2000 + i);
        u.node = "root".into();
        u.config = if i % 7 == 0 {
            "Sales".into()
        } else {
            "Config".into()
        };
        if !rng.percent(spec.no_email_percent) {
            u.emails.push(format!("{h323}@{}", spec.mail_domain));
        }
        u.apps = spec.apps.clone();
        if i % 5 == 0 {
            u.grps
                .push(json!({"name":"support","mode":"active","dyn":"in"}));
        }
        u.devices.push(json!({"hw": format!("Swphone_{h323}"), "text":"softphone","app":"softphone","tls":true,"sreg":true}));
        if rng.percent(30) {
            u.devices
                .push(json!({"hw": format!("0090334{:05x}", i), "text":"IP112","prim":true}));
        }
        if !rng.percent(spec.unlicensed_percent) {
            u.lics.push(spec.licence.clone());
        }
        out.push(u);
    }
    const PSEUDO: &[&str] = &["waiting", "vm", "trunk", "executive", "app", "conf"];
    for i in 0..spec.pseudo_objects {
        let t = PSEUDO[i % PSEUDO.len()];
        let h323 = format!("{t}-{i}");
        let mut u = User::new(&rng.guid(), &h323, &format!("{t} object {i}"), &master);
        u.e164 = format!("{}", 9000 + i);
        u.pseudo = Some(t.into());
        out.push(u);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_is_realistic_and_deterministic() {
        let spec = PopulateSpec {
            users: 2000,
            pseudo_objects: 12,
            seed: 7,
            ..Default::default()
        };
        let a = populate(&spec);
        assert_eq!(a, populate(&spec));
        assert_eq!(a.len(), 2012);
        let users: Vec<_> = a.iter().filter(|u| u.pseudo.is_none()).collect();
        assert!(users.iter().any(|u| !u.cn.is_ascii()));
        assert!(users.iter().any(|u| u.emails.is_empty()));
        assert!(users.iter().any(|u| u.loc == "slave"));
        assert!(users.iter().any(|u| u.lics.is_empty()));
        let mut cns: Vec<_> = users.iter().map(|u| &u.cn).collect();
        cns.sort();
        assert!(cns.windows(2).any(|w| w[0] == w[1]), "duplicate names");
        let mut guids: Vec<_> = a.iter().map(|u| &u.guid).collect();
        guids.sort();
        guids.dedup();
        assert_eq!(guids.len(), a.len());
        let mut h: Vec<_> = a.iter().map(|u| &u.h323).collect();
        h.sort();
        h.dedup();
        assert_eq!(h.len(), a.len());
    }

    #[test]
    fn row_omits_false_booleans_and_honours_columns() {
        let mut u = User::new("ab", "alice", "Alice", "master");
        u.emails.push("a@x".into());
        let full = u.row(&[]);
        assert!(full.get("hide").is_none());
        assert_eq!(full["emails"][0]["email"], "a@x");
        let some = u.row(&["guid".into(), "cn".into()]);
        assert_eq!(some, json!({"guid":"ab","cn":"Alice"}));
    }
}
