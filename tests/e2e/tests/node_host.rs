//! The unmodified connector guest on the Node.js host (`examples/node-host`): the same stack as
//! `presence.rs`, with `node host.js` in place of `apphost`. Needs `make guest node-host`.

use anyhow::Result;
use e2e::people::{Person, people, synced_stack};
use e2e::stack::teams_item;
use e2e::{HostKind, Stack, StackOptions, TeamsAccount};

const SERVICE_USER: &str = "teams.sync@contoso.onmicrosoft.com";

fn on_node(persons: &[Person]) -> StackOptions {
    StackOptions {
        host: HostKind::Node,
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

/// On the Node host: both PBXs log in over its WebSocket server, the Teams account signs in,
/// Entra users and PBX users are matched, and a Teams presence change in the fake reaches the
/// PBX (meeting shown, then unset when Available again).
#[test]
fn teams_presence_reaches_the_pbx_through_the_node_host() -> Result<()> {
    let persons = people(10, 4);
    Stack::run(on_node(&persons), |stack| {
        stack.wait_for_pbx_logins()?;
        for person in &persons[..2] {
            stack
                .m365()
                .set_teams_presence(&person.email, "Busy", "InAMeeting")?;
            stack.wait_until(&format!("{} in a meeting on the PBX", person.name), |s| {
                Ok(teams_item(s, &person.guid)?.filter(|(activity, _)| activity == "meeting"))
            })?;
            stack
                .m365()
                .set_teams_presence(&person.email, "Available", "Available")?;
            stack.wait_until(&format!("{}'s Teams item unset", person.name), |s| {
                Ok(teams_item(s, &person.guid)?
                    .is_none_or(|(activity, _)| activity.is_empty())
                    .then_some(()))
            })?;
        }
        assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
        assert!(
            stack.host_log().contains("instance e2e runs"),
            "the Node host ran the guest: {}",
            stack.host_log()
        );
        Ok(())
    })
}
