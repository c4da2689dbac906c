//! Teams -> PBX presence (F1) under the events an admin lives through: a host restart, forged
//! webhook calls, a hot swap of the guest, several Teams accounts and a PBX slave reconnecting.
//! Real processes on loopback; every wait has a generous deadline and nothing asserts speed.

use e2e::stack::{presence_subscriptions, teams_activity};
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::http::request_raw;
use e2e::people::{Person, people, synced_stack};
use e2e::stack::{ensure, settle};
use e2e::{Stack, StackOptions, TeamsAccount};
use serde_json::{Value, json};

/// Teams account `n` (1-based): connector name and UPN in the fake tenant.
fn account(n: usize) -> TeamsAccount {
    TeamsAccount::Password {
        name: format!("teams{n}"),
        username: format!("teams.sync{n}@contoso.onmicrosoft.com"),
        password: "Passw0rd!&+%= #x".into(),
    }
}

fn upn(a: &TeamsAccount) -> &str {
    match a {
        TeamsAccount::Password { username, .. } | TeamsAccount::DeviceCode { username, .. } => {
            username
        }
    }
}

/// `persons` synced through `accounts` Teams accounts.
fn options(persons: &[Person], accounts: usize) -> StackOptions {
    synced_stack(persons, (1..=accounts).map(account).collect())
}

/// Teams states and the PBX activity the F1 table maps them to.
const STATES: &[(&str, &str, &str)] = &[
    ("Busy", "InAMeeting", "meeting"),
    ("Busy", "InACall", "on-the-phone"),
    ("DoNotDisturb", "DoNotDisturb", "dnd"),
    ("Away", "Away", "away"),
    ("Busy", "Busy", "busy"),
];

/// Sets `(availability, activity)` in Teams for `p`.
fn set(stack: &Stack, p: &Person, state: (&str, &str, &str)) -> Result<()> {
    stack.m365().set_teams_presence(&p.email, state.0, state.1)
}

/// Waits until the PBX shows `activity` on the Teams item of every person in `expect`.
fn wait_for_pbx(stack: &Stack, what: &str, expect: &[(&Person, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    stack
        .wait_until(what, |s| {
            missing.clear();
            for (p, activity) in expect {
                let got = teams_activity(s, &p.guid)?;
                if got != *activity {
                    missing.push(format!("{} wants {activity}, PBX has {got:?}", p.h323));
                }
            }
            Ok(missing.is_empty().then_some(()))
        })
        .with_context(|| format!("still missing: {missing:?}"))
}

/// Presence subscriptions per delegated user id (the account that owns them).
fn subscriptions_by_owner(stack: &Stack) -> Result<BTreeMap<String, Vec<Value>>> {
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in presence_subscriptions(stack)? {
        let owner = s["userId"]
            .as_str()
            .or(s["creatorId"].as_str())
            .unwrap_or("?")
            .to_string();
        by.entry(owner).or_default().push(s);
    }
    Ok(by)
}

/// The fake tenant's user id of a UPN.
fn entra_id(stack: &Stack, upn: &str) -> Result<String> {
    stack
        .m365()
        .users()?
        .into_iter()
        .find(|u| u["userPrincipalName"] == upn)
        .and_then(|u| u["id"].as_str().map(str::to_string))
        .with_context(|| format!("no user {upn} in the fake tenant"))
}

/// Requests the fake Graph answered 409 (conflicting subscription).
fn conflicts(stack: &Stack) -> Result<Vec<String>> {
    Ok(stack
        .m365()
        .requests()?
        .iter()
        .filter(|r| r["status"] == 409)
        .map(|r| format!("{} {}", r["method"], r["target"]))
        .collect())
}

/// Waits until each of `accounts` owns exactly one presence subscription; returns their ids.
fn wait_one_subscription_each(stack: &Stack, accounts: &[TeamsAccount]) -> Result<Vec<String>> {
    let owners: Vec<String> = accounts
        .iter()
        .map(|a| entra_id(stack, upn(a)))
        .collect::<Result<_>>()?;
    let mut last = BTreeMap::new();
    stack
        .wait_until("one presence subscription per Teams account", |s| {
            last = subscriptions_by_owner(s)?;
            let ok = last.len() == owners.len()
                && owners
                    .iter()
                    .all(|o| last.get(o).is_some_and(|v| v.len() == 1));
            Ok(ok.then(|| {
                owners
                    .iter()
                    .map(|o| last[o][0]["id"].as_str().unwrap_or("").to_string())
                    .collect()
            }))
        })
        .with_context(|| format!("subscriptions by owner: {last:?}"))
}

/// (a) A restart of the host within the subscription lifetime: sync continues, the live
/// subscription is reused (Graph never answered 409) and the account still owns exactly one.
#[test]
fn host_restart_keeps_one_subscription_and_sync_continues() -> Result<()> {
    let persons = people(6, 11);
    Stack::run(options(&persons, 1), |stack| {
        stack.wait_for_pbx_logins()?;
        let before = wait_one_subscription_each(stack, &[account(1)])?;
        set(stack, &persons[0], STATES[0])?;
        wait_for_pbx(
            stack,
            "meeting before the restart",
            &[(&persons[0], "meeting")],
        )?;

        stack.restart_host()?;
        stack.wait_for_pbx_logins()?;
        // Changes made after the restart, on the master and on the slave.
        set(stack, &persons[1], STATES[1])?;
        set(stack, &persons[2], STATES[2])?;
        wait_for_pbx(
            stack,
            "changes after the restart",
            &[
                (&persons[0], "meeting"),
                (&persons[1], "on-the-phone"),
                (&persons[2], "dnd"),
            ],
        )?;
        let after = wait_one_subscription_each(stack, &[account(1)])?;
        ensure(before == after, || {
            format!("the live subscription was not reused: {before:?} -> {after:?}")
        })?;
        let c = conflicts(stack)?;
        ensure(c.is_empty(), || format!("Graph answered 409: {c:?}"))?;
        Ok(())
    })
}

/// (b) Forged webhook calls (a wrong clientState for a real subscription, a garbage body) are
/// answered 202 and change no PBX presence; GET on the endpoint is 404; real sync still works.
#[test]
fn forged_webhook_calls_get_202_and_change_nothing() -> Result<()> {
    let persons = people(4, 12);
    Stack::run(options(&persons, 1), |stack| {
        stack.wait_for_pbx_logins()?;
        let sub = wait_one_subscription_each(stack, &[account(1)])?.remove(0);
        let victim = &persons[0];
        let victim_id = entra_id(stack, &victim.email)?;
        let url = format!("{}/subscriptions", stack.connector().url);
        let forged = json!({"value": [{
            "subscriptionId": sub,
            "clientState": "not-the-secret",
            "changeType": "updated",
            "tenantId": stack.m365().tenant_id,
            "resource": format!("communications/presences('{victim_id}')"),
            "subscriptionExpirationDateTime": "2099-01-01T00:00:00Z",
            "resourceData": {"@odata.type": "#Microsoft.Graph.presence", "id": victim_id,
                             "availability": "DoNotDisturb", "activity": "DoNotDisturb"},
        }]})
        .to_string();
        for (body, ctype) in [
            (forged.as_str(), "application/json"),
            ("{\"value\": [garbage", "application/json"),
            ("\u{0}\u{1}binary junk", "application/octet-stream"),
        ] {
            let r = request_raw("POST", &url, Some(body), ctype)?;
            ensure(r.status == 202, || {
                format!("forged POST answered {} (want 202): {}", r.status, r.body)
            })?;
        }
        let r = stack.connector().get("/subscriptions")?;
        ensure(r.status == 404, || {
            format!("GET /subscriptions answered {} (want 404)", r.status)
        })?;
        // Let a wrongly accepted forgery land, then check nothing moved.
        settle(Duration::from_secs(2));
        let got = teams_activity(stack, &victim.guid)?;
        ensure(got.is_empty(), || {
            format!(
                "a forged notification changed the PBX: {} shows {got:?}",
                victim.h323
            )
        })?;
        // The real path still works after the forgeries.
        set(stack, &persons[1], STATES[3])?;
        wait_for_pbx(
            stack,
            "a real change after forgeries",
            &[(&persons[1], "away")],
        )?;
        ensure(teams_activity(stack, &victim.guid)?.is_empty(), || {
            format!("{} changed by the forged notification", victim.h323)
        })?;
        Ok(())
    })
}

/// (c) A hot swap of the guest in the middle of active sync loses nothing: changes made before,
/// during and after the swap all arrive, each user with its last state.
#[test]
fn hot_swap_during_active_sync_loses_nothing() -> Result<()> {
    let persons = people(18, 13);
    Stack::run(options(&persons, 1), |stack| {
        stack.wait_for_pbx_logins()?;
        wait_one_subscription_each(stack, &[account(1)])?;
        // The state each person ends in: index i gets STATES[i % len].
        let want = |i: usize| STATES[i % STATES.len()];
        for (i, p) in persons[..6].iter().enumerate() {
            set(stack, p, want(i))?;
        }
        // During: another thread keeps Teams changing while the guest is swapped.
        let m365 = stack.m365().clone();
        let during: Vec<(String, &'static str, &'static str)> = persons[6..12]
            .iter()
            .enumerate()
            .map(|(k, p)| (p.email.clone(), want(6 + k).0, want(6 + k).1))
            .collect();
        let variant = stack.guest_variant("swap-during-sync")?;
        let driver = std::thread::spawn(move || -> Result<()> {
            for (email, availability, activity) in during {
                // A first state, then the final one: order must be kept too.
                m365.set_teams_presence(&email, "Away", "Away")?;
                m365.set_teams_presence(&email, availability, activity)?;
                std::thread::sleep(Duration::from_millis(80));
            }
            Ok(())
        });
        stack.swap_guest(&variant)?;
        driver.join().expect("driver thread panicked")?;
        for (i, p) in persons.iter().enumerate().skip(12) {
            set(stack, p, want(i))?;
        }
        let expect: Vec<(&Person, &str)> = persons
            .iter()
            .enumerate()
            .map(|(i, p)| (p, want(i).2))
            .collect();
        wait_for_pbx(
            stack,
            "every change before, during and after the swap",
            &expect,
        )?;
        let c = conflicts(stack)?;
        ensure(c.is_empty(), || format!("Graph answered 409: {c:?}"))?;
        Ok(())
    })
}

/// (d) Three Teams accounts and 60 users: each account owns exactly one presence subscription,
/// together they watch every user once, Graph never answered 409, and users sync.
#[test]
fn three_accounts_one_subscription_each() -> Result<()> {
    let persons = people(60, 14);
    let accounts: Vec<TeamsAccount> = (1..=3).map(account).collect();
    Stack::run(options(&persons, 3), |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_for_status("three Teams accounts ready", |st| {
            (1..=3).all(|n| {
                st.account(&format!("teams{n}"))
                    .is_some_and(|a| a.state == "ready")
            })
        })?;
        wait_one_subscription_each(stack, &accounts)?;
        // Every fifth person changes; the sample spans the whole population.
        let sample: Vec<(usize, &Person)> = persons.iter().enumerate().step_by(5).collect();
        for (i, p) in &sample {
            set(stack, p, STATES[i % STATES.len()])?;
        }
        let expect: Vec<(&Person, &str)> = sample
            .iter()
            .map(|(i, p)| (*p, STATES[i % STATES.len()].2))
            .collect();
        wait_for_pbx(stack, "changes across all accounts", &expect)?;
        // Still one each after the changes, and no conflict at any time.
        wait_one_subscription_each(stack, &accounts)?;
        let c = conflicts(stack)?;
        ensure(c.is_empty(), || format!("Graph answered 409: {c:?}"))?;
        Ok(())
    })
}

/// (e) The slave's connection drops and comes back: the slave users' Teams items are written to
/// it again, and a change made while it was down arrives.
#[test]
fn slave_reconnect_rewrites_its_users_teams_items() -> Result<()> {
    let persons = people(8, 15);
    Stack::run(options(&persons, 1), |stack| {
        stack.wait_for_pbx_logins()?;
        // Odd indices live on the slave.
        let (s1, s2, m1) = (&persons[1], &persons[3], &persons[0]);
        set(stack, s1, STATES[0])?;
        set(stack, m1, STATES[2])?;
        wait_for_pbx(
            stack,
            "items before the drop",
            &[(s1, "meeting"), (m1, "dnd")],
        )?;

        stack.kill_pbx_connection("slave")?;
        stack.wait_until("the slave down (fake PBX)", |s| {
            Ok((s.pbx().node("slave")?.state != "logged-in").then_some(()))
        })?;
        stack.wait_for_status("the connector sees the slave gone", |st| {
            st.logged_in("slave").is_none()
        })?;
        stack.pbx().call("DELETE", "/log", None)?;
        set(stack, s2, STATES[1])?;
        stack.restore_pbx_connection("slave")?;
        stack.wait_for_pbx_logins()?;
        wait_for_pbx(
            stack,
            "slave users after the reconnect",
            &[(s1, "meeting"), (s2, "on-the-phone"), (m1, "dnd")],
        )?;
        // The reconnected slave was given s1's item again (not only the new change).
        let mut frames = Vec::new();
        stack
            .wait_until("s1's Teams item written to the reconnected slave", |s| {
                frames = s
                    .pbx()
                    .call("GET", "/received?node=slave", None)?
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                Ok(frames
                    .iter()
                    .any(|f| {
                        let t = f.to_string();
                        t.contains("teams:") && (t.contains(&s1.guid) || t.contains(&s1.h323))
                    })
                    .then_some(()))
            })
            .with_context(|| format!("frames the slave received: {frames:?}"))?;
        ensure(stack.pbx().violations()?.is_empty(), || {
            format!("PBX protocol violations: {:?}", stack.pbx().violations())
        })?;
        Ok(())
    })
}
