//! Teams -> PBX presence (F1) when Microsoft misbehaves, through real processes on loopback: a
//! storm of 429s from Graph, notifications that never arrive, and 1,500 users over three
//! Teams accounts. Every wait has a generous deadline; nothing asserts speed.

use e2e::stack::{presence_subscriptions, teams_activity, watched_ids};
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::people::{Person, people, synced_stack};
use e2e::stack::{ensure, settle};
use e2e::{Stack, StackOptions, TeamsAccount};
use serde_json::json;

/// Teams account `n` (1-based).
fn account(n: usize) -> TeamsAccount {
    TeamsAccount::Password {
        name: format!("teams{n}"),
        username: format!("teams.sync{n}@contoso.onmicrosoft.com"),
        password: "Passw0rd!&+%= #x".into(),
    }
}

/// `persons` synced through `accounts` accounts, plus `settings` (TOML value text).
fn options(persons: &[Person], accounts: usize, settings: &[(&str, &str)]) -> StackOptions {
    let mut o = synced_stack(persons, (1..=accounts).map(account).collect());
    for (k, v) in settings {
        o.settings.push((k.to_string(), v.to_string()));
    }
    o
}

/// Teams states and the PBX activity the F1 table maps them to.
const STATES: &[(&str, &str, &str)] = &[
    ("Busy", "InAMeeting", "meeting"),
    ("Busy", "InACall", "on-the-phone"),
    ("DoNotDisturb", "DoNotDisturb", "dnd"),
    ("Away", "Away", "away"),
    ("Busy", "Busy", "busy"),
];

/// Waits until the PBX shows the wanted activity for everyone in `expect`; only the users
/// still missing are asked again, so large populations stay cheap to poll.
fn wait_for_pbx(stack: &Stack, what: &str, expect: &[(&Person, &str)]) -> Result<()> {
    let mut missing: Vec<(&Person, &str)> = expect.to_vec();
    let mut last = String::new();
    stack
        .wait_until(what, |s| {
            let mut still = Vec::new();
            for (p, activity) in &missing {
                let got = teams_activity(s, &p.guid)?;
                if got != *activity {
                    last = format!("{} wants {activity}, PBX has {got:?}", p.h323);
                    still.push((*p, *activity));
                }
            }
            missing = still;
            Ok(missing.is_empty().then_some(()))
        })
        .with_context(|| format!("{} still missing, e.g. {last}", missing.len()))
}

/// Requests the fake Graph received, as `(method, path, status)`.
fn graph_requests(stack: &Stack) -> Result<Vec<(String, String, u64)>> {
    Ok(stack
        .m365()
        .requests()?
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_string(),
                r["target"].as_str().unwrap_or("").to_string(),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// A 429 storm: every Graph call is throttled (`Retry-After: 2`) for several seconds while
/// Teams keeps changing. The connector backs off instead of hammering Graph, and once the
/// storm is over every user ends in the last Teams state: nothing is lost.
#[test]
fn a_429_storm_from_graph_converges_with_no_lost_presence() -> Result<()> {
    let persons = people(10, 21);
    // Plain notifications: every change needs a Graph read, so the storm hits each of them.
    let settings = [("presence.notifications", "\"plain\"")];
    Stack::run(options(&persons, 1, &settings), |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_until("the presence subscription", |s| {
            Ok((presence_subscriptions(s)?.len() == 1).then_some(()))
        })?;
        set_all(stack, &persons[..5], 0)?;
        wait_for_pbx(stack, "changes before the storm", &expect(&persons[..5], 0))?;

        let before = graph_requests(stack)?.len();
        stack.m365().call(
            "POST",
            "/faults",
            Some(json!({"pathContains": "/v1.0/", "fault": {"kind": "throttle", "retry_after_s": 2}})),
        )?;
        // During the storm: everyone changes, some twice (the last state must win).
        set_all(stack, &persons, 1)?;
        set_all(stack, &persons[..3], 2)?;
        settle(Duration::from_secs(6));
        let during = graph_requests(stack)?[before..].to_vec();
        stack.m365().call("DELETE", "/faults", None)?;

        let throttled = during.iter().filter(|r| r.2 == 429).count();
        ensure(throttled > 0, || {
            format!("the storm throttled nothing: {during:?}")
        })?;
        // A client that ignores Retry-After makes thousands of calls in six seconds; one that
        // honours it makes a few per pending read.
        ensure(during.len() <= 80, || {
            format!(
                "{} Graph calls in 6 s of throttling (a retry storm): {:?}",
                during.len(),
                &during[..during.len().min(20)]
            )
        })?;
        let mut want = expect(&persons, 1);
        for (i, w) in want.iter_mut().enumerate().take(3) {
            *w = (&persons[i], STATES[(i + 2) % STATES.len()].2);
        }
        wait_for_pbx(stack, "every last state after the storm", &want)?;
        Ok(())
    })
}

/// Notifications stop arriving (Graph accepts and renews the subscription but never
/// delivers, graph.md item 28): the periodic reconciliation (`getPresencesByUserId`) puts the
/// PBX right anyway.
#[test]
fn lost_notifications_are_repaired_by_reconciliation() -> Result<()> {
    let persons = people(6, 22);
    let settings = [("presence.reconcile-interval-s", "\"4\"")];
    Stack::run(options(&persons, 1, &settings), |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_until("the presence subscription", |s| {
            Ok((presence_subscriptions(s)?.len() == 1).then_some(()))
        })?;
        stack
            .m365()
            .patch_config(json!({"notification_outage": true}))?;
        let deliveries_before = deliveries(stack)?;
        set_all(stack, &persons, 3)?;
        wait_for_pbx(
            stack,
            "changes repaired by reconciliation",
            &expect(&persons, 3),
        )?;
        // The changes really were not notified: the fake delivered nothing new.
        let delivered = deliveries(stack)?;
        ensure(delivered == deliveries_before, || {
            format!(
                "notifications were delivered during the outage: {deliveries_before} -> {delivered}"
            )
        })?;
        let reads = graph_requests(stack)?
            .iter()
            .filter(|r| r.1.contains("getPresencesByUserId") && r.2 == 200)
            .count();
        ensure(reads > 0, || "no presence read happened".into())?;
        Ok(())
    })
}

/// How many change notifications the fake has delivered so far.
fn deliveries(stack: &Stack) -> Result<usize> {
    let d = stack.m365().call("GET", "/deliveries", None)?;
    Ok(d.as_array()
        .map(|a| {
            a.iter()
                .filter(|x| {
                    x["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with("/subscriptions"))
                        && x["outcome"] == "delivered"
                })
                .count()
        })
        .unwrap_or(0))
}

/// 1,500 users over three Teams accounts: three subscriptions of at most 650 users that
/// together watch every user once, and a Teams change of every single user reaches the PBX.
#[test]
fn fifteen_hundred_users_on_three_accounts_all_synced() -> Result<()> {
    let persons = people(1_500, 23);
    Stack::run(options(&persons, 3, &[]), |stack| {
        stack.wait_for_pbx_logins()?;
        let mut last = Vec::new();
        let subs = stack
            .wait_until("three subscriptions watching 1,500 users", |s| {
                let subs = presence_subscriptions(s)?;
                last = subs.iter().map(|x| watched_ids(x).len()).collect();
                let total: usize = last.iter().sum();
                Ok((subs.len() == 3 && total == 1_500).then_some(subs))
            })
            .with_context(|| format!("users per subscription: {last:?}"))?;
        let mut all = BTreeSet::new();
        for s in &subs {
            let ids = watched_ids(s);
            ensure(ids.len() <= 650, || {
                format!("{} users in one subscription", ids.len())
            })?;
            all.extend(ids);
        }
        ensure(all.len() == 1_500, || {
            format!("{} distinct users watched", all.len())
        })?;
        set_all(stack, &persons, 4)?;
        wait_for_pbx(
            stack,
            "every one of 1,500 users in the PBX",
            &expect(&persons, 4),
        )?;
        Ok(())
    })
}

/// Sets person `i` to `STATES[(i + shift) % len]`.
fn set_all(stack: &Stack, persons: &[Person], shift: usize) -> Result<()> {
    for (i, p) in persons.iter().enumerate() {
        let s = STATES[(i + shift) % STATES.len()];
        stack.m365().set_teams_presence(&p.email, s.0, s.1)?;
    }
    Ok(())
}

/// What [`set_all`] with `shift` should show in the PBX.
fn expect(persons: &[Person], shift: usize) -> Vec<(&Person, &'static str)> {
    persons
        .iter()
        .enumerate()
        .map(|(i, p)| (p, STATES[(i + shift) % STATES.len()].2))
        .collect()
}
