//! PBX -> Teams (issue 10, item 3): presence changes per second from the PBX to Graph, with
//! `$batch` and coalescing, and Graph requests per 1,000 changes.
//!
//! The real host runs the connector against both fakes (e2e `Stack`, release binaries): N
//! people synced both ways, F2 monitoring every one of them. Then the fake PBX makes a burst of
//! `tel:` presence changes of random users at once (`POST /storm`, as after a PBX restart). The
//! figure is the burst's changes divided by the time from the burst to the last `$batch` Graph
//! received, both read on the fake's clock. Every user's final PBX state must then be the
//! preferred presence in Teams, or the row fails: a fast but wrong run is no figure.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::people::{Person, one_account, people, synced_stack, with_app};
use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

use crate::table::{Row, thousands};

const APP: &str = "bench-presence-out-app";
const SECRET: &str = "bench~Secret.+/=";

/// Both directions synced for `persons`: F1 with one Teams account, F2 with its app.
fn options(persons: &[Person]) -> StackOptions {
    let mut o = synced_stack(persons, one_account());
    with_app(
        &mut o,
        "presence-out",
        APP,
        SECRET,
        &["Presence.ReadWrite.All"],
    );
    // Monitors follow F1's matches quickly; the write path keeps its defaults.
    o.settings
        .push(("presence-out.scan-s".into(), "0.5".into()));
    o.log_filter = "warn".into();
    o
}

/// Teams' preferred presence for a PBX `tel:` activity (the connector's mapping; `None`: no
/// preferred presence, i.e. cleared).
fn teams_for(activity: &str) -> Option<(&'static str, &'static str)> {
    match activity {
        "away" | "vacation" => Some(("Away", "Away")),
        "busy" => Some(("Busy", "Busy")),
        "dnd" => Some(("DoNotDisturb", "DoNotDisturb")),
        "lunch" => Some(("BeRightBack", "BeRightBack")),
        _ => None,
    }
}

/// Microsoft's clock (the fake's), ms since the epoch.
fn graph_now(stack: &Stack) -> Result<i64> {
    stack.m365().call("GET", "/tenant", None)?["now"]
        .as_i64()
        .context("the fake's tenant has no clock")
}

/// `$batch` requests Graph received at or after `since` (fake clock): (at_ms, inner requests).
fn batches_since(stack: &Stack, since: i64) -> Result<Vec<(i64, usize)>> {
    let mut out = Vec::new();
    for r in stack.m365().requests()? {
        let at = r["at_ms"].as_i64().unwrap_or(0);
        let is_batch = r["target"].as_str().is_some_and(|t| t.ends_with("/$batch"));
        if is_batch && at >= since {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or("{}"))?;
            out.push((at, body["requests"].as_array().map_or(0, Vec::len)));
        }
    }
    Ok(out)
}

/// Every Graph request (any path) received at or after `since`.
fn graph_requests_since(stack: &Stack, since: i64) -> Result<usize> {
    Ok(stack
        .m365()
        .requests()?
        .iter()
        .filter(|r| r["at_ms"].as_i64().unwrap_or(0) >= since)
        .count())
}

/// The rows for `users` people and a burst of `changes`.
pub fn measure((users, changes): (usize, usize)) -> Result<Vec<Row>> {
    let persons = people(users, 77);
    let stack = Stack::start(options(&persons))?;
    let result = burst(&stack, &persons, changes);
    stack.note(result)
}

fn burst(stack: &Stack, persons: &[Person], changes: usize) -> Result<Vec<Row>> {
    let n = persons.len() as u64;
    stack.wait_until(&format!("{n} users monitored for PBX -> Teams"), |s| {
        let st = s.connector().status_json()?["presence_out"].clone();
        Ok((st["monitored"].as_u64() == Some(n) && st["auth"] == "ready").then_some(()))
    })?;
    let writes_before = stack.connector().status_json()?["presence_out"]["writes"]
        .as_u64()
        .unwrap_or(0);
    let start = graph_now(stack)?;
    let wall = Instant::now();
    stack
        .pbx()
        .call("POST", "/storm", Some(json!({"changes": changes})))?;
    // Done when the connector has nothing left to write and its write count has stopped
    // moving for a while (a burst still arriving would move it again).
    let mut last = (u64::MAX, Instant::now());
    stack.wait_until("the burst written to Teams", |s| {
        let st = s.connector().status_json()?["presence_out"].clone();
        let writes = st["writes"].as_u64().unwrap_or(0);
        let idle = st["backlog"] == 0 && st["in_flight"] == 0 && writes > writes_before;
        if writes != last.0 || !idle {
            last = (writes, Instant::now());
            return Ok(None);
        }
        Ok((last.1.elapsed() > Duration::from_secs(2)).then_some(()))
    })?;
    let batches = batches_since(stack, start)?;
    let Some(&(last_at, _)) = batches.iter().max_by_key(|(at, _)| *at) else {
        bail!("no $batch reached Graph after the burst");
    };
    let inner: usize = batches.iter().map(|(_, k)| k).sum();
    let graph_requests = graph_requests_since(stack, start)?;
    let seconds = ((last_at - start).max(1) as f64) / 1000.0;

    // The final state of every user, as the PBX has it, must be Teams' preferred presence.
    let mut wrong = Vec::new();
    for p in persons {
        let stored = stack.pbx().presence(&p.guid)?;
        let tel = stored["stored"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["contact"] == "tel:"))
            .and_then(|i| i["activity"].as_str())
            .unwrap_or("")
            .to_string();
        let pref = stack.m365().presence(&p.email)?["detail"]["preferred"].clone();
        let ok = match teams_for(&tel) {
            Some((availability, activity)) => {
                pref["availability"] == availability && pref["activity"] == activity
            }
            None => pref.is_null() || pref["availability"].as_str().is_none_or(str::is_empty),
        };
        if !ok {
            wrong.push(format!("{} pbx={tel:?} teams={pref}", p.h323));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{} of {} users without their final state in Teams, e.g. {}",
            wrong.len(),
            persons.len(),
            wrong[..wrong.len().min(3)].join("; ")
        );
    }
    let rate = changes as f64 / seconds;
    let per_thousand = graph_requests as f64 * 1000.0 / changes as f64;
    Ok(vec![Row::info(
        "PBX -> Teams: presence changes/s; Graph requests per 1,000 changes",
        format!(
            "{} /s; {:.1} requests per 1,000 ({} $batch, {} writes)",
            thousands(rate),
            per_thousand,
            batches.len(),
            inner
        ),
        "— ($batch + coalescing)",
        &format!(
            "burst of {} `tel:` changes over {} users from the fake PBX at once; burst -> last $batch at Graph {:.2} s (fake's clock; {:.1} s wall until idle); every final state checked in Teams; {} Graph requests of any kind; default batch delay 0.2 s and budget 1,500 writes/30 s",
            thousands(changes as f64),
            thousands(persons.len() as f64),
            seconds,
            wall.elapsed().as_secs_f64(),
            graph_requests
        ),
    )])
}
