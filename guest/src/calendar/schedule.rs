//! What a user's calendar means for the PBX, as pure functions: `calendarView` pages become
//! [`Slot`]s, and the slots say which presence holds at any moment and when it next changes.
//!
//! Mapping (product.md F3): `busy`/`tentative` -> `meeting`, `oof` -> `away`, `free`,
//! `workingElsewhere` and `unknown` -> nothing. Where events overlap the strongest wins
//! (`away` over `meeting`). Cancelled events and series masters never count. All-day events
//! count only when out of office: an all-day "busy" block (a conference, a holiday marked
//! busy) does not make a user "in a meeting" for a whole day, as Teams does not either.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::subscriptions::parse_iso;

/// PBX activity while a busy or tentative event runs.
pub const MEETING: &str = "meeting";
/// PBX activity while an out-of-office event runs.
pub const AWAY: &str = "away";
/// Note of a private event: its subject is never shown.
pub const PRIVATE_NOTE: &str = "Private appointment";

/// One event occurrence that changes presence, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Start, ms since the epoch.
    pub start_ms: u64,
    /// End (exclusive), ms since the epoch.
    pub end_ms: u64,
    /// PBX activity while it runs ([`MEETING`] or [`AWAY`]).
    pub activity: String,
    /// Note text: the subject, or [`PRIVATE_NOTE`] for private events.
    pub note: String,
}

/// One `calendarView` page: the slots it holds, how many items could not be read, and the
/// next page's URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Slots of this page.
    pub slots: Vec<Slot>,
    /// Items whose times were not understood (logged by the caller).
    pub unreadable: usize,
    /// `@odata.nextLink`.
    pub next: Option<String>,
}

/// Reads one `calendarView` page (times must be UTC: the request asks for them).
pub fn parse_page(body: &[u8]) -> Result<Page, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = v
        .get("value")
        .and_then(Value::as_array)
        .ok_or("no `value` array")?;
    let mut page = Page {
        next: v
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Page::default()
    };
    for item in items {
        match slot_of(item) {
            Ok(Some(s)) => page.slots.push(s),
            Ok(None) => {}
            Err(()) => page.unreadable += 1,
        }
    }
    Ok(page)
}

/// A UTC `dateTimeTimeZone`; anything but UTC is refused (we asked Graph for UTC).
fn utc_ms(v: &Value) -> Option<u64> {
    let tz = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    if !matches!(tz, "UTC" | "Etc/UTC" | "Coordinated Universal Time" | "") {
        return None;
    }
    parse_iso(v.get("dateTime")?.as_str()?)
}

/// The slot of one event: `Ok(None)` when it does not change presence, `Err` when unreadable.
fn slot_of(item: &Value) -> Result<Option<Slot>, ()> {
    let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    let flag = |k: &str| item.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("isCancelled") || text("type") == "seriesMaster" {
        return Ok(None);
    }
    let activity = match text("showAs") {
        "oof" => AWAY,
        "busy" | "tentative" if !flag("isAllDay") => MEETING,
        _ => return Ok(None),
    };
    let (Some(start_ms), Some(end_ms)) = (utc_ms(&item["start"]), utc_ms(&item["end"])) else {
        return Err(());
    };
    if end_ms <= start_ms {
        return Ok(None);
    }
    let private = matches!(text("sensitivity"), "private" | "confidential");
    Ok(Some(Slot {
        start_ms,
        end_ms,
        activity: activity.to_string(),
        note: if private {
            PRIVATE_NOTE.to_string()
        } else {
            text("subject").to_string()
        },
    }))
}

fn strength(activity: &str) -> u8 {
    match activity {
        AWAY => 2,
        MEETING => 1,
        _ => 0,
    }
}

/// The presence at `now_ms`: `(activity, note)`, both empty when nothing runs. The strongest
/// running slot wins; among equals the one that started last (the meeting one just joined).
pub fn state_at(slots: &[Slot], now_ms: u64) -> (String, String) {
    slots
        .iter()
        .filter(|s| s.start_ms <= now_ms && now_ms < s.end_ms)
        .max_by_key(|s| (strength(&s.activity), s.start_ms))
        .map(|s| (s.activity.clone(), s.note.clone()))
        .unwrap_or_default()
}

/// The next moment after `now_ms` at which a slot starts or ends.
pub fn next_change(slots: &[Slot], now_ms: u64) -> Option<u64> {
    slots
        .iter()
        .flat_map(|s| [s.start_ms, s.end_ms])
        .filter(|t| *t > now_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(subject: &str, start: &str, end: &str, show: &str) -> Value {
        json!({"id": subject, "subject": subject, "showAs": show, "isAllDay": false,
               "isCancelled": false, "sensitivity": "normal", "type": "singleInstance",
               "start": {"dateTime": format!("2026-01-15T{start}:00.0000000"), "timeZone": "UTC"},
               "end": {"dateTime": format!("2026-01-15T{end}:00.0000000"), "timeZone": "UTC"}})
    }

    fn at(hm: &str) -> u64 {
        parse_iso(&format!("2026-01-15T{hm}:00Z")).unwrap()
    }

    fn slots(items: Vec<Value>) -> Vec<Slot> {
        let page = parse_page(json!({ "value": items }).to_string().as_bytes()).unwrap();
        assert_eq!(page.unreadable, 0);
        page.slots
    }

    #[test]
    fn busy_and_tentative_are_meetings_oof_is_away_free_is_nothing() {
        let s = slots(vec![
            ev("Sync", "09:00", "09:30", "busy"),
            ev("Maybe", "10:00", "10:30", "tentative"),
            ev("Holiday", "11:00", "12:00", "oof"),
            ev("Focus", "13:00", "14:00", "free"),
            ev("Home", "14:00", "15:00", "workingElsewhere"),
        ]);
        assert_eq!(state_at(&s, at("09:10")), ("meeting".into(), "Sync".into()));
        assert_eq!(state_at(&s, at("10:00")).0, "meeting");
        assert_eq!(state_at(&s, at("11:30")), ("away".into(), "Holiday".into()));
        assert_eq!(state_at(&s, at("13:30")), (String::new(), String::new()));
        assert_eq!(state_at(&s, at("14:30")).0, "");
        // The end is exclusive.
        assert_eq!(state_at(&s, at("09:30")).0, "");
    }

    #[test]
    fn overlapping_strongest_wins_back_to_back_has_no_gap() {
        let s = slots(vec![
            ev("A", "09:00", "10:00", "busy"),
            ev("B", "10:00", "11:00", "tentative"),
            ev("Out", "10:30", "12:00", "oof"),
            ev("C", "11:00", "11:30", "busy"),
        ]);
        assert_eq!(state_at(&s, at("09:59")).1, "A");
        assert_eq!(state_at(&s, at("10:00")).1, "B");
        assert_eq!(state_at(&s, at("10:45")), ("away".into(), "Out".into()));
        assert_eq!(state_at(&s, at("11:15")), ("away".into(), "Out".into()));
        assert_eq!(next_change(&s, at("09:00")), Some(at("10:00")));
        assert_eq!(next_change(&s, at("11:30")), Some(at("12:00")));
        assert_eq!(next_change(&s, at("12:00")), None);
    }

    #[test]
    fn cancelled_masters_all_day_busy_and_private_subjects() {
        let mut cancelled = ev("Gone", "09:00", "10:00", "busy");
        cancelled["isCancelled"] = json!(true);
        let mut master = ev("Series", "09:00", "10:00", "busy");
        master["type"] = json!("seriesMaster");
        let mut all_day = ev("Conference", "00:00", "23:59", "busy");
        all_day["isAllDay"] = json!(true);
        let mut private = ev("Doctor", "12:00", "13:00", "busy");
        private["sensitivity"] = json!("private");
        let mut vacation = ev("Vacation", "00:00", "23:59", "oof");
        vacation["isAllDay"] = json!(true);
        vacation["sensitivity"] = json!("confidential");
        let s = slots(vec![cancelled, master, all_day.clone(), private]);
        assert_eq!(state_at(&s, at("09:30")).0, "");
        assert_eq!(
            state_at(&s, at("12:30")),
            ("meeting".into(), PRIVATE_NOTE.into())
        );
        let s = slots(vec![all_day, vacation]);
        assert_eq!(
            state_at(&s, at("12:30")),
            ("away".into(), PRIVATE_NOTE.into())
        );
    }

    #[test]
    fn non_utc_times_are_counted_unreadable_and_paging_is_kept() {
        let mut local = ev("Local", "09:00", "10:00", "busy");
        local["start"]["timeZone"] = json!("W. Europe Standard Time");
        let body = json!({"value": [local, ev("X", "09:00", "10:00", "busy")],
                          "@odata.nextLink": "https://g/next"});
        let page = parse_page(body.to_string().as_bytes()).unwrap();
        assert_eq!(page.unreadable, 1);
        assert_eq!(page.slots.len(), 1);
        assert_eq!(page.next.as_deref(), Some("https://g/next"));
        assert!(parse_page(b"{}").is_err());
    }
}
