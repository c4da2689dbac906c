//! Calendar events, `calendarView` with recurrence expansion and exceptions, and the
//! `Prefer: outlook.timezone` header (graph.md 5, item 29).

use std::collections::HashMap;

use serde_json::{Value, json};
use time::{Date, Duration, Month, OffsetDateTime, Weekday};

use crate::clock::{iso_naive7, parse_iso};
use crate::core::{Caller, Fake, GResult, GraphErr, Reply, gerr};
use crate::http::{Request, Response};
use crate::token::forbidden;

/// A stored event (series master or single instance).
#[derive(Debug, Clone)]
pub struct Event {
    /// Id.
    pub id: String,
    /// Graph JSON as given (subject, showAs, sensitivity, isAllDay, isCancelled, recurrence...).
    pub json: Value,
    /// Start (UTC ms).
    pub start: i64,
    /// End (UTC ms).
    pub end: i64,
    /// Time zone of start/end.
    pub tz: String,
    /// Exceptions by occurrence date `YYYY-MM-DD`: None = cancelled, Some(patch) = changed.
    pub exceptions: HashMap<String, Option<Value>>,
}

fn last_sunday(year: i32, month: Month) -> Date {
    let mut d = Date::from_calendar_date(year, month, month.length(year)).expect("date");
    while d.weekday() != Weekday::Sunday {
        d = d.previous_day().expect("date");
    }
    d
}

fn nth_sunday(year: i32, month: Month, n: u8) -> Date {
    let mut d = Date::from_calendar_date(year, month, 1).expect("date");
    while d.weekday() != Weekday::Sunday {
        d = d.next_day().expect("date");
    }
    d + Duration::weeks(n as i64 - 1)
}

fn ms_of(d: Date, hour: u8) -> i64 {
    (d.with_hms(hour, 0, 0)
        .expect("time")
        .assume_utc()
        .unix_timestamp())
        * 1000
}

/// Offset from UTC (ms) of a Windows or IANA time zone at `utc_ms`; a small built-in table with
/// EU and US daylight-saving rules. Unknown zones give None.
pub fn tz_offset(name: &str, utc_ms: i64) -> Option<i64> {
    let n = name.trim().trim_matches('"');
    let year = OffsetDateTime::from_unix_timestamp(utc_ms / 1000)
        .ok()?
        .year();
    let eu = |std_h: i64| {
        let on = ms_of(last_sunday(year, Month::March), 1);
        let off = ms_of(last_sunday(year, Month::October), 1);
        std_h * 3_600_000
            + if utc_ms >= on && utc_ms < off {
                3_600_000
            } else {
                0
            }
    };
    let us = |std_h: i64| {
        let on = ms_of(nth_sunday(year, Month::March, 2), 2) - std_h * 3_600_000;
        let off = ms_of(nth_sunday(year, Month::November, 1), 2) - (std_h + 1) * 3_600_000;
        std_h * 3_600_000
            + if utc_ms >= on && utc_ms < off {
                3_600_000
            } else {
                0
            }
    };
    Some(match n {
        "UTC" | "Etc/UTC" | "GMT" | "Coordinated Universal Time" | "tzone://Microsoft/Utc" => 0,
        "W. Europe Standard Time"
        | "Europe/Berlin"
        | "Europe/Vienna"
        | "Europe/Zurich"
        | "Europe/Amsterdam"
        | "Romance Standard Time"
        | "Europe/Paris"
        | "Central Europe Standard Time" => eu(1),
        "GMT Standard Time" | "Europe/London" => eu(0),
        "Pacific Standard Time" | "America/Los_Angeles" => us(-8),
        "Eastern Standard Time" | "America/New_York" => us(-5),
        "India Standard Time" | "Asia/Kolkata" => 19_800_000,
        "Tokyo Standard Time" | "Asia/Tokyo" => 9 * 3_600_000,
        _ => return None,
    })
}

/// Local wall time (given as if UTC) in `tz` to UTC ms.
fn local_to_utc(local_ms: i64, tz: &str) -> i64 {
    let off = tz_offset(tz, local_ms).unwrap_or(0);
    let guess = local_ms - off;
    local_ms - tz_offset(tz, guess).unwrap_or(off)
}

fn parse_dtz(v: &Value) -> Option<(i64, String)> {
    let tz = v["timeZone"].as_str().unwrap_or("UTC").to_string();
    let local = parse_iso(v["dateTime"].as_str()?)?;
    Some((local_to_utc(local, &tz), tz))
}

fn date_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|d| d.date())
        .unwrap_or(Date::MIN)
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

fn nth_in_month(d: Date) -> (u8, bool) {
    let nth = (d.day() - 1) / 7 + 1;
    let last = d.day() + 7 > d.month().length(d.year());
    (nth, last)
}

fn relative_ok(d: Date, p: &Value) -> bool {
    let days: Vec<&str> = p["daysOfWeek"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !days
        .iter()
        .any(|x| x.eq_ignore_ascii_case(weekday_name(d.weekday())))
    {
        return false;
    }
    let (nth, last) = nth_in_month(d);
    match p["index"].as_str().unwrap_or("first") {
        "first" => nth == 1,
        "second" => nth == 2,
        "third" => nth == 3,
        "fourth" => nth == 4,
        "last" => last,
        _ => false,
    }
}

/// Expand a recurring master into (local date, start UTC, end UTC) occurrences that start before
/// `until` (UTC ms).
fn expand(e: &Event, until: i64) -> Vec<(Date, i64, i64)> {
    let rec = &e.json["recurrence"];
    let p = &rec["pattern"];
    let r = &rec["range"];
    let tz = r["recurrenceTimeZone"]
        .as_str()
        .unwrap_or(&e.tz)
        .to_string();
    let local_start = e.start + tz_offset(&tz, e.start).unwrap_or(0);
    let tod = local_start.rem_euclid(86_400_000);
    let dur = e.end - e.start;
    let start_date = r["startDate"]
        .as_str()
        .and_then(|s| Date::parse(s, &time::format_description::well_known::Iso8601::DEFAULT).ok())
        .unwrap_or_else(|| date_of(local_start));
    let end_date = if r["type"] == "endDate" {
        r["endDate"].as_str().and_then(|s| {
            Date::parse(s, &time::format_description::well_known::Iso8601::DEFAULT).ok()
        })
    } else {
        None
    };
    let max_n = if r["type"] == "numbered" {
        r["numberOfOccurrences"].as_u64().unwrap_or(1) as usize
    } else {
        usize::MAX
    };
    let interval = p["interval"].as_i64().unwrap_or(1).max(1);
    let ty = p["type"].as_str().unwrap_or("daily");
    let days: Vec<String> = p["daysOfWeek"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_lowercase))
                .collect()
        })
        .unwrap_or_default();
    let month_diff = |d: Date| {
        (d.year() - start_date.year()) as i64 * 12 + d.month() as i64 - start_date.month() as i64
    };
    let week_start = |d: Date| d - Duration::days(d.weekday().number_days_from_sunday() as i64);
    let mut out = vec![];
    let mut d = start_date;
    let mut n = 0;
    for _ in 0..20_000 {
        if end_date.is_some_and(|x| d > x) || n >= max_n {
            break;
        }
        let occ_local = (d.midnight().assume_utc().unix_timestamp() * 1000) + tod;
        let occ = local_to_utc(occ_local, &tz);
        if occ >= until {
            break;
        }
        let hit = match ty {
            "daily" => (d - start_date).whole_days() % interval == 0,
            "weekly" => {
                days.iter().any(|x| x == weekday_name(d.weekday()))
                    && ((week_start(d) - week_start(start_date)).whole_weeks() % interval == 0)
            }
            "absoluteMonthly" => {
                d.day() as i64 == p["dayOfMonth"].as_i64().unwrap_or(0)
                    && month_diff(d) % interval == 0
            }
            "relativeMonthly" => relative_ok(d, p) && month_diff(d) % interval == 0,
            "absoluteYearly" => {
                d.month() as i64 == p["month"].as_i64().unwrap_or(0)
                    && d.day() as i64 == p["dayOfMonth"].as_i64().unwrap_or(0)
                    && (d.year() - start_date.year()) as i64 % interval == 0
            }
            "relativeYearly" => {
                d.month() as i64 == p["month"].as_i64().unwrap_or(0) && relative_ok(d, p)
            }
            _ => false,
        };
        if hit && occ >= e.start - 86_400_000 {
            out.push((d, occ, occ + dur));
            n += 1;
        }
        d = match d.next_day() {
            Some(x) => x,
            None => break,
        };
    }
    out
}

fn out_dtz(ms: i64, tz: &str) -> Value {
    let off = tz_offset(tz, ms).unwrap_or(0);
    json!({"dateTime": iso_naive7(ms + off), "timeZone": tz})
}

impl Fake {
    /// What the calendar says right now: `OutOfOffice` (an `oof` event) or `InAMeeting` (a busy
    /// or tentative timed event), cancelled events and occurrences ignored.
    pub(crate) fn calendar_activity(&self, uid: &str, now: i64) -> Option<&'static str> {
        let mut meeting = false;
        for e in self.calendars.get(uid)? {
            let mut hits: Vec<(i64, i64, Value)> = vec![];
            if e.json["recurrence"].is_object() {
                for (d, os, oe) in expand(e, now + 1) {
                    let key = format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day());
                    match e.exceptions.get(&key) {
                        Some(None) => {}
                        Some(Some(p)) => {
                            let ps = parse_dtz(&p["start"]).map_or(os, |x| x.0);
                            let pe = parse_dtz(&p["end"]).map_or(oe, |x| x.0);
                            let mut j = e.json.clone();
                            if let Some(sa) = p.get("showAs") {
                                j["showAs"] = sa.clone();
                            }
                            hits.push((ps, pe, j));
                        }
                        None => hits.push((os, oe, e.json.clone())),
                    }
                }
            } else {
                hits.push((e.start, e.end, e.json.clone()));
            }
            for (s, en, j) in hits {
                if s <= now && now < en && j["isCancelled"] != true {
                    match j["showAs"].as_str() {
                        Some("oof") => return Some("OutOfOffice"),
                        Some("busy") | Some("tentative") if j["isAllDay"] != true => meeting = true,
                        _ => {}
                    }
                }
            }
        }
        meeting.then_some("InAMeeting")
    }

    /// Checks that `caller` may read `user`'s mailbox (Outlook resources: events, contacts) and
    /// resolves the user; the errors are Outlook's, not the directory's.
    pub(crate) fn check_mailbox(
        &self,
        user: &str,
        caller: &Caller,
        delegated: &[&str],
        app: &[&str],
    ) -> Result<String, GraphErr> {
        if !caller.has(delegated, app) {
            return Err(forbidden(false, caller));
        }
        let uid = self.resolve_user(user).map_err(|_| {
            gerr(
                404,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        })?;
        if !caller.is_app_only() && caller.user_id.as_deref() != Some(uid.as_str()) {
            return Err(gerr(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ));
        }
        Ok(uid)
    }

    /// Add an event (Graph JSON: subject, start, end, showAs, isAllDay, isCancelled,
    /// sensitivity, recurrence). Returns its id; emits a `created` notification.
    pub fn add_event(&mut self, user: &str, mut ev: Value) -> Result<String, String> {
        let uid = self.resolve_user(user).map_err(|e| e.message)?;
        let (start, tz) = parse_dtz(&ev["start"]).ok_or("start is required")?;
        let (end, _) = parse_dtz(&ev["end"]).ok_or("end is required")?;
        let id = format!("AAMkAD{}", self.new_guid().replace('-', ""));
        for (k, d) in [
            ("showAs", json!("busy")),
            ("sensitivity", json!("normal")),
            ("isAllDay", json!(false)),
            ("isCancelled", json!(false)),
            ("subject", json!("")),
        ] {
            if ev.get(k).is_none() {
                ev[k] = d;
            }
        }
        ev["id"] = json!(id);
        ev["type"] = json!(if ev["recurrence"].is_object() {
            "seriesMaster"
        } else {
            "singleInstance"
        });
        self.calendars.entry(uid.clone()).or_default().push(Event {
            id: id.clone(),
            json: ev.clone(),
            start,
            end,
            tz,
            exceptions: HashMap::new(),
        });
        self.notify_mailbox(&uid, false, &id, "created", ev);
        self.presence_changed(&uid);
        Ok(id)
    }

    /// Cancel (`patch` = None) or change one occurrence (`YYYY-MM-DD`) of a series.
    pub fn set_occurrence_exception(
        &mut self,
        user: &str,
        event_id: &str,
        date: &str,
        patch: Option<Value>,
    ) -> bool {
        let Ok(uid) = self.resolve_user(user) else {
            return false;
        };
        let Some(e) = self
            .calendars
            .get_mut(&uid)
            .and_then(|v| v.iter_mut().find(|e| e.id == event_id))
        else {
            return false;
        };
        e.exceptions.insert(date.to_string(), patch);
        let j = e.json.clone();
        self.notify_mailbox(&uid, false, event_id, "updated", j);
        true
    }

    /// Change an event as its organiser would in Outlook (`PATCH /events/{id}`): the fields of
    /// `patch` replace the event's (a new `start`/`end` moves it). Emits `updated`.
    pub fn update_event(
        &mut self,
        user: &str,
        event_id: &str,
        patch: &Value,
    ) -> Result<(), String> {
        let uid = self.resolve_user(user).map_err(|e| e.message)?;
        let e = self
            .calendars
            .get_mut(&uid)
            .and_then(|v| v.iter_mut().find(|e| e.id == event_id))
            .ok_or("no such event")?;
        let start = patch.get("start").map(parse_dtz);
        let end = patch.get("end").map(parse_dtz);
        if matches!(start, Some(None)) || matches!(end, Some(None)) {
            return Err("start and end need dateTime and timeZone".into());
        }
        for (k, v) in patch.as_object().into_iter().flatten() {
            if k != "id" && k != "type" {
                e.json[k] = v.clone();
            }
        }
        if let Some(Some((ms, tz))) = start {
            e.start = ms;
            e.tz = tz;
        }
        if let Some(Some((ms, _))) = end {
            e.end = ms;
        }
        let j = e.json.clone();
        self.notify_mailbox(&uid, false, event_id, "updated", j);
        self.presence_changed(&uid);
        Ok(())
    }

    /// Delete an event.
    pub fn delete_event(&mut self, user: &str, event_id: &str) -> bool {
        let Ok(uid) = self.resolve_user(user) else {
            return false;
        };
        let Some(v) = self.calendars.get_mut(&uid) else {
            return false;
        };
        let n = v.len();
        v.retain(|e| e.id != event_id);
        let removed = v.len() != n;
        if removed {
            self.notify_mailbox(&uid, false, event_id, "deleted", json!({"id": event_id}));
        }
        removed
    }

    fn event_out(&self, e: &Event, start: i64, end: i64, tz: &str, extra: Value) -> Value {
        let mut v = e.json.clone();
        v["start"] = out_dtz(start, tz);
        v["end"] = out_dtz(end, tz);
        if let Some(o) = extra.as_object() {
            for (k, x) in o {
                v[k] = x.clone();
            }
        }
        if let Some(o) = v.as_object_mut()
            && o.get("type").and_then(Value::as_str) != Some("seriesMaster")
        {
            o.remove("recurrence");
        }
        v
    }

    fn out_tz(req: &Request) -> (String, bool) {
        let pref = req.get_header("Prefer").and_then(|p| {
            p.split(',').find_map(|x| {
                x.trim()
                    .strip_prefix("outlook.timezone=")
                    .map(|t| t.trim_matches('"').to_string())
            })
        });
        match pref {
            Some(t) if tz_offset(&t, 0).is_some() => (t, true),
            _ => ("UTC".into(), false),
        }
    }

    fn page(&self, req: &Request, items: Vec<Value>, path: &str) -> Result<Value, GraphErr> {
        let top = req
            .q("$top")
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(self.cfg.outlook_default_top)
            .max(1);
        let skip = req
            .q("$skip")
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(0);
        let select: Option<Vec<String>> = req
            .q("$select")
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
        let page: Vec<Value> = items
            .iter()
            .skip(skip)
            .take(top)
            .map(|v| match &select {
                Some(sel) => {
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), v["id"].clone());
                    for s in sel {
                        if let Some(x) = v.get(s) {
                            o.insert(s.clone(), x.clone());
                        }
                    }
                    Value::Object(o)
                }
                None => v.clone(),
            })
            .collect();
        let mut body = json!({ "value": page });
        if skip + top < items.len() {
            let q: Vec<String> = req
                .query()
                .into_iter()
                .filter(|(k, _)| k != "$skip")
                .map(|(k, v)| format!("{k}={}", crate::http::pct_encode(&v)))
                .collect();
            body["@odata.nextLink"] = json!(format!(
                "{}/v1.0{path}?{}&$skip={}",
                self.graph_base(),
                q.join("&"),
                skip + top
            ));
        }
        Ok(body)
    }

    pub(crate) fn calendar_view(&mut self, user: &str, req: &Request, caller: &Caller) -> GResult {
        let uid = self.check_mailbox(
            user,
            caller,
            &["Calendars.Read", "Calendars.ReadWrite"],
            &["Calendars.Read", "Calendars.ReadWrite"],
        )?;
        let (Some(s), Some(e)) = (req.q("startDateTime"), req.q("endDateTime")) else {
            return Err(gerr(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            ));
        };
        let (Some(vs), Some(ve)) = (parse_iso(&s), parse_iso(&e)) else {
            return Err(gerr(
                400,
                "ErrorInvalidParameter",
                "The value of the parameter 'StartDateTime' or 'EndDateTime' is invalid.",
            ));
        };
        let (tz, applied) = Self::out_tz(req);
        let mut items: Vec<(i64, Value)> = vec![];
        for ev in self.calendars.get(&uid).cloned().unwrap_or_default() {
            if ev.json["recurrence"].is_object() {
                for (d, os, oe) in expand(&ev, ve) {
                    let key = format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day());
                    let oid = format!("{}_{}", ev.id, key.replace('-', ""));
                    match ev.exceptions.get(&key) {
                        Some(None) => {}
                        Some(Some(patch)) => {
                            let ps = parse_dtz(&patch["start"]).map_or(os, |x| x.0);
                            let pe = parse_dtz(&patch["end"]).map_or(oe, |x| x.0);
                            if ps < ve && pe > vs {
                                let mut extra = patch.clone();
                                extra["id"] = json!(oid);
                                extra["type"] = json!("exception");
                                extra["seriesMasterId"] = json!(ev.id);
                                if let Some(o) = extra.as_object_mut() {
                                    o.remove("start");
                                    o.remove("end");
                                }
                                items.push((ps, self.event_out(&ev, ps, pe, &tz, extra)));
                            }
                        }
                        None => {
                            if os < ve && oe > vs {
                                items.push((os, self.event_out(&ev, os, oe, &tz, json!({"id": oid, "type": "occurrence", "seriesMasterId": ev.id}))));
                            }
                        }
                    }
                }
            } else if ev.start < ve && ev.end > vs {
                items.push((
                    ev.start,
                    self.event_out(&ev, ev.start, ev.end, &tz, json!({})),
                ));
            }
        }
        items.sort_by_key(|x| x.0);
        let body = self.page(
            req,
            items.into_iter().map(|x| x.1).collect(),
            &format!("/users/{user}/calendarView"),
        )?;
        let mut r = Response::json(200, &body);
        if applied {
            r.headers.push((
                "Preference-Applied".into(),
                format!("outlook.timezone=\"{tz}\""),
            ));
        }
        Ok(Reply::Resp(r))
    }

    pub(crate) fn list_events(&mut self, user: &str, req: &Request, caller: &Caller) -> GResult {
        let uid = self.check_mailbox(
            user,
            caller,
            &["Calendars.Read", "Calendars.ReadWrite"],
            &["Calendars.Read", "Calendars.ReadWrite"],
        )?;
        let (tz, _) = Self::out_tz(req);
        let items: Vec<Value> = self
            .calendars
            .get(&uid)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| self.event_out(e, e.start, e.end, &tz, json!({})))
            .collect();
        let body = self.page(req, items, &format!("/users/{user}/events"))?;
        Ok(Reply::Resp(Response::json(200, &body)))
    }

    pub(crate) fn get_event(
        &mut self,
        user: &str,
        id: &str,
        req: &Request,
        caller: &Caller,
    ) -> GResult {
        let uid = self.check_mailbox(
            user,
            caller,
            &["Calendars.Read", "Calendars.ReadWrite"],
            &["Calendars.Read", "Calendars.ReadWrite"],
        )?;
        let (tz, _) = Self::out_tz(req);
        let e = self
            .calendars
            .get(&uid)
            .and_then(|v| v.iter().find(|e| e.id == id))
            .cloned()
            .ok_or_else(|| {
                gerr(
                    404,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                )
            })?;
        Ok(Reply::Resp(Response::json(
            200,
            &self.event_out(&e, e.start, e.end, &tz, json!({})),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_table_knows_dst() {
        let winter = parse_iso("2026-01-15T12:00:00Z").unwrap();
        let summer = parse_iso("2026-07-15T12:00:00Z").unwrap();
        assert_eq!(
            tz_offset("W. Europe Standard Time", winter),
            Some(3_600_000)
        );
        assert_eq!(tz_offset("Europe/Berlin", summer), Some(7_200_000));
        assert_eq!(
            tz_offset("Pacific Standard Time", summer),
            Some(-7 * 3_600_000)
        );
        assert_eq!(tz_offset("Mars/Olympus", summer), None);
    }
}
