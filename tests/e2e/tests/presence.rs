//! Teams -> PBX presence (F1) end to end: a change in the fake Teams client shows up in the fake
//! PBX through the real host, and through the Node.js host (`examples/node-host`, needs
//! `make guest node-host`) running the same unmodified guest.

use anyhow::Result;
use e2e::people::{Person, people, synced_stack};
use e2e::stack::teams_item;
use e2e::{HostKind, Stack, StackOptions, TeamsAccount};

const SERVICE_USER: &str = "teams.sync@contoso.onmicrosoft.com";

/// Ten people on both sides, one Teams account, master + slave (every other person on the
/// slave), on `host`.
fn presence_options(persons: &[Person], host: HostKind) -> StackOptions {
    StackOptions {
        host,
        ..synced_stack(
            persons,
            vec![TeamsAccount::Password {
                name: "teams1".into(),
                username: SERVICE_USER.into(),
                password: "Passw0rd!&+%= #x".into(),
            }],
        )
    }
}

/// Both PBXs log in, the Teams account signs in, users are matched; then two people (one on
/// the master, one on the slave) go InAMeeting in Teams -> the PBX shows `meeting` on the
/// connector's contact on their own PBX; back to Available -> the item is unset.
fn meeting_shows_and_available_unsets(stack: &Stack, persons: &[Person]) -> Result<()> {
    stack.wait_for_pbx_logins()?;
    for alice in &persons[..2] {
        stack
            .m365()
            .set_teams_presence(&alice.email, "Busy", "InAMeeting")?;
        stack.wait_until(&format!("{} in a meeting on the PBX", alice.name), |s| {
            Ok(teams_item(s, &alice.guid)?.filter(|(activity, _)| activity == "meeting"))
        })?;
        stack
            .m365()
            .set_teams_presence(&alice.email, "Available", "Available")?;
        stack.wait_until(&format!("{}'s Teams item unset", alice.name), |s| {
            Ok(teams_item(s, &alice.guid)?
                .is_none_or(|(activity, _)| activity.is_empty())
                .then_some(()))
        })?;
    }
    assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
    Ok(())
}

#[test]
fn teams_meeting_shows_in_the_pbx_and_available_unsets_it() -> Result<()> {
    let persons = people(10, 4);
    Stack::run(presence_options(&persons, HostKind::Apphost), |stack| {
        meeting_shows_and_available_unsets(stack, &persons)
    })
}

/// The same on the Node host: the unmodified guest, its WebSocket server, timers and KV.
#[test]
fn teams_presence_reaches_the_pbx_through_the_node_host() -> Result<()> {
    let persons = people(10, 4);
    Stack::run(presence_options(&persons, HostKind::Node), |stack| {
        meeting_shows_and_available_unsets(stack, &persons)?;
        assert!(
            stack.host_log().contains("instance e2e runs"),
            "the Node host ran the guest: {}",
            stack.host_log()
        );
        Ok(())
    })
}
