//! The PBX side through the real host: AppWebsocket login of master and slave, user
//! replication, refused passwords, host restarts, dropped connections and a hot swap.

use anyhow::Result;
use e2e::stack::INSTANCE;
use e2e::{PbxOptions, Stack, StackOptions};
use serde_json::json;

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

/// Waits until both PBXs are logged in and every user of each has been replicated.
fn wait_for_full_replication(stack: &Stack) -> Result<e2e::ConnectorStatus> {
    stack.wait_for_pbx_logins()?;
    stack.wait_for_status("every user replicated from both PBXs", |st| {
        ["master", "slave"]
            .iter()
            .all(|p| st.logged_in(p).is_some_and(|c| c.users == USERS as u64))
    })
}

/// Both PBXs log in with the instance password, the connector names the master, and each PBX's
/// user table arrives in full; the fake saw no protocol violation.
#[test]
fn master_and_slave_log_in_and_replicate_users() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        let status = wait_for_full_replication(stack)?;
        assert_eq!(status.master.as_deref(), Some("master"));
        assert_eq!(stack.pbx().users()?.len(), USERS);
        for node in stack.pbx().nodes()? {
            assert_eq!(
                (node.state.as_str(), node.logins),
                ("logged-in", 1),
                "{node:?}"
            );
        }
        let host = stack.host().instance(INSTANCE)?;
        assert_eq!(host.websockets, 2, "one AppWebsocket per PBX: {host:?}");
        assert_eq!((host.traps, host.dead_letters), (0, 0), "{host:?}");
        assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
        Ok(())
    })
}

/// A PBX configured with the wrong password never gets in, keeps retrying, and gets in as soon
/// as its App object has the right password.
#[test]
fn wrong_password_is_refused_and_the_pbx_keeps_retrying() -> Result<()> {
    Stack::run(
        StackOptions {
            pbx: Some(PbxOptions {
                users: 5,
                password: Some("not-the-instance-password".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        |stack| {
            let node = stack.wait_until("three refused logins", |s| {
                let n = s.pbx().node("master")?;
                Ok((n.attempts >= 3).then_some(n))
            })?;
            assert_eq!(node.logins, 0, "{node:?}");
            let status = stack.connector().status()?;
            assert!(
                status.pbx.iter().all(|c| !c.logged_in),
                "nobody may be logged in: {status:?}"
            );
            assert_eq!(status.master, None);

            stack
                .pbx()
                .patch_node("master", json!({"app": {"password": "e2e-secret"}}))?;
            stack.wait_for_pbx_logins()?;
            assert_eq!(stack.pbx().node("master")?.logins, 1);
            Ok(())
        },
    )
}

/// A graceful host restart on the same data directory: both PBXs come back by themselves, the
/// users are there again, and the guest's persisted counters survived.
#[test]
fn host_restart_on_the_same_data_dir_lets_the_pbxs_log_in_again() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        wait_for_full_replication(stack)?;
        stack.restart_host()?;
        stack.wait_until("both PBXs logged in a second time", |s| {
            let nodes = s.pbx().nodes()?;
            Ok(nodes
                .iter()
                .all(|n| n.logins >= 2 && n.state == "logged-in")
                .then_some(()))
        })?;
        let status = wait_for_full_replication(stack)?;
        assert_eq!(status.master.as_deref(), Some("master"));
        // Counters live in the guest's KV store: 2 inits means the same data directory was used.
        assert!(
            status.events["init"].as_u64() >= Some(2),
            "{:?}",
            status.events
        );
        assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
        Ok(())
    })
}

/// A host crash (SIGKILL, no clean shutdown) is survived the same way.
#[test]
fn host_crash_and_restart_lets_the_pbxs_log_in_again() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        wait_for_full_replication(stack)?;
        stack.crash_and_restart_host()?;
        stack.wait_until("both PBXs logged in a second time", |s| {
            let nodes = s.pbx().nodes()?;
            Ok(nodes.iter().all(|n| n.logins >= 2).then_some(()))
        })?;
        wait_for_full_replication(stack)?;
        Ok(())
    })
}

/// A dropped slave connection shows in the connector's status, the master is unaffected, and
/// the slave logs in and replicates again once it can dial.
#[test]
fn a_dropped_slave_reconnects_and_replicates_again() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        wait_for_full_replication(stack)?;
        stack.kill_pbx_connection("slave")?;
        let status = stack.wait_for_status("the slave gone from /status", |st| {
            st.logged_in("slave").is_none()
        })?;
        assert!(status.logged_in("master").is_some(), "{status:?}");
        assert_eq!(status.master.as_deref(), Some("master"));

        stack.restore_pbx_connection("slave")?;
        stack.wait_until("the slave logged in again", |s| {
            Ok((s.pbx().node("slave")?.logins >= 2).then_some(()))
        })?;
        wait_for_full_replication(stack)?;
        assert_eq!(stack.pbx().node("master")?.logins, 1, "master untouched");
        Ok(())
    })
}

/// A new component file in the plugins directory is swapped in while both PBX sockets stay
/// open: no reconnect, no lost users, and the new guest serves new connections.
#[test]
fn hot_swap_keeps_pbx_sockets_and_replicated_users() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        wait_for_full_replication(stack)?;
        let before = stack.host().instance(INSTANCE)?;

        stack.swap_guest(&stack.guest_variant("v2")?)?;
        let after = stack.host().instance(INSTANCE)?;
        assert_ne!(
            before.status["wasm_sha256"], after.status["wasm_sha256"],
            "the new component runs"
        );
        assert_eq!(after.websockets, 2, "{after:?}");
        let status = wait_for_full_replication(stack)?;
        assert_eq!(status.master.as_deref(), Some("master"));
        for node in stack.pbx().nodes()? {
            assert_eq!(node.logins, 1, "no reconnect across the swap: {node:?}");
        }

        // The swapped-in guest accepts a fresh connection too.
        stack.kill_pbx_connection("slave")?;
        stack.wait_for_status("the slave gone", |st| st.logged_in("slave").is_none())?;
        stack.restore_pbx_connection("slave")?;
        wait_for_full_replication(stack)?;
        let host = stack.host().instance(INSTANCE)?;
        assert_eq!((host.traps, host.dead_letters), (0, 0), "{host:?}");
        Ok(())
    })
}

/// Users created and deleted on the PBX while the connector is connected reach it through the
/// replication pushes, on the master and on the slave.
#[test]
fn users_added_and_deleted_later_are_replicated() -> Result<()> {
    Stack::run(master_and_slave(), |stack| {
        wait_for_full_replication(stack)?;
        let newcomers = e2e::people::people(5, 99);
        let users: Vec<serde_json::Value> =
            newcomers.iter().map(|p| p.pbx_user("master")).collect();
        stack.pbx().call("POST", "/users", Some(json!(users)))?;
        let expected = USERS as u64 + 5;
        stack.wait_for_status("the new users on both PBXs", |st| {
            ["master", "slave"]
                .iter()
                .all(|p| st.logged_in(p).is_some_and(|c| c.users == expected))
        })?;
        stack
            .pbx()
            .call("DELETE", &format!("/users/{}", newcomers[0].guid), None)?;
        stack.wait_for_status("the deleted user gone on both PBXs", |st| {
            ["master", "slave"]
                .iter()
                .all(|p| st.logged_in(p).is_some_and(|c| c.users == expected - 1))
        })?;
        assert_eq!(stack.pbx().violations()?, Vec::<serde_json::Value>::new());
        Ok(())
    })
}

/// The connector answers only its own resources: unknown paths and a browser GET on the
/// notification URL are 404, never an error page or a hang.
#[test]
fn unknown_paths_answer_404() -> Result<()> {
    Stack::run(StackOptions::default(), |stack| {
        let connector = stack.connector();
        stack.wait_until("the connector's /status", |_| {
            Ok((connector.get("/status")?.status == 200).then_some(()))
        })?;
        for path in ["/subscriptions", "/no-such-thing", "/"] {
            assert_eq!(connector.get(path)?.status, 404, "{path}");
        }
        Ok(())
    })
}
