//! PBX -> Teams presence (F2) in-process against both independent fakes, in virtual time:
//! a 30-minute PBX call stays visible in Teams through renewals and is cleared when it ends,
//! and nothing the connector writes comes back, in either direction. The harness
//! (`common/mod.rs`, shared with `presence_sync.rs`) only shuttles bytes and time; here it runs
//! with plain notifications and the F2 app registration.

mod common;

use common::*;
use fake_m365::AppReg;

const ALICE: &str = "alice.smith@contoso.onmicrosoft.com";
const ALICE_GUID: &str = "00000000000000000000000000000001";
const BOB: &str = "bob.jones@contoso.onmicrosoft.com";

impl World {
    /// Teams' aggregate presence of a user.
    fn teams(&mut self, upn: &str) -> (String, String) {
        self.fake.current_presence(upn).expect("a Teams user")
    }

    /// F2's writes so far (inner requests of every `$batch`): the action of each.
    fn writes(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.target.ends_with("/$batch"))
            .flat_map(|r| {
                let b: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                b["requests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|q| q["url"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }
}

fn names() -> Vec<String> {
    ["Alice Smith", "Bob Jones"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn started() -> World {
    let mut w = World::new(&names(), &[], 1);
    w.fake.add_app(AppReg {
        client_id: "f2-client".into(),
        display_name: "Connector PBX presence".into(),
        secret: Some("f2-secret".into()),
        roles: vec!["Presence.ReadWrite.All".into()],
        ..Default::default()
    });
    let tenant = w.fake.tenant_id();
    w.env.set_config("presence.notifications", "plain");
    w.env.set_config("presence-out.tenant", tenant);
    w.env.set_config("presence-out.client-id", "f2-client");
    w.env.set_config("presence-out.client-secret", "f2-secret");
    w.start();
    // Signed-in Teams clients: preferred presence needs a session (graph.md 4.7).
    for u in [ALICE, BOB] {
        w.fake
            .teams_client_presence(u, None, "Available", "Available")
            .unwrap();
    }
    // F2 picks up F1's matches at its next scan.
    w.advance(10_000);
    let status = w.status();
    assert_eq!(status["presence_out"]["monitored"], 2, "{status}");
    w
}

#[test]
fn a_thirty_minute_call_stays_visible_and_is_cleared_when_it_ends() {
    let mut w = started();
    w.pbx.start_call(ALICE_GUID);
    w.advance(1_000);
    assert_eq!(w.teams(ALICE), ("Busy".into(), "InACall".into()));
    for minute in 1..=30 {
        w.advance(60_000);
        assert_eq!(
            w.teams(ALICE),
            ("Busy".into(), "InACall".into()),
            "minute {minute}"
        );
        // F1 never carries the connector's own call back into the PBX.
        assert_eq!(w.pbx_activity(0).unwrap_or_default(), "", "minute {minute}");
    }
    // One set and a renewal every 5 minutes (the session lasts 10).
    let sets = w
        .writes()
        .iter()
        .filter(|u| u.ends_with("/setPresence"))
        .count();
    assert!((6..=8).contains(&sets), "{sets} setPresence in 30 minutes");
    w.pbx.end_call(ALICE_GUID);
    w.advance(1_000);
    assert_eq!(w.teams(ALICE), ("Available".into(), "Available".into()));
    assert!(w.writes().last().unwrap().ends_with("/clearPresence"));
    // F1 never carried the connector's own call back into the PBX.
    assert_eq!(w.pbx_activity(0).unwrap_or_default(), "");
}

#[test]
fn nothing_the_connector_writes_comes_back_either_way() {
    let mut w = started();
    // PBX -> Teams -> PBX: Alice's PBX call and away never reach her PBX Teams item.
    for _ in 0..5 {
        w.pbx.start_call(ALICE_GUID);
        for _ in 0..5 {
            w.advance(1_000);
            assert_eq!(w.pbx_activity(0).unwrap_or_default(), "");
        }
        w.pbx.end_call(ALICE_GUID);
        w.advance(700);
    }
    w.pbx.set_presence(ALICE_GUID, "tel:", "away", "");
    w.advance(2_000);
    assert_eq!(w.teams(ALICE), ("Away".into(), "Away".into()));
    assert_eq!(w.pbx_activity(0).unwrap_or_default(), "");
    // Teams -> PBX -> Teams: Bob's own Teams states reach the PBX, and F2 writes nothing.
    let before = w.writes().len();
    for (a, b) in [
        ("DoNotDisturb", "DoNotDisturb"),
        ("Busy", "InACall"),
        ("Away", "Away"),
    ] {
        w.fake.teams_client_presence(BOB, None, a, b).unwrap();
        w.advance(2_000);
    }
    assert_eq!(w.pbx_activity(1).as_deref(), Some("away"));
    assert_eq!(w.writes().len(), before, "{:?}", &w.writes()[before..]);
    // And the traffic stops: a quiet minute writes nothing at all.
    let quiet = w.writes().len();
    w.advance(60_000);
    assert_eq!(w.writes().len(), quiet);
}

#[test]
fn a_restart_in_the_middle_of_a_call_keeps_it_visible_and_clears_it_at_the_end() {
    let mut w = started();
    w.pbx.start_call(ALICE_GUID);
    w.advance(1_000);
    w.advance(4 * 60_000);
    // The host restarts (a minute passes); the PBX dials again and the call goes on.
    w.restart();
    for minute in 1..=20 {
        w.advance(60_000);
        assert_eq!(
            w.teams(ALICE),
            ("Busy".into(), "InACall".into()),
            "minute {minute} after the restart"
        );
    }
    w.pbx.end_call(ALICE_GUID);
    w.advance(1_000);
    assert_eq!(w.teams(ALICE), ("Available".into(), "Available".into()));
}
