//! The connector core against the project's independent fake PBX (`tests/fakes/pbx`), both
//! sans-IO and in-process: the fake dials, challenges, logs in with its own digest code,
//! replicates its users, stores presence and checks licences; this test only shuttles frames.
//! It catches misreadings of the spec that one side's unit tests would share with their code.

mod common;

use common::pbx::{node, pump};
use std::sync::Arc;

use fake_pbx::users::{PopulateSpec, populate};
use fake_pbx::{ManualClock, Pbx};
use microsoft365::event::InitInfo;
use microsoft365::pbx::PbxEvent;
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event};

#[test]
fn connector_interoperates_with_the_fake_pbx() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut pbx = Pbx::new("example.com", Arc::new(clock.clone()), 7);
    let users = populate(&PopulateSpec {
        users: 500,
        locs: vec!["master".into(), "slave".into()],
        slave_percent: 30,
        ..Default::default()
    });
    let plain = users.iter().filter(|u| u.pseudo.is_none()).count();
    pbx.add_users(users);
    pbx.add_node(node("master", "pwd"));
    pbx.add_node(node("slave", "pwd"));

    let mut env = TestEnv::new();
    env.set_config("instance.password", "pwd");
    let mut c = Connector::new();
    c.handle(&mut env, Event::Init(InitInfo::default_start()));
    pbx.tick();
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert!(ev.contains(&PbxEvent::UsersLoaded {
        pbx: "master".into(),
        count: plain as u64
    }));
    assert!(ev.contains(&PbxEvent::UsersLoaded {
        pbx: "slave".into(),
        count: plain as u64
    }));
    for p in ["master", "slave"] {
        let n = microsoft365::pbx::users::count(&mut env, p);
        assert_eq!(n as usize, plain);
    }
    assert!(pbx.is_logged_in("master") && pbx.is_logged_in("slave"));

    // Presence on the connector's own contact, routed by loc.
    let slave_user = microsoft365::pbx::users::list(&mut env, "master")
        .into_iter()
        .find(|u| u.loc == "slave")
        .unwrap();
    let ws = c
        .pbx
        .set_presence(
            &mut env,
            Some(&slave_user.loc),
            &slave_user.guid,
            "meeting",
            "Teams meeting",
        )
        .unwrap();
    assert_eq!(Some(ws), pbx.node_conn("slave"));
    pump(&mut pbx, &mut c, &mut env);
    assert!(
        pbx.stored_presence(&slave_user.guid)
            .iter()
            .any(|p| p.contact == "teams:" && p.activity == "meeting")
    );

    // on-the-phone: accepted or falls back to busy.
    c.pbx
        .set_presence(&mut env, None, &slave_user.guid, "on-the-phone", "")
        .unwrap();
    pump(&mut pbx, &mut c, &mut env);
    // Either accepted, or refused and replaced by busy (product decision).
    let item = pbx.stored_presence(&slave_user.guid);
    assert!(
        item.iter().any(|p| p.contact == "teams:"
            && (p.activity == "on-the-phone"
                || (p.activity == "busy" && p.note == "In a Teams call"))),
        "{item:?}"
    );

    // Unset.
    c.pbx
        .set_presence(&mut env, Some("slave"), &slave_user.guid, "", "")
        .unwrap();
    pump(&mut pbx, &mut c, &mut env);
    let items = pbx.stored_presence(&slave_user.guid);
    assert!(
        !items
            .iter()
            .any(|p| p.contact == "teams:" && !p.activity.is_empty()),
        "{items:?}"
    );

    // Licence checks.
    for u in microsoft365::pbx::users::list(&mut env, "master")
        .iter()
        .take(5)
    {
        c.pbx.check_licence(&mut env, &u.guid).unwrap();
    }
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PbxEvent::Licence { .. }))
            .count(),
        5
    );

    // Presence monitor.
    c.pbx
        .subscribe_presence(&mut env, Some("master"), &slave_user.h323, &slave_user.guid)
        .unwrap();
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert!(
        ev.contains(&PbxEvent::PresenceMonitor {
            pbx: "master".into(),
            guid: slave_user.guid.clone(),
            up: true
        }),
        "{ev:?}"
    );
    pbx.set_user_presence(&slave_user.guid, "away", "back soon");
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert!(ev.iter().any(|e| matches!(e, PbxEvent::Presence { guid, items, .. } if *guid == slave_user.guid && items.iter().any(|i| i.activity == "away"))), "{ev:?}");

    // Kill the slave, let it reconnect, check it re-logs in and resumes.
    pbx.kill("slave");
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert!(
        ev.iter()
            .any(|e| matches!(e, PbxEvent::Disconnected { pbx: Some(p), .. } if p == "slave"))
    );
    pbx.restore("slave");
    clock.advance(60_000);
    pbx.tick();
    let ev = pump(&mut pbx, &mut c, &mut env);
    assert!(
        ev.iter()
            .any(|e| matches!(e, PbxEvent::Connected { pbx, .. } if pbx == "slave"))
    );
    assert_eq!(
        microsoft365::pbx::users::count(&mut env, "slave") as usize,
        plain
    );
    assert!(pbx.is_logged_in("slave"));

    // A wrong password on a new node is refused.
    pbx.add_node(node("slave2", "wrong"));
    pbx.tick();
    pump(&mut pbx, &mut c, &mut env);

    assert!(!pbx.is_logged_in("slave2"));

    assert!(pbx.violations().is_empty(), "{:?}", pbx.violations());
}
