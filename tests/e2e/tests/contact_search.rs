//! Contact search from the Phone App (F4) through the real host: the fake PBX opens the hidden
//! `microsoft365-api` app's connection as a user and relays `Search`; the connector reads the
//! user's own Outlook contacts in the fake Microsoft 365 with the contact-search app's token.
//! Every wait has a generous deadline and nothing asserts speed.

use e2e::stack::teams_activity;
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use e2e::people::{Person, people, synced_stack};
use e2e::stack::ensure;
use e2e::{Stack, StackOptions, TeamsAccount};
use serde_json::{Value, json};

/// The contact-search app registration in the fake tenant: a confidential client with the
/// application permissions the wiki's Howto16r1 grants.
const CS_CLIENT_ID: &str = "e2e-contact-search";
const CS_SECRET: &str = "cs~Secret+&=%#1";

/// The contacts every searching user keeps in Outlook.
fn address_book() -> Vec<Value> {
    vec![
        json!({"givenName":"Jürgen","surname":"Großmann","companyName":"Bäckerei Süd",
               "businessPhones":["+49 (0)7031 555-100"],"mobilePhone":"+49 170 5550101",
               "emailAddresses":[{"name":"Jürgen","address":"juergen@baeckerei.example"}]}),
        json!({"givenName":"Garth","surname":"Fort","companyName":"Contoso",
               "businessPhones":["+1 425 555 0100"],"mobilePhone":"+1 425 555 0101",
               "emailAddresses":[{"name":"Garth Fort","address":"garth@contoso.example"}]}),
        json!({"givenName":"Gary","surname":"Fortune","companyName":"Fabrikam",
               "homePhones":["07031 12 34 x5"]}),
        json!({"givenName":"Zoë","surname":"Ångström","companyName":"Fabrikam",
               "mobilePhone":"(0170) 555/99"}),
        json!({"givenName":"Ann","surname":"Garrison","companyName":"Northwind"}),
    ]
}

/// Queries a user would type, and the names they must find, best first.
const EXPECTED: &[(&str, &[&str])] = &[
    ("Garth", &["Garth Fort"]),
    ("fort", &["Garth Fort", "Gary Fortune"]),
    ("fabrikam", &["Gary Fortune", "Zoë Ångström"]),
    ("gar", &["Garth Fort", "Gary Fortune", "Ann Garrison"]),
    ("jür", &["Jürgen Großmann"]),
    ("großm", &["Jürgen Großmann"]),
    ("ångs", &["Zoë Ångström"]),
    ("zoë Å", &["Zoë Ångström"]),
    ("Bäck", &["Jürgen Großmann"]),
    ("nobody", &[]),
];

/// `persons` synced (licensed, matched) plus `unlicensed` people present on both sides but
/// without the connector's licence, and contact search configured.
fn options(persons: &[Person], unlicensed: &[Person], settings: &[(&str, &str)]) -> StackOptions {
    let account = TeamsAccount::Password {
        name: "teams1".into(),
        username: "teams.sync1@contoso.onmicrosoft.com".into(),
        password: "Passw0rd!&+%= #x".into(),
    };
    let mut o = synced_stack(persons, vec![account]);
    let m = o.m365.as_mut().expect("synced stack has M365");
    m.apps.push(json!({
        "clientId": CS_CLIENT_ID,
        "displayName": "Contact search (e2e)",
        "secret": CS_SECRET,
        "roles": ["Contacts.Read", "User.Read.All"],
    }));
    let p = o.pbx.as_mut().expect("synced stack has a PBX");
    for u in unlicensed {
        m.users.push(u.m365_user());
        let mut row = u.pbx_user("master");
        row["lics"] = json!([]);
        p.extra_users.push(row);
    }
    let q = |s: &str| serde_json::to_string(s).expect("string");
    for (k, v) in [
        ("contact-search.tenant", q("contoso.onmicrosoft.com")),
        ("contact-search.client-id", q(CS_CLIENT_ID)),
        ("contact-search.client-secret", q(CS_SECRET)),
    ] {
        o.settings.push((k.into(), v));
    }
    for (k, v) in settings {
        o.settings.push((k.to_string(), v.to_string()));
    }
    o
}

fn add_address_book(stack: &Stack, p: &Person) -> Result<()> {
    for c in address_book() {
        stack.m365().call(
            "POST",
            "/contacts",
            Some(json!({"user": p.email, "contact": c})),
        )?;
    }
    Ok(())
}

/// Opens the hidden API app's connection as user `p` (through `microsoft365-api`).
fn session(stack: &Stack, p: &Person) -> Result<u64> {
    let r = stack.pbx().call(
        "POST",
        "/sessions",
        Some(json!({"guid": p.guid, "kind": "api"})),
    )?;
    let id = r["id"].as_u64().context("session id")?;
    stack.wait_until(&format!("{} logged in to the API app", p.h323), |s| {
        let v = s.pbx().call("GET", &format!("/sessions/{id}"), None)?;
        ensure(v["state"] != "refused", || format!("login refused: {v}"))?;
        Ok((v["state"] == "logged-in").then_some(()))
    })?;
    Ok(id)
}

/// Relays a `Search` (without waiting for the answer).
fn send_search(stack: &Stack, session: u64, src: &str, query: &str) -> Result<()> {
    stack
        .pbx()
        .call(
            "POST",
            &format!("/sessions/{session}/search"),
            Some(json!({"src": src, "search": query, "type": "contact"})),
        )
        .map(drop)
}

/// Waits until every search in `srcs` got its `SearchResult`; returns their `SearchInfo`s by
/// src. Fails on any protocol violation the fake saw (a second result, info after result,
/// phone fields that are not string arrays, unknown src).
fn answers(stack: &Stack, session: u64, srcs: &[String]) -> Result<BTreeMap<String, Vec<Value>>> {
    stack.wait_until(&format!("{} search answers", srcs.len()), |s| {
        let v = s.pbx().call("GET", &format!("/sessions/{session}"), None)?;
        let violations = v["violations"].as_array().cloned().unwrap_or_default();
        ensure(violations.is_empty(), || {
            format!("protocol violations: {violations:?}")
        })?;
        let done = srcs.iter().all(|src| v["searches"][src]["done"] == true);
        Ok(done.then(|| {
            srcs.iter()
                .map(|src| {
                    let infos = v["searches"][src]["infos"].as_array().cloned();
                    (src.clone(), infos.unwrap_or_default())
                })
                .collect()
        }))
    })
}

/// One search, answered.
fn search(stack: &Stack, session: u64, src: &str, query: &str) -> Result<Vec<Value>> {
    send_search(stack, session, src, query)?;
    let mut all = answers(stack, session, &[src.to_string()])?;
    Ok(all.remove(src).unwrap_or_default())
}

fn names(infos: &[Value]) -> Vec<String> {
    infos
        .iter()
        .map(|i| i["dn"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Searches until `p` gets contacts: the token, the PBX users and F1's matching are in place.
fn wait_until_searchable(stack: &Stack, session: u64) -> Result<()> {
    let mut n = 0;
    stack.wait_until("the first search that finds contacts", |s| {
        n += 1;
        Ok((!search(s, session, &format!("warm{n}"), "Garth")?.is_empty()).then_some(()))
    })
}

#[test]
fn users_find_their_own_contacts_by_name_and_company_and_nobody_else_does() -> Result<()> {
    let persons = people(3, 41);
    let outsider = people(4, 42).pop().expect("a person");
    Stack::run(
        options(&persons, std::slice::from_ref(&outsider), &[]),
        |stack| {
            stack.wait_for_pbx_logins()?;
            let (owner, no_contacts) = (&persons[0], &persons[1]);
            add_address_book(stack, owner)?;
            // The unlicensed user has the same contacts: an empty answer can only be the licence.
            add_address_book(stack, &outsider)?;
            let s = session(stack, owner)?;
            wait_until_searchable(stack, s)?;
            for (i, (query, expected)) in EXPECTED.iter().enumerate() {
                let got = names(&search(stack, s, &format!("q{i}"), query)?);
                ensure(got == *expected, || {
                    format!("search {query:?}: expected {expected:?}, got {got:?}")
                })?;
            }
            // What the Phone App dials and shows.
            let jurgen = search(stack, s, "detail", "Jürgen")?;
            let c = &jurgen[0]["contact"];
            ensure(
                c["telephonenumber"] == json!(["+497031555100"])
                    && c["mobile"] == json!(["+491705550101"])
                    && c["email"] == json!(["juergen@baeckerei.example"])
                    && c["company"] == "Bäckerei Süd"
                    && c["givenname"] == "Jürgen"
                    && c["sn"] == "Großmann"
                    && jurgen[0]["type"] == "contact",
                || format!("contact details: {}", jurgen[0]),
            )?;
            let gary = search(stack, s, "gary", "gary")?;
            ensure(
                gary[0]["contact"]["homephone"] == json!(["070311234"]),
                || format!("home number: {}", gary[0]),
            )?;
            // A licensed user without contacts, and an unlicensed one with them: empty answers.
            let s2 = session(stack, no_contacts)?;
            ensure(search(stack, s2, "n1", "gar")?.is_empty(), || {
                "a user without contacts found some".into()
            })?;
            let s3 = session(stack, &outsider)?;
            ensure(search(stack, s3, "u1", "gar")?.is_empty(), || {
                "an unlicensed user found contacts".into()
            })?;
            // The PBX learned that the API app provides the search API, hidden.
            stack.pbx().call(
                "POST",
                "/nodes/master/app-info",
                Some(json!({"app": "innovaphone-microsoft365api"})),
            )?;
            stack.wait_until("AppInfoResult for the API app", |s| {
                let r = s.pbx().call("GET", "/app-info-results", None)?;
                let announced = r.as_array().into_iter().flatten().any(|e| {
                    e[1]["app"] == "innovaphone-microsoft365api"
                        && e[1]["info"]["hidden"] == true
                        && e[1]["info"]["apis"]["com.innovaphone.search"].is_object()
                });
                Ok(announced.then_some(()))
            })?;
            let violations = stack.pbx().violations()?;
            ensure(violations.is_empty(), || {
                format!("fake PBX violations: {violations:?}")
            })?;
            let log = stack.host_log();
            ensure(!log.contains(CS_SECRET), || {
                "the client secret was logged".into()
            })
        },
    )
}

#[test]
fn fifty_concurrent_searches_are_all_answered_correctly() -> Result<()> {
    let persons = people(5, 43);
    Stack::run(options(&persons, &[], &[]), |stack| {
        stack.wait_for_pbx_logins()?;
        let mut sessions = Vec::new();
        for p in &persons {
            add_address_book(stack, p)?;
            sessions.push(session(stack, p)?);
        }
        wait_until_searchable(stack, sessions[0])?;
        // 5 users x 10 queries, all sent before any answer is read.
        let mut sent: Vec<(u64, String, &[&str])> = Vec::new();
        for (u, s) in sessions.iter().enumerate() {
            for (i, (query, expected)) in EXPECTED.iter().take(10).enumerate() {
                let src = format!("c{u}-{i}");
                send_search(stack, *s, &src, query)?;
                sent.push((*s, src, expected));
            }
        }
        ensure(sent.len() == 50, || format!("{} searches sent", sent.len()))?;
        for s in &sessions {
            let srcs: Vec<String> = sent
                .iter()
                .filter(|x| x.0 == *s)
                .map(|x| x.1.clone())
                .collect();
            let got = answers(stack, *s, &srcs)?;
            for (_, src, expected) in sent.iter().filter(|x| x.0 == *s) {
                let names = names(&got[src]);
                ensure(names == *expected, || {
                    format!("search {src}: expected {expected:?}, got {names:?}")
                })?;
            }
        }
        Ok(())
    })
}

#[test]
fn throttled_or_silent_graph_gives_empty_answers_and_presence_still_syncs() -> Result<()> {
    let persons = people(2, 44);
    let settings = [("contact-search.timeout-ms", "1500")];
    Stack::run(options(&persons, &[], &settings), |stack| {
        stack.wait_for_pbx_logins()?;
        let p = &persons[0];
        add_address_book(stack, p)?;
        let s = session(stack, p)?;
        wait_until_searchable(stack, s)?;
        // Graph that never answers: the connector's deadline answers, empty.
        stack.m365().call(
            "POST",
            "/faults",
            Some(json!({"pathContains": "/contacts", "fault": {"kind": "timeout"}})),
        )?;
        let got = search(stack, s, "silent", "Garrison")?;
        ensure(got.is_empty(), || format!("silent Graph gave {got:?}"))?;
        // Outlook throttles the contacts: well-formed empty answers, not errors or silence.
        stack.m365().call("DELETE", "/faults", None)?;
        stack.m365().call(
            "POST",
            "/faults",
            Some(json!({"pathContains": "/contacts",
                        "fault": {"kind": "throttle", "retry_after_s": 3}})),
        )?;
        for i in 0..5 {
            let got = search(stack, s, &format!("t{i}"), &format!("fo{}", "r".repeat(i)))?;
            ensure(got.is_empty(), || format!("throttled search found {got:?}"))?;
        }
        // Presence sync does not notice: a Teams change still reaches the PBX.
        stack
            .m365()
            .set_teams_presence(&p.email, "DoNotDisturb", "DoNotDisturb")?;
        stack.wait_until("Teams DND on the PBX while searches are throttled", |st| {
            Ok((teams_activity(st, &p.guid)? == "dnd").then_some(()))
        })?;
        // Graph is back: once its Retry-After has passed, the query that timed out finds
        // the contact (failures were not cached).
        stack.m365().call("DELETE", "/faults", None)?;
        let mut n = 0;
        stack.wait_until("Ann Garrison found after recovery", |st| {
            n += 1;
            let got = names(&search(st, s, &format!("back{n}"), "Garrison")?);
            Ok((got == ["Ann Garrison"]).then_some(()))
        })?;
        Ok(())
    })
}

#[test]
fn with_the_directory_enabled_colleagues_are_found_too() -> Result<()> {
    let persons = people(3, 45);
    let settings = [("contact-search.directory", "true")];
    Stack::run(options(&persons, &[], &settings), |stack| {
        stack.wait_for_pbx_logins()?;
        let (me, colleague) = (&persons[0], &persons[1]);
        add_address_book(stack, me)?;
        let s = session(stack, me)?;
        wait_until_searchable(stack, s)?;
        // A colleague is in the directory, not in my contacts.
        let family = colleague.name.split(' ').next_back().unwrap_or("");
        let prefix: String = family.chars().take(4).collect();
        let got = search(stack, s, "dir", &prefix)?;
        let found = got.iter().find(|i| i["dn"] == colleague.name.as_str());
        ensure(found.is_some(), || {
            format!(
                "{prefix:?} did not find {}: {:?}",
                colleague.name,
                names(&got)
            )
        })?;
        let c = &found.expect("checked")["contact"];
        ensure(c["email"] == json!([colleague.email]), || {
            format!("colleague's contact: {c}")
        })?;
        // My own contacts still come first for their names.
        let got = names(&search(stack, s, "own", "Garth")?);
        ensure(got == ["Garth Fort"], || format!("own contacts: {got:?}"))
    })
}
