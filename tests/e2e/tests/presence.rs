//! Teams -> PBX presence (F1) end to end: a change in the fake Teams client shows up in the fake
//! PBX through the real host.

use anyhow::Result;
use e2e::people::{Person, people, synced_stack};
use e2e::stack::teams_item;
use e2e::{Stack, StackOptions, TeamsAccount};

const SERVICE_USER: &str = "teams.sync@contoso.onmicrosoft.com";

/// Ten people on both sides, one Teams account, master + slave (every other person on the slave).
fn presence_options(persons: &[Person]) -> StackOptions {
    synced_stack(
        persons,
        vec![TeamsAccount::Password {
            name: "teams1".into(),
            username: SERVICE_USER.into(),
            password: "Passw0rd!&+%= #x".into(),
        }],
    )
}

/// Alice goes InAMeeting in Teams -> the PBX shows `meeting` on the connector's contact, on her
/// own PBX (master or slave); back to Available -> the item is unset.
#[test]
fn teams_meeting_shows_in_the_pbx_and_available_unsets_it() -> Result<()> {
    let persons = people(10, 4);
    Stack::run(presence_options(&persons), |stack| {
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
    })
}
