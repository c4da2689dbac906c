//! Teams -> PBX presence (F1) when the administrator removes a Teams account: its subscription
//! is deleted and its users move to the remaining account. Real processes on loopback; waits
//! have generous deadlines and nothing asserts speed.

use e2e::stack::{presence_subscriptions, teams_activity, watched_ids};
use std::collections::BTreeSet;

use anyhow::{Context, Result};
use e2e::people::{people, synced_stack};
use e2e::stack::ensure;
use e2e::{Stack, TeamsAccount};
use serde_json::{Value, json};

const PASSWORD: &str = "Passw0rd!&+%= #x";

fn account(n: usize) -> TeamsAccount {
    TeamsAccount::Password {
        name: format!("teams{n}"),
        username: format!("teams.sync{n}@contoso.onmicrosoft.com"),
        password: PASSWORD.into(),
    }
}

fn owner(sub: &Value) -> String {
    sub["userId"]
        .as_str()
        .or(sub["creatorId"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// Two accounts share 12 users; the second is removed from the settings and the host
/// restarted. Its presence subscription is DELETEd (not left to expire), the first account
/// watches all 12, Graph never answered 409, and a user the removed account watched syncs.
#[test]
fn a_removed_account_is_unsubscribed_and_its_users_move() -> Result<()> {
    let persons = people(12, 41);
    Stack::run(
        synced_stack(&persons, vec![account(1), account(2)]),
        |stack| {
            stack.wait_for_pbx_logins()?;
            let tenant_users = stack.m365().users()?;
            let entra = |upn: &str| -> Result<String> {
                tenant_users
                    .iter()
                    .find(|u| u["userPrincipalName"] == upn)
                    .and_then(|u| u["id"].as_str().map(str::to_string))
                    .with_context(|| format!("no {upn} in the fake tenant"))
            };
            let (first, second) = (
                entra("teams.sync1@contoso.onmicrosoft.com")?,
                entra("teams.sync2@contoso.onmicrosoft.com")?,
            );
            let subs = stack.wait_until("a presence subscription per account", |s| {
                let subs = presence_subscriptions(s)?;
                let owners: BTreeSet<String> = subs.iter().map(owner).collect();
                Ok(
                    (subs.len() == 2 && owners.contains(&first) && owners.contains(&second))
                        .then_some(subs),
                )
            })?;
            let old = subs
                .iter()
                .find(|s| owner(s) == second)
                .context("the second account's subscription")?;
            let old_id = old["id"].as_str().unwrap_or("").to_string();
            let moved_id = watched_ids(old)
                .into_iter()
                .next()
                .context("the second account watched nobody")?;
            let moved = persons
                .iter()
                .find(|p| entra(&p.email).is_ok_and(|id| id == moved_id))
                .context("the moved person")?;

            // The administrator removes the second account.
            let only_first =
                json!([{"name": "teams1", "username": "teams.sync1@contoso.onmicrosoft.com",
                                 "password": PASSWORD}])
                .to_string();
            stack.set_setting(
                "presence.accounts",
                &serde_json::to_string(&only_first).expect("string"),
            );
            stack.restart_host()?;
            stack.wait_for_pbx_logins()?;

            let mut last = Vec::new();
            stack
                .wait_until("one subscription watching all 12 users", |s| {
                    last = presence_subscriptions(s)?;
                    Ok((last.len() == 1
                        && owner(&last[0]) == first
                        && watched_ids(&last[0]).len() == 12)
                        .then_some(()))
                })
                .with_context(|| format!("presence subscriptions: {last:?}"))?;
            let requests = stack.m365().requests()?;
            let deleted = requests.iter().any(|r| {
                r["method"] == "DELETE"
                    && r["target"].as_str().is_some_and(|t| t.ends_with(&old_id))
                    && r["status"] == 204
            });
            ensure(deleted, || {
                format!("the removed account's subscription {old_id} was not deleted")
            })?;
            let conflicts: Vec<&Value> = requests.iter().filter(|r| r["status"] == 409).collect();
            ensure(conflicts.is_empty(), || {
                format!("Graph answered 409: {conflicts:?}")
            })?;

            stack
                .m365()
                .set_teams_presence(&moved.email, "DoNotDisturb", "DoNotDisturb")?;
            stack.wait_until("the moved user's change in the PBX", |s| {
                Ok((teams_activity(s, &moved.guid)? == "dnd").then_some(()))
            })?;
            Ok(())
        },
    )
}
