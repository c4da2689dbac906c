//! Matching PBX users to Entra users (product.md F1).
//!
//! One PBX field (`cn` Long Name or `h323` Name) is compared with one Entra field, trimmed and
//! case-insensitively, optionally with the domain stripped (`user@domain.tld` -> `user`) on both
//! sides. Only Teams-licensed, enabled Entra users and PBX users holding the licence are synced;
//! everyone else is reported with the reason, so the status page can say why a user is not
//! synced. The result is kept in KV under `match/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::env::{Env, Level, target};
use crate::graph::users::EntraUser;
use crate::pbx::UserRow;
use crate::store;

/// KV prefix of matched users: `match/user/<entra id>` -> [`Matched`].
pub const USER_PREFIX: &str = "match/user/";
/// KV prefix of problems: `match/problem/<pbx guid or entra id>` -> [`Problem`].
pub const PROBLEM_PREFIX: &str = "match/problem/";

/// The PBX column compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbxField {
    /// Long Name.
    Cn,
    /// Name (SIP user part).
    H323,
}

/// The Entra property compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraField {
    /// `displayName`.
    DisplayName,
    /// `mail`.
    Mail,
    /// `mailNickname`.
    MailNickname,
    /// `onPremisesDistinguishedName`.
    OnPremisesDistinguishedName,
    /// `onPremisesSamAccountName`.
    OnPremisesSamAccountName,
    /// `onPremisesUserPrincipalName`.
    OnPremisesUserPrincipalName,
    /// `userPrincipalName`.
    UserPrincipalName,
}

/// The matching options (settings `matching.pbx-field`, `matching.entra-field`,
/// `matching.strip-domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// PBX side.
    pub pbx: PbxField,
    /// Entra side.
    pub entra: EntraField,
    /// Compare only the part before `@`.
    pub strip_domain: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pbx: PbxField::Cn,
            entra: EntraField::DisplayName,
            strip_domain: false,
        }
    }
}

impl PbxField {
    /// Parses a setting value (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cn" => Some(PbxField::Cn),
            "h323" => Some(PbxField::H323),
            _ => None,
        }
    }
}

impl EntraField {
    /// Parses a setting value (the Graph property name, case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        use EntraField::*;
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "displayname" => DisplayName,
            "mail" => Mail,
            "mailnickname" => MailNickname,
            "onpremisesdistinguishedname" => OnPremisesDistinguishedName,
            "onpremisessamaccountname" => OnPremisesSamAccountName,
            "onpremisesuserprincipalname" => OnPremisesUserPrincipalName,
            "userprincipalname" => UserPrincipalName,
            _ => return None,
        })
    }

    fn of(self, u: &EntraUser) -> &str {
        use EntraField::*;
        match self {
            DisplayName => &u.display_name,
            Mail => &u.mail,
            MailNickname => &u.mail_nickname,
            OnPremisesDistinguishedName => &u.on_premises_distinguished_name,
            OnPremisesSamAccountName => &u.on_premises_sam_account_name,
            OnPremisesUserPrincipalName => &u.on_premises_user_principal_name,
            UserPrincipalName => &u.user_principal_name,
        }
    }
}

impl Options {
    /// Reads the options; an unknown value is logged and the default used.
    pub fn read(env: &mut impl Env) -> Self {
        let mut o = Options::default();
        if let Some(v) = crate::settings::value(env, "matching.pbx-field") {
            match PbxField::parse(&v) {
                Some(f) => o.pbx = f,
                None => env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("matching.pbx-field `{v}` is not `cn` or `h323`; using `cn`"),
                ),
            }
        }
        if let Some(v) = crate::settings::value(env, "matching.entra-field") {
            match EntraField::parse(&v) {
                Some(f) => o.entra = f,
                None => env.log(
                    Level::Error,
                    target::CONFIG,
                    &format!("matching.entra-field `{v}` is not a supported property; using `displayName`"),
                ),
            }
        }
        o.strip_domain = matches!(
            crate::settings::value(env, "matching.strip-domain")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("true" | "1" | "yes")
        );
        o
    }

    /// The comparison key of a value: trimmed, domain stripped if asked, lower case. Empty
    /// values never match.
    pub fn key(&self, value: &str) -> Option<String> {
        let mut v = value.trim();
        if self.strip_domain {
            v = v.split('@').next().unwrap_or(v).trim();
        }
        (!v.is_empty()).then(|| v.to_lowercase())
    }
}

/// A PBX user matched to an Entra user and allowed to sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    /// Entra object id.
    pub id: String,
    /// PBX user guid.
    pub guid: String,
    /// The PBX the user is assigned to (routing).
    #[serde(default)]
    pub loc: String,
    /// The matched value (for the status page).
    pub name: String,
}

/// Why a user is not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No Entra user has the PBX user's value.
    NoCandidate,
    /// Several users on either side share the value.
    SeveralCandidates,
    /// The only candidate has no (enabled) Teams licence or is disabled.
    NotTeamsLicensed,
    /// The PBX user does not hold the connector's licence (or it is not known yet).
    NotPbxLicensed,
}

/// One user that is not synced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// PBX user guid.
    pub guid: String,
    /// The PBX value compared.
    pub name: String,
    /// Why.
    pub reason: Reason,
    /// Entra ids of the candidates (several candidates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

/// The outcome of one matching run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Synced users, by Entra id.
    pub matched: BTreeMap<String, Matched>,
    /// Users not synced, in PBX guid order.
    pub problems: Vec<Problem>,
}

/// Matches `pbx` rows (one per guid) with `entra` users. `licensed(guid)` tells whether a PBX
/// user holds the connector's licence.
pub fn run(
    opts: &Options,
    pbx: &[UserRow],
    entra: &[EntraUser],
    licensed: impl Fn(&str) -> bool,
) -> Outcome {
    let mut by_key: BTreeMap<String, Vec<&EntraUser>> = BTreeMap::new();
    for u in entra {
        if let Some(k) = opts.key(opts.entra.of(u)) {
            by_key.entry(k).or_default().push(u);
        }
    }
    let pbx_value = |r: &UserRow| match opts.pbx {
        PbxField::Cn => r.cn.clone(),
        PbxField::H323 => r.h323.clone(),
    };
    // Two PBX users with the same value cannot both own one Teams presence.
    let mut pbx_count: BTreeMap<String, usize> = BTreeMap::new();
    for r in pbx {
        if let Some(k) = opts.key(&pbx_value(r)) {
            *pbx_count.entry(k).or_default() += 1;
        }
    }
    let mut out = Outcome::default();
    for r in pbx {
        let name = pbx_value(r);
        let problem = |reason, candidates: Vec<String>| Problem {
            guid: r.guid.clone(),
            name: name.clone(),
            reason,
            candidates,
        };
        let Some(k) = opts.key(&name) else {
            out.problems.push(problem(Reason::NoCandidate, vec![]));
            continue;
        };
        let candidates = by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
        let ids = || candidates.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
        let p = match candidates {
            [] => Some(problem(Reason::NoCandidate, vec![])),
            [_, _, ..] => Some(problem(Reason::SeveralCandidates, ids())),
            _ if pbx_count.get(&k).copied().unwrap_or(0) > 1 => {
                Some(problem(Reason::SeveralCandidates, ids()))
            }
            [u] if !(u.teams && u.enabled) => Some(problem(Reason::NotTeamsLicensed, ids())),
            [_] if !licensed(&r.guid) => Some(problem(Reason::NotPbxLicensed, ids())),
            [u] => {
                out.matched.insert(
                    u.id.clone(),
                    Matched {
                        id: u.id.clone(),
                        guid: r.guid.clone(),
                        loc: r.loc.clone(),
                        name: name.clone(),
                    },
                );
                None
            }
        };
        out.problems.extend(p);
    }
    out
}

/// Replaces the stored outcome (`match/`), writing only what changed.
pub fn store(env: &mut impl Env, outcome: &Outcome) {
    let mut old_users = BTreeMap::new();
    store::for_each(env, USER_PREFIX, |k, v| {
        old_users.insert(k.to_string(), v.to_vec());
    });
    for (id, m) in &outcome.matched {
        let key = format!("{USER_PREFIX}{}", store::segment(id));
        let new = serde_json::to_vec(m).unwrap_or_default();
        if old_users.remove(&key).as_deref() != Some(new.as_slice()) {
            env.kv_set(&key, &new);
        }
    }
    for key in old_users.keys() {
        env.kv_delete(key);
    }
    store::delete_prefix(env, PROBLEM_PREFIX);
    for p in &outcome.problems {
        store::set_json(
            env,
            &format!("{PROBLEM_PREFIX}{}", store::segment(&p.guid)),
            p,
        );
    }
}

/// The stored matched users, by Entra id.
pub fn load(env: &mut impl Env) -> BTreeMap<String, Matched> {
    let mut out = BTreeMap::new();
    store::for_each(env, USER_PREFIX, |_, v| {
        if let Ok(m) = serde_json::from_slice::<Matched>(v) {
            out.insert(m.id.clone(), m);
        }
    });
    out
}

/// The stored problems (at most `limit`), for the status page.
pub fn problems(env: &mut impl Env, limit: usize) -> Vec<Problem> {
    let mut out = Vec::new();
    store::for_each(env, PROBLEM_PREFIX, |_, v| {
        if out.len() < limit
            && let Ok(p) = serde_json::from_slice::<Problem>(v)
        {
            out.push(p);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    fn entra(id: &str, name: &str, upn: &str, teams: bool) -> EntraUser {
        EntraUser {
            id: id.into(),
            display_name: name.into(),
            user_principal_name: upn.into(),
            mail: upn.into(),
            enabled: true,
            teams,
            ..Default::default()
        }
    }

    fn row(guid: &str, cn: &str, h323: &str) -> UserRow {
        UserRow {
            guid: guid.into(),
            cn: cn.into(),
            h323: h323.into(),
            loc: "pbx-a".into(),
            ..Default::default()
        }
    }

    fn reasons(o: &Outcome) -> Vec<(String, Reason)> {
        o.problems
            .iter()
            .map(|p| (p.guid.clone(), p.reason))
            .collect()
    }

    #[test]
    fn every_reason_is_reported() {
        let e = vec![
            entra("e1", "Alice Smith", "alice@contoso.com", true),
            entra("e2", "Bob", "bob@contoso.com", true),
            entra("e3", "Bob", "bob2@contoso.com", true),
            entra("e4", "Carol", "carol@contoso.com", false),
            entra("e5", "Dave", "dave@contoso.com", true),
        ];
        let p = vec![
            row("g1", "ALICE smith ", "alice"),
            row("g2", "Bob", "bob"),
            row("g3", "Carol", "carol"),
            row("g4", "Dave", "dave"),
            row("g5", "Erin", "erin"),
            row("g6", "", "x"),
        ];
        let o = run(&Options::default(), &p, &e, |g| g != "g4");
        assert_eq!(o.matched.len(), 1);
        assert_eq!(o.matched["e1"].guid, "g1");
        assert_eq!(o.matched["e1"].loc, "pbx-a");
        assert_eq!(
            reasons(&o),
            vec![
                ("g2".into(), Reason::SeveralCandidates),
                ("g3".into(), Reason::NotTeamsLicensed),
                ("g4".into(), Reason::NotPbxLicensed),
                ("g5".into(), Reason::NoCandidate),
                ("g6".into(), Reason::NoCandidate),
            ]
        );
        assert_eq!(o.problems[0].candidates, vec!["e2", "e3"]);
    }

    #[test]
    fn h323_against_upn_with_strip_domain() {
        let e = vec![entra("e1", "Alice", "Alice@Contoso.com", true)];
        let p = vec![row("g1", "whatever", "alice")];
        let mut opts = Options {
            pbx: PbxField::H323,
            entra: EntraField::UserPrincipalName,
            strip_domain: false,
        };
        assert!(run(&opts, &p, &e, |_| true).matched.is_empty());
        opts.strip_domain = true;
        assert_eq!(run(&opts, &p, &e, |_| true).matched["e1"].guid, "g1");
    }

    #[test]
    fn two_pbx_users_for_one_entra_user_are_duplicates() {
        let e = vec![entra("e1", "Alice", "a@c", true)];
        let p = vec![row("g1", "Alice", "a1"), row("g2", "alice", "a2")];
        let o = run(&Options::default(), &p, &e, |_| true);
        assert!(o.matched.is_empty());
        assert_eq!(o.problems.len(), 2);
        assert!(
            o.problems
                .iter()
                .all(|p| p.reason == Reason::SeveralCandidates)
        );
    }

    #[test]
    fn settings_parse_and_bad_values_are_reported() {
        let mut env = TestEnv::new();
        assert_eq!(Options::read(&mut env), Options::default());
        env.set_config("matching.pbx-field", "H323");
        env.set_config("matching.entra-field", "onPremisesSamAccountName");
        env.set_config("matching.strip-domain", "true");
        let o = Options::read(&mut env);
        assert_eq!(o.pbx, PbxField::H323);
        assert_eq!(o.entra, EntraField::OnPremisesSamAccountName);
        assert!(o.strip_domain);
        env.set_config("matching.entra-field", "phone");
        assert_eq!(Options::read(&mut env).entra, EntraField::DisplayName);
        assert!(env.logged("matching.entra-field `phone`"));
        for f in [
            "displayName",
            "mail",
            "mailNickname",
            "onPremisesDistinguishedName",
            "onPremisesSamAccountName",
            "onPremisesUserPrincipalName",
            "userPrincipalName",
        ] {
            assert!(EntraField::parse(f).is_some(), "{f}");
        }
    }

    #[test]
    fn outcome_round_trips_through_kv() {
        let mut env = TestEnv::new();
        let e = vec![entra("e1", "Alice", "a@c", true)];
        let o = run(
            &Options::default(),
            &[row("g1", "Alice", "a"), row("g2", "Zed", "z")],
            &e,
            |_| true,
        );
        store(&mut env, &o);
        assert_eq!(load(&mut env), o.matched);
        assert_eq!(problems(&mut env, 10), o.problems);
        // A user who is no longer matched disappears from KV.
        store(&mut env, &Outcome::default());
        assert!(load(&mut env).is_empty());
        assert!(problems(&mut env, 10).is_empty());
    }
}
