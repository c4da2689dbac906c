//! Calendar presence (F3) through the real host: Outlook events in the fake Microsoft 365 become
//! the PBX presence of the calendar item (`calendar:`), next to the Teams item, when events
//! start and end, are cancelled, moved, and across a host restart and a hot swap.
//! Real processes on loopback; every wait has a generous deadline and nothing asserts speed.

use std::time::Duration;

use anyhow::{Context, Result};
use e2e::http::request_raw;
use e2e::people::{Person, one_account, people, synced_stack, with_app};
use e2e::stack::{ensure, settle};
use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const CALENDAR_APP: &str = "e2e-calendar-app";
const CALENDAR_SECRET: &str = "cal~Secret.+/=&%";

/// `persons` synced (F1) with one Teams account, plus the calendar app registration (F3).
fn options(persons: &[Person]) -> StackOptions {
    let mut o = synced_stack(persons, one_account());
    let roles = ["Calendars.Read", "User.Read.All"];
    with_app(&mut o, "calendar", CALENDAR_APP, CALENDAR_SECRET, &roles);
    o
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of ms since the epoch.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, t) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Microsoft's clock (the fake's), ms since the epoch.
fn graph_now(stack: &Stack) -> Result<i64> {
    stack.m365().call("GET", "/tenant", None)?["now"]
        .as_i64()
        .context("the fake's tenant has no clock")
}

/// An event from `start_ms` to `end_ms` (UTC).
fn event(subject: &str, show_as: &str, start_ms: i64, end_ms: i64) -> Value {
    json!({"subject": subject, "showAs": show_as,
           "start": {"dateTime": utc(start_ms), "timeZone": "UTC"},
           "end": {"dateTime": utc(end_ms), "timeZone": "UTC"}})
}

/// Adds an event to `p`'s calendar as its organiser; returns the event id.
fn add_event(stack: &Stack, p: &Person, event: Value) -> Result<String> {
    let v = stack.m365().call(
        "POST",
        "/events",
        Some(json!({"user": p.email, "event": event})),
    )?;
    Ok(v["id"].as_str().context("event without id")?.to_string())
}

/// `(activity, note)` of the PBX item with `contact` for a user; empty when there is none.
fn item(stack: &Stack, guid: &str, contact: &str) -> Result<(String, String)> {
    let p = stack.pbx().presence(guid)?;
    let found = p["stored"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["contact"] == contact));
    let text = |k: &str| found.and_then(|i| i[k].as_str()).unwrap_or("").to_string();
    Ok((text("activity"), text("note")))
}

fn calendar(stack: &Stack, p: &Person) -> Result<(String, String)> {
    item(stack, &p.guid, "calendar:")
}

/// Waits until the calendar item of `p` shows `activity` (and `note`, if given).
fn wait_calendar(stack: &Stack, p: &Person, activity: &str, note: Option<&str>) -> Result<()> {
    let mut last = (String::new(), String::new());
    stack
        .wait_until(
            &format!("calendar item of {} = {activity:?}", p.h323),
            |s| {
                last = calendar(s, p)?;
                Ok((last.0 == activity && note.is_none_or(|n| last.1 == n)).then_some(()))
            },
        )
        .with_context(|| format!("the PBX shows {last:?}"))
}

/// The fake's event subscriptions, as (user id, subscription id).
fn event_subscriptions(stack: &Stack) -> Result<Vec<(String, String)>> {
    let all = stack.m365().call("GET", "/subscriptions", None)?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let r = s["resource"].as_str()?.trim_matches('/');
            let user = r.strip_prefix("users/")?.strip_suffix("/events")?;
            Some((user.to_string(), s["id"].as_str()?.to_string()))
        })
        .collect())
}

/// Waits until every person has exactly one event subscription (so every one is matched,
/// subscribed and read); returns them.
fn wait_subscribed(stack: &Stack, persons: &[Person]) -> Result<Vec<(String, String)>> {
    let mut last = Vec::new();
    stack
        .wait_until("one event subscription per matched user", |s| {
            last = event_subscriptions(s)?;
            let mut users: Vec<&String> = last.iter().map(|(u, _)| u).collect();
            users.sort();
            users.dedup();
            Ok((last.len() == persons.len() && users.len() == persons.len()).then(|| last.clone()))
        })
        .with_context(|| format!("event subscriptions: {last:?}"))
}

/// Requests the fake Graph answered 409.
fn conflicts(stack: &Stack) -> Result<Vec<String>> {
    Ok(stack
        .m365()
        .requests()?
        .iter()
        .filter(|r| r["status"] == 409)
        .map(|r| format!("{} {}", r["method"], r["target"]))
        .collect())
}

/// A meeting starts -> the calendar item shows it with its subject, while the Teams item keeps
/// the user's own Teams status; it ends -> cleared. A private event shows no subject; an
/// out-of-office event is `away`. Forged notifications change nothing.
#[test]
fn meeting_start_and_end_reach_the_pbx_calendar_item() -> Result<()> {
    let persons = people(4, 31);
    Stack::run(options(&persons), |stack| {
        stack.wait_for_pbx_logins()?;
        let subs = wait_subscribed(stack, &persons)?;
        let (ada, bo, cy) = (&persons[0], &persons[1], &persons[2]);
        // Ada is on do-not-disturb in Teams: the calendar must not overwrite that item.
        stack
            .m365()
            .set_teams_presence(&ada.email, "DoNotDisturb", "DoNotDisturb")?;
        stack.wait_until("Teams dnd in the PBX", |s| {
            Ok((item(s, &ada.guid, "teams:")?.0 == "dnd").then_some(()))
        })?;

        let now = graph_now(stack)?;
        let (start, end) = (now + 6_000, now + 26_000);
        add_event(stack, ada, event("Budget review", "busy", start, end))?;
        let mut private = event("Doctor", "busy", now - 60_000, now + 600_000);
        private["sensitivity"] = json!("private");
        add_event(stack, bo, private)?;
        add_event(
            stack,
            cy,
            event("Vacation", "oof", now - 60_000, now + 600_000),
        )?;

        wait_calendar(stack, bo, "meeting", Some("Private appointment"))?;
        wait_calendar(stack, cy, "away", Some("Vacation"))?;
        // The status page counts them (the admin page's calendar light).
        let st = stack.connector().status_json()?;
        ensure(
            st["calendar"]["subscriptions"] == persons.len()
                && st["calendar"]["in_event"].as_u64() >= Some(2),
            || format!("calendar status: {}", st["calendar"]),
        )?;
        // Read and scheduled, but not started yet.
        if graph_now(stack)? < start - 1_000 {
            ensure(calendar(stack, ada)?.0.is_empty(), || {
                "the meeting showed before it started".into()
            })?;
        }
        wait_calendar(stack, ada, "meeting", Some("Budget review"))?;
        ensure(item(stack, &ada.guid, "teams:")?.0 == "dnd", || {
            "the calendar overwrote the Teams item".into()
        })?;

        // Forged: a real subscription id with a wrong clientState, and garbage. 202, no change.
        let url = format!("{}/calendar/notifications", stack.connector().url);
        let forged = json!({"value": [{"subscriptionId": subs[0].1, "clientState": "guess",
            "changeType": "updated", "resource": format!("Users/{}/Events/x", subs[0].0)}]});
        for body in [forged.to_string(), "not json".to_string()] {
            let r = request_raw("POST", &url, Some(&body), "application/json")?;
            ensure(r.status == 202, || {
                format!("forged POST answered {}", r.status)
            })?;
        }
        let r = request_raw("GET", &url, None, "")?;
        ensure(r.status == 404, || format!("GET answered {}", r.status))?;

        wait_calendar(stack, ada, "", None)?;
        ensure(graph_now(stack)? >= end - 1_000, || {
            "the meeting was cleared before its end".into()
        })?;
        ensure(calendar(stack, bo)?.0 == "meeting", || {
            "the private meeting ended early".into()
        })?;
        let log = stack.host_log();
        ensure(!log.contains("Doctor"), || {
            "a private subject reached the log".into()
        })?;
        ensure(!log.contains(CALENDAR_SECRET), || {
            "the client secret was logged".into()
        })?;
        let c = conflicts(stack)?;
        ensure(c.is_empty(), || format!("Graph answered 409: {c:?}"))?;
        Ok(())
    })
}

/// The UTC date (`YYYY-MM-DD`) of ms since the epoch.
fn date(ms: i64) -> String {
    utc(ms)[..10].to_string()
}

/// A recurring series (Graph expands it): the occurrence running now shows; cancelling just that
/// occurrence clears the PBX at once, long before its end. A weekly series whose occurrence of
/// today was moved (an exception) shows the exception's own subject and time.
#[test]
fn recurring_series_with_a_cancelled_occurrence_and_an_exception() -> Result<()> {
    let persons = people(3, 32);
    Stack::run(options(&persons), |stack| {
        stack.wait_for_pbx_logins()?;
        wait_subscribed(stack, &persons)?;
        let (ada, bo) = (&persons[0], &persons[1]);
        let now = graph_now(stack)?;
        // Started yesterday, every day, ten minutes; today's occurrence is running.
        let first = now - 86_400_000 - 60_000;
        let mut daily = event("Daily stand-up", "busy", first, first + 600_000);
        daily["recurrence"] = json!({"pattern": {"type": "daily", "interval": 1},
            "range": {"type": "noEnd", "startDate": date(first), "recurrenceTimeZone": "UTC"}});
        let series = add_event(stack, ada, daily)?;
        wait_calendar(stack, ada, "meeting", Some("Daily stand-up"))?;

        let today = date(now - 60_000);
        stack.m365().call(
            "POST",
            "/events/exception",
            Some(json!({"user": ada.email, "eventId": series, "date": today, "cancel": true})),
        )?;
        wait_calendar(stack, ada, "", None)?;
        ensure(graph_now(stack)? < now + 540_000, || {
            "cleared only at the cancelled occurrence's end".into()
        })?;

        // Weekly on today's weekday, started a week ago at a time that is not now; today's
        // occurrence moved to now and renamed.
        let week_ago = now - 7 * 86_400_000 + 3 * 3_600_000;
        let weekday = [
            "thursday",
            "friday",
            "saturday",
            "sunday",
            "monday",
            "tuesday",
            "wednesday",
        ][(week_ago.div_euclid(86_400_000)).rem_euclid(7) as usize];
        let mut weekly = event("Retro", "tentative", week_ago, week_ago + 1_800_000);
        weekly["recurrence"] = json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday]},
            "range": {"type": "noEnd", "startDate": date(week_ago), "recurrenceTimeZone": "UTC"}});
        let reads = calendar_reads(stack, bo)?;
        let retro = add_event(stack, bo, weekly)?;
        stack.wait_until("the new series read", |s| {
            Ok((calendar_reads(s, bo)? > reads).then_some(()))
        })?;
        ensure(calendar(stack, bo)?.0.is_empty(), || {
            "the weekly series showed outside its occurrence".into()
        })?;
        stack.m365().call(
            "POST",
            "/events/exception",
            Some(
                json!({"user": bo.email, "eventId": retro, "date": date(week_ago + 7 * 86_400_000),
                        "patch": {"subject": "Retro (moved)",
                                  "start": {"dateTime": utc(now - 30_000), "timeZone": "UTC"},
                                  "end": {"dateTime": utc(now + 600_000), "timeZone": "UTC"}}}),
            ),
        )?;
        wait_calendar(stack, bo, "meeting", Some("Retro (moved)"))?;
        Ok(())
    })
}

/// How many calendarView reads of `p`'s calendar the fake has answered.
fn calendar_reads(stack: &Stack, p: &Person) -> Result<usize> {
    let id = entra_id(stack, p)?;
    let path = format!("/users/{id}/calendarView");
    Ok(stack
        .m365()
        .requests()?
        .iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t.contains(&path)))
        .count())
}

/// The fake tenant's user id of `p`.
fn entra_id(stack: &Stack, p: &Person) -> Result<String> {
    stack
        .m365()
        .users()?
        .into_iter()
        .find(|u| u["userPrincipalName"] == p.email.as_str())
        .and_then(|u| u["id"].as_str().map(str::to_string))
        .with_context(|| format!("{} in the fake tenant", p.email))
}

/// Graph removes a user's subscription (lifecycle `subscriptionRemoved`): a new one replaces
/// it. Then an event moved while it runs: moved later -> cleared at once; moved back to now ->
/// shown again, and cleared at its new end (the changes arrive through the new subscription).
#[test]
fn event_moved_while_in_progress() -> Result<()> {
    let persons = people(2, 33);
    Stack::run(options(&persons), |stack| {
        stack.wait_for_pbx_logins()?;
        let subs = wait_subscribed(stack, &persons)?;
        let ada = &persons[0];
        let ada_id = entra_id(stack, ada)?;
        let old = subs
            .iter()
            .find(|(u, _)| *u == ada_id)
            .map(|(_, id)| id.clone())
            .context("ada's subscription")?;
        stack.m365().call(
            "POST",
            &format!("/subscriptions/{old}/lifecycle"),
            Some(json!({"event": "subscriptionRemoved"})),
        )?;
        let subs = wait_subscribed(stack, &persons)?;
        ensure(!subs.iter().any(|(_, id)| *id == old), || {
            format!("the removed subscription is still listed: {subs:?}")
        })?;
        let now = graph_now(stack)?;
        let id = add_event(
            stack,
            ada,
            event("Design review", "busy", now - 60_000, now + 600_000),
        )?;
        wait_calendar(stack, ada, "meeting", Some("Design review"))?;
        let move_to = |start: i64, end: i64| {
            stack.m365().call(
                "PATCH",
                &format!("/events/{id}"),
                Some(json!({"user": ada.email, "patch": {
                    "start": {"dateTime": utc(start), "timeZone": "UTC"},
                    "end": {"dateTime": utc(end), "timeZone": "UTC"}}})),
            )
        };
        move_to(now + 3_600_000, now + 7_200_000)?;
        wait_calendar(stack, ada, "", None)?;
        let now = graph_now(stack)?;
        let end = now + 15_000;
        move_to(now - 10_000, end)?;
        wait_calendar(stack, ada, "meeting", Some("Design review"))?;
        wait_calendar(stack, ada, "", None)?;
        ensure(graph_now(stack)? >= end - 1_000, || {
            "cleared before the moved end".into()
        })?;
        Ok(())
    })
}

/// The host restarts and the guest is hot-swapped between a meeting's start and end: the PBX
/// still shows the meeting afterwards and it is cleared at its end; no 409, one subscription.
#[test]
fn restart_and_hot_swap_between_start_and_end() -> Result<()> {
    let persons = people(2, 34);
    Stack::run(options(&persons), |stack| {
        stack.wait_for_pbx_logins()?;
        let before = wait_subscribed(stack, &persons)?;
        let ada = &persons[0];
        let now = graph_now(stack)?;
        let end = now + 90_000;
        add_event(stack, ada, event("Board meeting", "busy", now + 5_000, end))?;
        wait_calendar(stack, ada, "meeting", Some("Board meeting"))?;

        stack.restart_host()?;
        stack.wait_for_pbx_logins()?;
        wait_calendar(stack, ada, "meeting", Some("Board meeting"))?;
        let variant = stack.guest_variant("calendar")?;
        stack.swap_guest(&variant)?;
        wait_calendar(stack, ada, "meeting", Some("Board meeting"))?;

        // The end may be further away than one wait's deadline: let the clock get near it.
        while graph_now(stack)? < end - 20_000 {
            stack.check_running()?;
            settle(Duration::from_millis(500));
        }
        wait_calendar(stack, ada, "", None)?;
        ensure(graph_now(stack)? >= end - 1_000, || {
            "the meeting was cleared before its end".into()
        })?;
        let after = wait_subscribed(stack, &persons)?;
        let mut b: Vec<_> = before.iter().map(|x| &x.1).collect();
        let mut a: Vec<_> = after.iter().map(|x| &x.1).collect();
        b.sort();
        a.sort();
        ensure(a == b, || {
            format!("subscriptions not reused: {b:?} -> {a:?}")
        })?;
        let c = conflicts(stack)?;
        ensure(c.is_empty(), || format!("Graph answered 409: {c:?}"))?;
        Ok(())
    })
}
