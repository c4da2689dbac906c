//! PBX -> Teams presence (F2) through the real host: PBX calls and presence changes in the fake
//! PBX reach the fake Microsoft 365 as the app's call session and preferred presence, long
//! calls are renewed, nothing echoes back in either direction, bursts are batched, and the
//! Do-Not-Disturb option works. Real processes on loopback; every wait has a generous deadline
//! and nothing asserts speed.

use std::time::Duration;

use anyhow::{Context, Result};
use e2e::people::{Person, one_account, people, synced_stack, with_app};
use e2e::stack::{ensure, settle};
use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const APP: &str = "e2e-presence-out-app";
const SECRET: &str = "out~Secret.+/=&%";

/// `persons` synced both ways: F1 with one Teams account, F2 with its app registration.
fn options(persons: &[Person], extra: &[(&str, &str)]) -> StackOptions {
    let mut o = synced_stack(persons, one_account());
    with_app(
        &mut o,
        "presence-out",
        APP,
        SECRET,
        &["Presence.ReadWrite.All"],
    );
    // Monitors follow F1's matches quickly.
    o.settings
        .push(("presence-out.scan-s".into(), "0.5".into()));
    for (k, v) in extra {
        o.settings.push((k.to_string(), v.to_string()));
    }
    o
}

/// Waits until F2 monitors `n` users.
fn wait_monitored(stack: &Stack, n: u64) -> Result<()> {
    let mut last = Value::Null;
    stack
        .wait_until(&format!("{n} users monitored for PBX -> Teams"), |s| {
            last = s.connector().status_json()?["presence_out"].clone();
            Ok((last["monitored"].as_u64() == Some(n) && last["auth"] == "ready").then_some(()))
        })
        .with_context(|| format!("presence_out status: {last}"))
}

/// Every person gets a signed-in Teams client (preferred presence needs a session, graph.md
/// 4.7), available.
fn teams_clients(stack: &Stack, persons: &[Person]) -> Result<()> {
    for p in persons {
        stack
            .m365()
            .set_teams_presence(&p.email, "Available", "Available")?;
    }
    Ok(())
}

/// Teams' aggregate `(availability, activity)` of `p` and the full detail.
fn teams(stack: &Stack, p: &Person) -> Result<(String, String, Value)> {
    let v = stack.m365().presence(&p.email)?;
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    Ok((s("availability"), s("activity"), v["detail"].clone()))
}

fn wait_teams(stack: &Stack, p: &Person, want: (&str, &str)) -> Result<Value> {
    let mut last = (String::new(), String::new());
    stack
        .wait_until(&format!("Teams shows {want:?} for {}", p.h323), |s| {
            let (a, b, detail) = teams(s, p)?;
            last = (a.clone(), b.clone());
            Ok((a == want.0 && b == want.1).then_some(detail))
        })
        .with_context(|| format!("Teams shows {last:?}"))
}

/// The user sets `activity` on the phone (the `tel:` item).
fn phone(stack: &Stack, p: &Person, activity: &str) -> Result<()> {
    stack
        .pbx()
        .call(
            "POST",
            &format!("/users/{}/presence", p.guid),
            Some(json!({"activity": activity, "note": ""})),
        )
        .map(drop)
}

fn call(stack: &Stack, p: &Person, what: &str) -> Result<()> {
    stack
        .pbx()
        .call("POST", &format!("/users/{}/call/{what}", p.guid), None)
        .map(drop)
}

/// Whether the app's call session exists in the fake for this user.
fn has_session(detail: &Value) -> bool {
    detail["sessions"]
        .as_object()
        .is_some_and(|s| s.keys().any(|k| k.eq_ignore_ascii_case(APP)))
}

/// Inner requests of every `$batch` the fake received so far: (batch index, url, body).
fn batch_writes(stack: &Stack) -> Result<Vec<(usize, String, Value)>> {
    let mut out = Vec::new();
    let batches = stack
        .m365()
        .requests()?
        .into_iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t.ends_with("/$batch")));
    for (i, b) in batches.enumerate() {
        let body: Value = serde_json::from_str(b["body"].as_str().unwrap_or("{}"))?;
        for r in body["requests"].as_array().cloned().unwrap_or_default() {
            out.push((
                i,
                r["url"].as_str().unwrap_or("").to_string(),
                r["body"].clone(),
            ));
        }
    }
    Ok(out)
}

/// Writes of one user's presence so far.
fn writes_of(stack: &Stack, id: &str) -> Result<Vec<String>> {
    Ok(batch_writes(stack)?
        .into_iter()
        .filter(|(_, url, _)| url.contains(&format!("/users/{id}/")))
        .map(|(_, url, _)| url.rsplit('/').next().unwrap_or("").to_string())
        .collect())
}

/// The fake tenant's user id of `p`.
fn entra_id(stack: &Stack, p: &Person) -> Result<String> {
    stack
        .m365()
        .users()?
        .into_iter()
        .find(|u| u["userPrincipalName"] == p.email.as_str())
        .and_then(|u| u["id"].as_str().map(str::to_string))
        .with_context(|| format!("no user {} in the fake tenant", p.email))
}

/// `(contact, activity)` of every stored PBX item of `p`.
fn pbx_items(stack: &Stack, p: &Person) -> Result<Vec<(String, String)>> {
    let v = stack.pbx().presence(&p.guid)?;
    Ok(v["stored"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["contact"].as_str().unwrap_or("").to_string(),
                i["activity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Teams notifications of the connector's own writes that F1 dropped (host metrics).
fn own_writes_dropped(stack: &Stack) -> Result<u64> {
    let metrics = e2e::http::request("GET", &format!("{}/metrics", stack.host_url()), None)?;
    Ok(metrics
        .body
        .lines()
        .filter(|l| l.starts_with("presence_updates_dropped_total") && l.contains("own-write"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Microsoft's clock (the fake's), ms since the epoch.
fn graph_now(stack: &Stack) -> Result<i64> {
    stack.m365().call("GET", "/tenant", None)?["now"]
        .as_i64()
        .context("the fake's tenant has no clock")
}

#[test]
fn calls_and_presences_reach_teams_and_are_cleared() -> Result<()> {
    let persons = people(2, 51);
    Stack::run(options(&persons, &[]), |stack| {
        wait_monitored(stack, 2)?;
        teams_clients(stack, &persons)?;
        let (caller, other) = (&persons[0], &persons[1]);
        wait_teams(stack, caller, ("Available", "Available"))?;

        call(stack, caller, "start")?;
        let detail = wait_teams(stack, caller, ("Busy", "InACall"))?;
        ensure(has_session(&detail), || format!("no app session: {detail}"))?;
        call(stack, caller, "end")?;
        let detail = wait_teams(stack, caller, ("Available", "Available"))?;
        ensure(!has_session(&detail), || {
            format!("session left behind: {detail}")
        })?;

        // A user of the slave PBX: the call shows on the slave's connection only.
        call(stack, other, "start")?;
        wait_teams(stack, other, ("Busy", "InACall"))?;
        call(stack, other, "end")?;
        wait_teams(stack, other, ("Available", "Available"))?;

        // Every PBX activity of the table, and back to available.
        let day = 86_400_000i64;
        for (activity, want, lifetime) in [
            ("away", ("Away", "Away"), 7 * day),
            ("dnd", ("DoNotDisturb", "DoNotDisturb"), day),
            ("busy", ("Busy", "Busy"), day),
            ("lunch", ("BeRightBack", "BeRightBack"), day),
            ("vacation", ("Away", "Away"), 7 * day),
        ] {
            phone(stack, other, activity)?;
            let detail = wait_teams(stack, other, want)?;
            let left = detail["preferred"]["expiresAt"].as_i64().unwrap_or(0) - graph_now(stack)?;
            ensure(left > lifetime - 600_000 && left <= lifetime, || {
                format!("{activity}: preferred presence lasts {left} ms, not {lifetime}")
            })?;
        }
        phone(stack, other, "")?;
        let detail = wait_teams(stack, other, ("Available", "Available"))?;
        ensure(detail["preferred"].is_null(), || {
            format!("preferred presence not cleared: {detail}")
        })?;
        Ok(())
    })
}

#[test]
fn a_long_call_stays_visible_through_renewals() -> Result<()> {
    let persons = people(1, 52);
    let fast = [("presence-out.call-renew-s", "1")];
    Stack::run(options(&persons, &fast), |stack| {
        wait_monitored(stack, 1)?;
        teams_clients(stack, &persons)?;
        let p = &persons[0];
        let id = entra_id(stack, p)?;
        call(stack, p, "start")?;
        wait_teams(stack, p, ("Busy", "InACall"))?;
        // 36 minutes of Microsoft's time: each step is longer than half the session's 10
        // minutes, so a session that was not renewed in between would end.
        for step in 0..6 {
            let before = writes_of(stack, &id)?.len();
            stack
                .m365()
                .call("POST", "/clock", Some(json!({"advanceMs": 6 * 60_000})))?;
            stack.wait_until(&format!("renewal {step}"), |s| {
                Ok((writes_of(s, &id)?.len() > before).then_some(()))
            })?;
            let (a, b, _) = teams(stack, p)?;
            ensure((a.as_str(), b.as_str()) == ("Busy", "InACall"), || {
                format!("after {} minutes Teams shows {a}/{b}", (step + 1) * 6)
            })?;
        }
        call(stack, p, "end")?;
        wait_teams(stack, p, ("Available", "Available"))?;
        Ok(())
    })
}

#[test]
fn a_restart_mid_call_renews_and_a_dropped_pbx_connection_clears() -> Result<()> {
    let persons = people(2, 53);
    let fast = [("presence-out.call-renew-s", "1")];
    Stack::run(options(&persons, &fast), |stack| {
        wait_monitored(stack, 2)?;
        teams_clients(stack, &persons)?;
        let p = &persons[0]; // on the master
        let id = entra_id(stack, p)?;
        call(stack, p, "start")?;
        wait_teams(stack, p, ("Busy", "InACall"))?;
        stack.restart_host()?;
        wait_monitored(stack, 2)?;
        // Still in the call after the restart: renewed, not cleared.
        let before = writes_of(stack, &id)?;
        stack
            .m365()
            .call("POST", "/clock", Some(json!({"advanceMs": 6 * 60_000})))?;
        stack.wait_until("a renewal after the restart", |s| {
            Ok((writes_of(s, &id)?.len() > before.len()).then_some(()))
        })?;
        stack
            .m365()
            .call("POST", "/clock", Some(json!({"advanceMs": 6 * 60_000})))?;
        settle(Duration::from_secs(2));
        let (a, b, _) = teams(stack, p)?;
        ensure((a.as_str(), b.as_str()) == ("Busy", "InACall"), || {
            format!("after the restart Teams shows {a}/{b}")
        })?;
        let after: Vec<String> = writes_of(stack, &id)?[before.len()..].to_vec();
        ensure(!after.iter().any(|w| w == "clearPresence"), || {
            format!("the call was cleared across the restart: {after:?}")
        })?;
        // The PBX connection drops: nobody can see the call any more, so it is cleared.
        stack.kill_pbx_connection("master")?;
        let detail = wait_teams(stack, p, ("Available", "Available"))?;
        ensure(!has_session(&detail), || format!("session left: {detail}"))?;
        stack.restore_pbx_connection("master")?;
        // Back again, the call still running: Teams shows it again.
        wait_teams(stack, p, ("Busy", "InACall"))?;
        call(stack, p, "end")?;
        wait_teams(stack, p, ("Available", "Available"))?;
        Ok(())
    })
}

#[test]
fn nothing_echoes_in_either_direction_even_when_flapping() -> Result<()> {
    let persons = people(2, 54);
    Stack::run(options(&persons, &[]), |stack| {
        wait_monitored(stack, 2)?;
        teams_clients(stack, &persons)?;
        let (p, q) = (&persons[0], &persons[1]);
        let (pid, qid) = (entra_id(stack, p)?, entra_id(stack, q)?);

        // PBX call -> Teams InACall -> notification -> PBX: the Teams item never shows it.
        call(stack, p, "start")?;
        wait_teams(stack, p, ("Busy", "InACall"))?;
        for _ in 0..10 {
            let items = pbx_items(stack, p)?;
            ensure(
                !items.iter().any(|(c, a)| c == "teams:" && !a.is_empty()),
                || format!("our own call came back into the PBX: {items:?}"),
            )?;
            settle(Duration::from_millis(300));
        }
        // The echo did arrive (Graph notified the connector of its own InACall) and was dropped.
        stack.wait_until("F1 to drop the notification of our own call", |s| {
            Ok((own_writes_dropped(s)? >= 1).then_some(()))
        })?;
        call(stack, p, "end")?;
        wait_teams(stack, p, ("Available", "Available"))?;

        // Teams -> PBX -> Teams: the user's own Teams DND reaches the PBX (F1) and nothing
        // is written back to Teams.
        let before = writes_of(stack, &qid)?;
        stack
            .m365()
            .set_teams_presence(&q.email, "DoNotDisturb", "DoNotDisturb")?;
        stack.wait_until("F1 writes Teams DND into the PBX", |s| {
            let items = pbx_items(s, q)?;
            Ok(items
                .iter()
                .any(|(c, a)| c == "teams:" && a == "dnd")
                .then_some(()))
        })?;
        settle(Duration::from_secs(3));
        ensure(writes_of(stack, &qid)? == before, || {
            format!(
                "Teams' own DND travelled back: {:?}",
                writes_of(stack, &qid)
            )
        })?;
        let (a, _, detail) = teams(stack, q)?;
        ensure(a == "DoNotDisturb" && detail["preferred"].is_null(), || {
            format!("Teams changed: {a} {detail}")
        })?;
        stack
            .m365()
            .set_teams_presence(&q.email, "Available", "Available")?;

        // Rapid flapping in Teams (the user's own client): F1 follows it in the PBX, and none
        // of it comes back to Teams.
        for (a, b) in [
            ("DoNotDisturb", "DoNotDisturb"),
            ("Busy", "InACall"),
            ("Away", "Away"),
            ("Busy", "Busy"),
        ]
        .iter()
        .cycle()
        .take(12)
        {
            stack.m365().set_teams_presence(&q.email, a, b)?;
            settle(Duration::from_millis(100));
        }
        stack
            .m365()
            .set_teams_presence(&q.email, "Available", "Available")?;
        stack.wait_until("F1 to settle on available", |s| {
            let items = pbx_items(s, q)?;
            Ok((!items.iter().any(|(c, a)| c == "teams:" && !a.is_empty())).then_some(()))
        })?;
        settle(Duration::from_secs(2));
        ensure(writes_of(stack, &qid)? == before, || {
            format!(
                "Teams flapping travelled back: {:?}",
                writes_of(stack, &qid)
            )
        })?;

        // Rapid flapping of a PBX call: Teams ends cleared, the PBX without our item, and the
        // traffic stops (no loop).
        for _ in 0..8 {
            call(stack, p, "start")?;
            settle(Duration::from_millis(150));
            call(stack, p, "end")?;
            settle(Duration::from_millis(150));
        }
        let detail = wait_teams(stack, p, ("Available", "Available"))?;
        ensure(!has_session(&detail), || format!("session left: {detail}"))?;
        settle(Duration::from_secs(3));
        let quiet = writes_of(stack, &pid)?.len();
        ensure(quiet <= 2 + 16, || format!("{quiet} writes for 8 calls"))?;
        settle(Duration::from_secs(3));
        ensure(writes_of(stack, &pid)?.len() == quiet, || {
            "writes keep coming: a loop".into()
        })?;
        let items = pbx_items(stack, p)?;
        ensure(
            !items.iter().any(|(c, a)| c == "teams:" && !a.is_empty()),
            || format!("the PBX kept an echo: {items:?}"),
        )?;
        Ok(())
    })
}

#[test]
fn a_burst_of_changes_arrives_as_final_states_twenty_per_batch() -> Result<()> {
    let persons = people(500, 55);
    // Bursts are collected for a moment before they leave.
    let slow = [("presence-out.batch-delay-s", "1")];
    Stack::run(options(&persons, &slow), |stack| {
        wait_monitored(stack, 500)?;
        let first = batch_writes(stack)?.len();
        ensure(first == 0, || format!("{first} writes before the burst"))?;
        // 1,000 changes in one go, like a PBX restart: several per user, random activities.
        stack
            .pbx()
            .call("POST", "/storm", Some(json!({"changes": 1000})))?;
        // The final state of every user, as the PBX has it.
        let table = |a: &str| match a {
            "away" | "vacation" => Some(("Away", "Away")),
            "busy" => Some(("Busy", "Busy")),
            "dnd" => Some(("DoNotDisturb", "DoNotDisturb")),
            "lunch" => Some(("BeRightBack", "BeRightBack")),
            _ => None,
        };
        let mut want = Vec::new();
        for p in &persons {
            let items = pbx_items(stack, p)?;
            let tel = items
                .iter()
                .find(|(c, _)| c == "tel:")
                .map(|(_, a)| a.clone());
            if let Some(pair) = tel.as_deref().and_then(table) {
                want.push((p, pair));
            }
        }
        ensure(want.len() > 300, || {
            format!("only {} users changed", want.len())
        })?;
        let mut missing = 0;
        stack
            .wait_until("every final state in Teams", |s| {
                missing = 0;
                for (p, pair) in &want {
                    let v = s.m365().presence(&p.email)?;
                    let pref = &v["detail"]["preferred"];
                    if pref["availability"] != pair.0 || pref["activity"] != pair.1 {
                        missing += 1;
                    }
                }
                Ok((missing == 0).then_some(()))
            })
            .with_context(|| format!("{missing} users without their final state"))?;
        settle(Duration::from_secs(2));
        let writes = batch_writes(stack)?;
        ensure(writes.len() == want.len(), || {
            format!("{} writes for {} final states", writes.len(), want.len())
        })?;
        let mut per_batch = std::collections::BTreeMap::<usize, usize>::new();
        for (b, _, _) in &writes {
            *per_batch.entry(*b).or_default() += 1;
        }
        ensure(per_batch.values().all(|n| *n <= 20), || {
            format!("{per_batch:?}")
        })?;
        ensure(per_batch.len() == want.len().div_ceil(20), || {
            format!(
                "{} batches for {} writes: {per_batch:?}",
                per_batch.len(),
                want.len()
            )
        })?;
        let status = stack.connector().status_json()?;
        ensure(status["presence_out"]["throttled"] == 0, || {
            format!("throttled: {}", status["presence_out"])
        })?;
        let throttled_outer = stack
            .m365()
            .requests()?
            .iter()
            .filter(|r| r["status"] == 429)
            .count();
        ensure(throttled_outer == 0, || {
            format!("{throttled_outer} requests got 429")
        })?;

        // The master PBX reconnects: every monitor reports again, and as nothing changed,
        // nothing is written.
        stack.kill_pbx_connection("master")?;
        settle(Duration::from_secs(1));
        stack.restore_pbx_connection("master")?;
        wait_monitored(stack, 500)?;
        settle(Duration::from_secs(3));
        let again = batch_writes(stack)?.len();
        ensure(again == writes.len(), || {
            format!("{} writes after the PBX reconnected", again - writes.len())
        })?;
        Ok(())
    })
}

#[test]
fn dnd_during_calls_option_stops_teams_ringing() -> Result<()> {
    let persons = people(1, 56);
    let dnd = [("presence-out.dnd-during-calls", "true")];
    Stack::run(options(&persons, &dnd), |stack| {
        wait_monitored(stack, 1)?;
        teams_clients(stack, &persons)?;
        let p = &persons[0];
        phone(stack, p, "away")?;
        wait_teams(stack, p, ("Away", "Away"))?;
        call(stack, p, "start")?;
        let detail = wait_teams(stack, p, ("DoNotDisturb", "DoNotDisturb"))?;
        ensure(has_session(&detail), || {
            format!("no call session: {detail}")
        })?;
        call(stack, p, "end")?;
        // The call is over: the user's PBX state (away) is back in Teams.
        let detail = wait_teams(stack, p, ("Away", "Away"))?;
        ensure(!has_session(&detail), || format!("session left: {detail}"))?;
        Ok(())
    })
}

#[test]
fn alien_call_option_makes_a_teams_caller_busy_in_the_pbx() -> Result<()> {
    let persons = people(2, 57);
    let alien = [("presence-out.alien-calls", "true")];
    Stack::run(options(&persons, &alien), |stack| {
        wait_monitored(stack, 2)?;
        teams_clients(stack, &persons)?;
        for p in &persons {
            let id = entra_id(stack, p)?;
            // A real Teams call (the Teams client, not the connector).
            stack
                .m365()
                .set_teams_presence(&p.email, "Busy", "InACall")?;
            let calls = stack.wait_until(&format!("an alien call for {}", p.h323), |s| {
                let calls = s.pbx().call("GET", "/alien-calls", None)?;
                let mine: Vec<Value> = calls
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c["user"] == p.guid.as_str())
                    .collect();
                Ok((!mine.is_empty()).then_some(mine))
            })?;
            ensure(calls.len() == 1, || format!("{calls:?}"))?;
            // The PBX shows the user on the phone, and that is not written back to Teams.
            settle(Duration::from_secs(2));
            let view = stack.pbx().presence(&p.guid)?;
            ensure(view.to_string().contains("on-the-phone"), || {
                format!("{view}")
            })?;
            ensure(writes_of(stack, &id)?.is_empty(), || {
                format!(
                    "the alien call echoed to Teams: {:?}",
                    writes_of(stack, &id)
                )
            })?;
            // The Teams call ends: the alien call goes.
            stack
                .m365()
                .set_teams_presence(&p.email, "Available", "Available")?;
            stack.wait_until(&format!("no alien call for {}", p.h323), |s| {
                let calls = s.pbx().call("GET", "/alien-calls", None)?;
                Ok((!calls.to_string().contains(p.guid.as_str())).then_some(()))
            })?;
            settle(Duration::from_secs(1));
            ensure(writes_of(stack, &id)?.is_empty(), || {
                format!("writes to Teams: {:?}", writes_of(stack, &id))
            })?;
        }
        Ok(())
    })
}

#[test]
fn users_the_app_object_cannot_see_are_reported() -> Result<()> {
    let persons = people(2, 58);
    Stack::run(options(&persons, &[]), |stack| {
        wait_monitored(stack, 2)?;
        let hidden = &persons[1];
        stack.pbx().call(
            "PUT",
            &format!("/users/{}/visibility", hidden.guid),
            Some(json!({"presence": false, "otf": false, "note": false})),
        )?;
        let listed = stack.wait_until("the hidden user in presence_out.not_visible", |s| {
            let st = s.connector().status_json()?;
            let list = st["presence_out"]["not_visible"].clone();
            Ok((list.as_array().is_some_and(|a| a.len() == 1)).then(|| list[0].clone()))
        })?;
        ensure(listed["guid"] == hidden.guid.as_str(), || {
            format!("{listed}")
        })?;
        Ok(())
    })
}

#[test]
fn a_hot_swap_mid_call_keeps_the_monitors_and_the_call() -> Result<()> {
    let persons = people(2, 59);
    let fast = [("presence-out.call-renew-s", "1")];
    Stack::run(options(&persons, &fast), |stack| {
        wait_monitored(stack, 2)?;
        teams_clients(stack, &persons)?;
        let (p, q) = (&persons[0], &persons[1]);
        let id = entra_id(stack, p)?;
        call(stack, p, "start")?;
        wait_teams(stack, p, ("Busy", "InACall"))?;
        let variant = stack.guest_variant("f2-swap")?;
        stack.swap_guest(&variant)?;
        // The PBX connections stayed up: the monitors carry on without a second subscription.
        let before = writes_of(stack, &id)?.len();
        stack
            .m365()
            .call("POST", "/clock", Some(json!({"advanceMs": 6 * 60_000})))?;
        stack.wait_until("a renewal after the swap", |s| {
            Ok((writes_of(s, &id)?.len() > before).then_some(()))
        })?;
        phone(stack, q, "away")?;
        wait_teams(stack, q, ("Away", "Away"))?;
        call(stack, p, "end")?;
        wait_teams(stack, p, ("Available", "Available"))?;
        let violations = stack.pbx().violations()?;
        ensure(violations.is_empty(), || {
            format!("PBX violations: {violations:?}")
        })?;
        Ok(())
    })
}

#[test]
fn a_call_that_ended_while_the_host_was_down_is_cleared_after_the_start() -> Result<()> {
    let persons = people(1, 60);
    Stack::run(options(&persons, &[]), |stack| {
        wait_monitored(stack, 1)?;
        teams_clients(stack, &persons)?;
        let p = &persons[0];
        call(stack, p, "start")?;
        wait_teams(stack, p, ("Busy", "InACall"))?;
        stack.stop_host();
        call(stack, p, "end")?;
        stack.start_host_again()?;
        let detail = wait_teams(stack, p, ("Available", "Available"))?;
        ensure(!has_session(&detail), || format!("session left: {detail}"))?;
        Ok(())
    })
}
