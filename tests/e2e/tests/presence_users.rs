//! Teams -> PBX presence (F1): changes in Entra reach the connector through the user-change
//! subscription (`/users`), long before the hourly re-read of the users. Real processes on
//! loopback; waits have generous deadlines and nothing asserts speed.

use anyhow::{Context, Result};
use e2e::people::{people, synced_stack};
use e2e::stack::teams_activity;
use e2e::stack::{ensure, subscriptions_where};
use e2e::{Stack, TeamsAccount};
use serde_json::{Value, json};

/// The user-change subscriptions (`/users`).
fn user_subscriptions(stack: &Stack) -> Result<Vec<Value>> {
    subscriptions_where(stack, |r| r.trim_start_matches('/') == "users")
}

/// Matching is by the UPN without its domain (the harness's `match_by_alias`). Renaming
/// Alice's UPN in Entra unmatches her: the connector learns it from the user-change
/// subscription and removes her Teams item from the PBX; renamed back, she is synced again.
/// The users are otherwise re-read only hourly (the default), so only the subscription can
/// explain either change within the wait.
#[test]
fn an_entra_rename_is_picked_up_through_the_user_subscription() -> Result<()> {
    let persons = people(4, 31);
    let account = TeamsAccount::Password {
        name: "teams1".into(),
        username: "teams.sync1@contoso.onmicrosoft.com".into(),
        password: "Passw0rd!&+%= #x".into(),
    };
    Stack::run(synced_stack(&persons, vec![account]), |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_until("one user-change subscription", |s| {
            Ok((user_subscriptions(s)?.len() == 1).then_some(()))
        })?;
        let alice = &persons[0];
        let id = stack
            .m365()
            .users()?
            .into_iter()
            .find(|u| u["userPrincipalName"] == alice.email.as_str())
            .and_then(|u| u["id"].as_str().map(str::to_string))
            .context("Alice in the fake tenant")?;
        stack.m365().set_teams_presence(&id, "Busy", "InAMeeting")?;
        stack.wait_until("Alice in a meeting on the PBX", |s| {
            Ok((teams_activity(s, &alice.guid)? == "meeting").then_some(()))
        })?;

        let renamed = format!("renamed.{}", alice.email);
        stack.m365().call(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({ "userPrincipalName": renamed })),
        )?;
        stack.wait_until(
            "Alice's Teams item removed once she no longer matches",
            |s| Ok(teams_activity(s, &alice.guid)?.is_empty().then_some(())),
        )?;

        stack.m365().call(
            "PATCH",
            &format!("/users/{id}"),
            Some(json!({ "userPrincipalName": alice.email })),
        )?;
        stack.wait_until("Alice synced again after the rename back", |s| {
            Ok((teams_activity(s, &alice.guid)? == "meeting").then_some(()))
        })?;
        // Still one user-change subscription, and the others never lost theirs.
        let subs = user_subscriptions(stack)?;
        ensure(subs.len() == 1, || format!("user subscriptions: {subs:?}"))?;
        Ok(())
    })
}
