//! The PBX side through the real host: AppWebsocket login of master and slave, user
//! replication, refused passwords, host restarts and dropped connections.

use std::time::Duration;

use anyhow::Result;
use e2e::stack::settle;
use e2e::{PbxOptions, Stack, StackOptions};

const USERS: usize = 40;

fn master_and_slave() -> StackOptions {
    StackOptions {
        pbx: Some(PbxOptions {
            slaves: vec!["slave".into()],
            users: USERS,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Both PBXs log in with the instance password, the connector names the master, and each PBX's
/// user table arrives in full; the fake saw no protocol violation.
#[test]
fn master_and_slave_log_in_and_replicate_users() -> Result<()> {
    let stack = Stack::start(master_and_slave())?;
    stack.wait_for_pbx_logins()?;
    let status = stack.wait_for_status("every user replicated from both PBXs", |st| {
        ["master", "slave"]
            .iter()
            .all(|p| st.logged_in(p).is_some_and(|c| c.users == USERS as u64))
    })?;
    assert_eq!(status.master.as_deref(), Some("master"));
    assert_eq!(stack.pbx().users()?.len(), USERS);
    for node in stack.pbx().nodes()? {
        assert_eq!(
            (node.state.as_str(), node.logins),
            ("logged-in", 1),
            "{node:?}"
        );
    }
    let host = stack.host().instance(e2e::stack::INSTANCE)?;
    assert_eq!(host.websockets, 2, "one AppWebsocket per PBX: {host:?}");
    assert_eq!((host.traps, host.dead_letters), (0, 0), "{host:?}");
    assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
    Ok(())
}
