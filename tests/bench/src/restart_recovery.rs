//! Restart recovery (issue 10, item 9): the time from host start until every PBX presence is
//! correct again, and the Graph calls spent on it (the incumbent needs up to 12 minutes).
//!
//! The real host runs the connector against both fakes (e2e `Stack`, release binaries) with N
//! people synced Teams -> PBX (one Teams account per 650 users). Everyone goes into a meeting
//! and the PBX shows it; the host is stopped; while it is away every user changes to Do Not
//! Disturb in Teams (the notifications find no one); the host is started again. Measured: from
//! starting the host process until the PBX shows `dnd` for every user, and every Graph request
//! the fake received in that time (presence reads by their path).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e::people::{Person, people, synced_stack};
use e2e::{Stack, TeamsAccount};

use crate::table::{Row, thousands};

/// Users per presence subscription (and so per Teams account), graph.md.
pub const PER_ACCOUNT: usize = 650;

/// Teams account `n` (`teams<n>`), a password account of the fake tenant.
pub fn account(n: usize) -> TeamsAccount {
    TeamsAccount::Password {
        name: format!("teams{n}"),
        username: format!("teams.sync{n}@contoso.onmicrosoft.com"),
        password: "Passw0rd!".into(),
    }
}

/// Microsoft's clock (the fake's), ms since the epoch.
fn graph_now(stack: &Stack) -> Result<i64> {
    stack.m365().call("GET", "/tenant", None)?["now"]
        .as_i64()
        .context("the fake's tenant has no clock")
}

/// The activity of the connector's own item (`teams:`) of a user; "" when unset.
fn teams_activity(stack: &Stack, p: &Person) -> Result<String> {
    let v = stack.pbx().presence(&p.guid)?;
    Ok(v["stored"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["contact"] == "teams:"))
        .and_then(|i| i["activity"].as_str())
        .unwrap_or("")
        .to_string())
}

/// Waits until the PBX shows `activity` for every person; only those still wrong are asked
/// again, so the last probes are quick.
fn wait_all(stack: &Stack, persons: &[Person], activity: &str) -> Result<()> {
    let mut left: Vec<&Person> = persons.iter().collect();
    stack
        .wait_until(&format!("every PBX user shows {activity}"), |s| {
            let mut still = Vec::new();
            for p in &left {
                if teams_activity(s, p)? != activity {
                    still.push(*p);
                }
            }
            left = still;
            Ok(left.is_empty().then_some(()))
        })
        .with_context(|| format!("{} users not yet {activity}", left.len()))
}

/// Every person in Teams set to `(availability, activity)`.
fn set_all(stack: &Stack, persons: &[Person], state: (&str, &str)) -> Result<()> {
    for p in persons {
        stack
            .m365()
            .set_teams_presence(&p.email, state.0, state.1)?;
    }
    Ok(())
}

/// The restart-recovery row for `users` synced users.
pub fn measure(users: usize) -> Result<Vec<Row>> {
    let persons = people(users, 91);
    let accounts = users.div_ceil(PER_ACCOUNT);
    let mut options = synced_stack(&persons, (1..=accounts).map(account).collect());
    options.log_filter = "warn".into();
    let mut stack = Stack::start(options)?;
    let result = recover(&mut stack, &persons, accounts);
    stack.note(result)
}

fn recover(stack: &mut Stack, persons: &[Person], accounts: usize) -> Result<Vec<Row>> {
    stack.wait_for_pbx_logins()?;
    set_all(stack, persons, ("Busy", "InAMeeting"))?;
    wait_all(stack, persons, "meeting")?;

    stack.stop_host();
    set_all(stack, persons, ("DoNotDisturb", "DoNotDisturb"))?;
    let since = graph_now(stack)?;
    let started = Instant::now();
    stack.start_host_again()?;
    let listening = started.elapsed();
    wait_all(stack, persons, "dnd")?;
    let recovered = started.elapsed();

    let requests = stack.m365().requests()?;
    let during: Vec<_> = requests
        .iter()
        .filter(|r| {
            let at = r["at_ms"].as_i64().unwrap_or(0);
            at >= since && at <= since + recovered.as_millis() as i64
        })
        .collect();
    let path = |r: &&serde_json::Value| r["target"].as_str().unwrap_or("").to_string();
    let reads = during
        .iter()
        .filter(|r| path(r).contains("getPresencesByUserId"))
        .count();
    let subscriptions = during
        .iter()
        .filter(|r| path(r).contains("/subscriptions"))
        .count();
    let expected_reads = persons.len().div_ceil(PER_ACCOUNT);
    let pass = recovered <= Duration::from_secs(5) && reads <= expected_reads;
    Ok(vec![Row::check(
        "restart recovery: host start -> every PBX presence correct; Graph calls",
        format!(
            "{:.2} s; {reads} presence reads, {} Graph requests",
            recovered.as_secs_f64(),
            during.len()
        ),
        &format!("<= 5 s, ceil(N/650) = {expected_reads} presence reads"),
        pass,
        &format!(
            "{} users on {accounts} accounts, all changed in Teams while the host was stopped; host process start -> PBX shows every change (host listening after {:.2} s); Graph requests in that time: {reads} getPresencesByUserId, {subscriptions} on /subscriptions, {} in all (fake's request log)",
            thousands(persons.len() as f64),
            listening.as_secs_f64(),
            during.len()
        ),
    )])
}
