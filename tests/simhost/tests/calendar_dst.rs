//! Calendar presence (F3) over three simulated weeks that cross Europe's change to summer time
//! (2027-03-28): a weekly series at 09:00 "W. Europe Standard Time" with one occurrence moved,
//! run by the real guest in the simulation host's virtual time against the fakes' cores.
//!
//! The PBX's calendar item is sampled at chosen moments: the series must follow local time
//! (08:00 UTC in winter, 07:00 UTC in summer), the moved occurrence must show at its new time
//! with its own subject and not at the series' time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use fake_m365::{AppReg, Config, Fake, UserSpec};
use fake_pbx::setup::{Options, build};
use serde_json::json;
use simhost::clock::VirtualClock;
use simhost::fakes_world::{FakeClock, FakesWorld, Matched};
use simhost::{Guest, Sim, SimConfig};

const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;
const LICENCE: &str = "App(innovaphone-microsoft365)";
const PRESENCE_APP: &str = "f1-presence-client";
const CALENDAR_APP: &str = "f3-calendar-client";
const CALENDAR_SECRET: &str = "f3~secret+&%";
/// 2027-03-15T00:00:00Z, a Monday, two weeks before the change to summer time.
const START_MS: u64 = 1_805_068_800_000;

fn guest() -> Guest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/microsoft365.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make guest` first",
        path.display()
    );
    Guest::load(&simhost::engine().unwrap(), &path).unwrap()
}

/// ms since the epoch of a UTC date and time.
fn utc(y: i64, mo: u32, d: u32, h: u64, mi: u64) -> u64 {
    // Days from civil (H. Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    days * 24 * HOUR + h * HOUR + mi * MINUTE
}

/// The calendar item of `guid` in the PBX: (activity, note), empty when there is none.
fn calendar_item(sim: &Sim<FakesWorld>, guid: &str) -> (String, String) {
    sim.world()
        .pbx
        .stored_presence(guid)
        .into_iter()
        .find(|i| i.contact == "calendar:")
        .map(|i| (i.activity, i.note))
        .unwrap_or_default()
}

#[test]
fn weekly_series_with_an_exception_across_the_change_to_summer_time() {
    assert_eq!(utc(2027, 3, 15, 0, 0), START_MS);
    let clock = VirtualClock::new(START_MS);
    let mut fake = Fake::new(
        Config {
            seed: 3,
            ..Config::default()
        },
        Arc::new(FakeClock(clock.clone())),
    );
    fake.add_app(AppReg {
        client_id: PRESENCE_APP.into(),
        display_name: "Connector presence".into(),
        public_client: true,
        delegated: vec!["Presence.Read.All".into(), "User.Read.All".into()],
        ..Default::default()
    });
    fake.add_app(AppReg {
        client_id: CALENDAR_APP.into(),
        display_name: "Connector calendar".into(),
        secret: Some(CALENDAR_SECRET.into()),
        roles: vec!["Calendars.Read".into(), "User.Read.All".into()],
        ..Default::default()
    });
    let account = "presence1@contoso.onmicrosoft.com";
    fake.add_user(UserSpec {
        display_name: "PBX Presence 1".into(),
        user_principal_name: Some(account.into()),
        password: Some("Acct-Passw0rd&+".into()),
        teams: Some(true),
        ..Default::default()
    });
    let instance_password = "inst-secret&+%";
    let mut pbx = build(
        &Options {
            url: "https://connector.example.net/example.com/m365/innovaphone-microsoft365".into(),
            password: instance_password.into(),
            domain: "example.com".into(),
            users: 6,
            pseudo: 0,
            seed: 3,
            ..Options::default()
        },
        Arc::new(FakeClock(clock.clone())),
    );
    pbx.switches.log_outgoing = false;

    // The PBX users in Teams under their PBX Long Name (the guest's default matching).
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for u in pbx.users() {
        *names.entry(u.cn.to_lowercase()).or_default() += 1;
    }
    let people: Vec<(String, String, String)> = pbx
        .users()
        .filter(|u| u.pseudo.is_none() && !u.email().is_empty())
        .map(|u| (u.guid.clone(), u.cn.clone(), u.email().to_string()))
        .collect();
    let mut matched = Vec::new();
    let mut seen = BTreeSet::new();
    for (guid, cn, email) in people {
        if !seen.insert(email.to_ascii_lowercase()) || names.get(&cn.to_lowercase()) != Some(&1) {
            continue;
        }
        let user = fake.add_user(UserSpec {
            display_name: cn,
            user_principal_name: Some(email.clone()),
            mail: Some(email.clone()),
            teams: Some(true),
            ..Default::default()
        });
        let licensed = pbx.is_licensed(&guid, LICENCE);
        matched.push(Matched {
            pbx_guid: guid,
            upn: email,
            uid: user.id,
            licensed,
        });
    }
    let ada = matched
        .iter()
        .find(|m| m.licensed)
        .expect("a licensed, matched user")
        .clone();

    // Wednesdays 09:00-10:00 Berlin time from 2027-03-17; the occurrence of 2027-03-31 (the
    // first in summer time) moved to 11:00-12:00 and renamed.
    let zone = "W. Europe Standard Time";
    let series = fake
        .add_event(
            &ada.upn,
            json!({"subject": "Jour fixe", "showAs": "busy",
                   "start": {"dateTime": "2027-03-17T09:00:00", "timeZone": zone},
                   "end": {"dateTime": "2027-03-17T10:00:00", "timeZone": zone},
                   "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["wednesday"]},
                                  "range": {"type": "noEnd", "startDate": "2027-03-17", "recurrenceTimeZone": zone}}}),
        )
        .expect("the series is added");
    assert!(fake.set_occurrence_exception(
        &ada.upn,
        &series,
        "2027-03-31",
        Some(json!({"subject": "Jour fixe (moved)",
                    "start": {"dateTime": "2027-03-31T11:00:00", "timeZone": zone},
                    "end": {"dateTime": "2027-03-31T12:00:00", "timeZone": zone}})),
    ));

    let mut settings = BTreeMap::new();
    for (k, v) in [
        ("instance.name", "m365".to_string()),
        ("instance.domain", "example.com".into()),
        ("instance.password", instance_password.into()),
        ("pbx.master", "master".into()),
        (
            "graph.login-url",
            "https://login.microsoftonline.com".into(),
        ),
        ("graph.url", "https://graph.microsoft.com".into()),
        ("presence.tenant", fake.tenant_id().to_string()),
        ("presence.client-id", PRESENCE_APP.into()),
        (
            "presence.accounts",
            json!([{"name": "f1-1", "username": account, "password": "Acct-Passw0rd&+"}])
                .to_string(),
        ),
        (
            "presence.public-url",
            "https://connector.example.net/".into(),
        ),
        ("presence.notifications", "plain".into()),
        ("calendar.tenant", fake.tenant_id().to_string()),
        ("calendar.client-id", CALENDAR_APP.into()),
        ("calendar.client-secret", CALENDAR_SECRET.into()),
    ] {
        settings.insert(k.to_string(), v);
    }
    let world = FakesWorld::new(fake, pbx, matched, "/example.com/m365", 3, 0);
    let mut sim = Sim::start_with_clock(
        &guest(),
        world,
        SimConfig {
            seed: 3,
            start_ms: START_MS,
            settings,
            ..SimConfig::default()
        },
        clock,
    )
    .expect("the guest starts");

    // (when, expected activity, expected note), in time order. Winter: CET = UTC+1;
    // summer from 2027-03-28: CEST = UTC+2.
    let meeting = |n: &'static str| ("meeting", n);
    let none = ("", "");
    // After some samples the guest crashes (a fresh instance starts from KV, the old
    // instance's timers are not its own) or is hot-swapped, in the middle of a meeting.
    let (crash, swap) = (Some("crash"), Some("swap"));
    let samples = [
        (utc(2027, 3, 17, 7, 55), none, None),
        (utc(2027, 3, 17, 8, 1), meeting("Jour fixe"), None),
        (utc(2027, 3, 17, 8, 59), meeting("Jour fixe"), None),
        (utc(2027, 3, 17, 9, 1), none, None),
        (utc(2027, 3, 24, 8, 30), meeting("Jour fixe"), crash),
        (utc(2027, 3, 24, 8, 59), meeting("Jour fixe"), None),
        (utc(2027, 3, 24, 9, 1), none, None),
        // The moved occurrence: nothing at the series' summer time, then its own hour.
        (utc(2027, 3, 31, 7, 30), none, None),
        (utc(2027, 3, 31, 8, 30), none, None),
        (utc(2027, 3, 31, 9, 1), meeting("Jour fixe (moved)"), swap),
        (utc(2027, 3, 31, 9, 45), meeting("Jour fixe (moved)"), None),
        (utc(2027, 3, 31, 10, 1), none, None),
        // Back to the series, now at 07:00 UTC (09:00 CEST), no longer at 08:00 UTC.
        (utc(2027, 4, 7, 6, 55), none, None),
        (utc(2027, 4, 7, 7, 1), meeting("Jour fixe"), None),
        (utc(2027, 4, 7, 8, 1), none, None),
    ];
    for (at, (activity, note), then) in samples {
        sim.run_until(at, |_| Ok(())).expect("the run goes on");
        let got = calendar_item(&sim, &ada.pbx_guid);
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (activity, note),
            "calendar item at t+{} min",
            (at - START_MS) / MINUTE
        );
        match then {
            Some("crash") => sim.crash().expect("the guest restarts"),
            Some("swap") => {
                let same = sim.guest().clone();
                sim.swap(&same).expect("the guest is swapped")
            }
            _ => {}
        }
    }
    assert_eq!((sim.stats().restarts, sim.stats().swaps), (1, 1));
    assert!(sim.dead_letters().is_empty(), "{:?}", sim.dead_letters());
    // Nothing about the calendar secret reached the log.
    let logs = format!("{:?}", sim.durable().logs);
    assert!(!logs.contains(CALENDAR_SECRET));
}
