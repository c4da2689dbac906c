//! Presence: sessions (Teams clients and apps via setPresence), preferred presence, status
//! message, the aggregation engine and the presence endpoints (items 12-17).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{iso_naive7, iso_z, parse_duration};
use crate::config::UnknownPresenceIds;
use crate::core::{Caller, Fake, GResult, GraphErr, Reply, gerr, ok_json};
use crate::http::{Request, Response};
use crate::token::forbidden;

/// One presence session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Availability.
    pub availability: String,
    /// Activity.
    pub activity: String,
    /// Expiry (ms); i64::MAX for Teams clients.
    pub expires_at: i64,
    /// Last set/refresh (ms) — drives the idle fade.
    pub last_set: i64,
    /// A Teams client (does not fade) rather than an app session.
    pub teams_client: bool,
}

/// User-preferred presence.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferred {
    /// Availability.
    pub availability: String,
    /// Activity.
    pub activity: String,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// Presence state of one user.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceState {
    /// Sessions by session id.
    pub sessions: BTreeMap<String, Session>,
    /// Preferred presence.
    pub preferred: Option<Preferred>,
    /// Status message (Graph JSON) and when it was published.
    pub status_message: Option<(Value, i64)>,
    /// Out of office (automatic replies / oof calendar event).
    pub out_of_office: bool,
    /// Last published aggregate.
    pub published: (String, String),
    /// Sequence number of the last published aggregate.
    pub seq: u64,
}

/// All users' presence.
#[derive(Default)]
pub struct PresenceBook {
    pub(crate) users: HashMap<String, PresenceState>,
    counter: u64,
    calendar_checked: i64,
}

impl PresenceBook {
    pub(crate) fn next_due(&self, fade: i64) -> Option<i64> {
        let mut d: Option<i64> = None;
        let mut put = |t: i64| d = Some(d.map_or(t, |x: i64| x.min(t)));
        for st in self.users.values() {
            for s in st.sessions.values() {
                if s.expires_at != i64::MAX {
                    put(s.expires_at);
                }
                if !s.teams_client && s.availability == "Available" {
                    put(s.last_set + fade);
                    put(s.last_set + 2 * fade);
                }
            }
            if let Some(p) = &st.preferred {
                put(p.expires_at);
            }
        }
        d
    }
}

const SET_PAIRS: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];
const PREFERRED_PAIRS: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Busy", "Busy"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("BeRightBack", "BeRightBack"),
    ("Away", "Away"),
    ("Offline", "OffWork"),
];

fn rank(availability: &str) -> u8 {
    match availability {
        "DoNotDisturb" => 5,
        "Busy" | "BusyIdle" => 4,
        "Available" | "AvailableIdle" => 3,
        "BeRightBack" => 2,
        "Away" => 1,
        _ => 0,
    }
}

fn pair_ok(pairs: &[(&str, &str)], a: &str, b: &str) -> Option<(String, String)> {
    pairs
        .iter()
        .find(|(x, y)| x.eq_ignore_ascii_case(a) && y.eq_ignore_ascii_case(b))
        .map(|(x, y)| (x.to_string(), y.to_string()))
}

/// The aggregation rules of graph.md 4.5/4.7/4.9: expired sessions are gone; an Available app
/// session fades to Available/AvailableInactive after `fade` and Away/Away after twice that;
/// no session ⇒ Offline/Offline; preferred presence wins while a session exists; otherwise
/// DoNotDisturb > Busy > Available > Away, ties to the most recent session.
pub fn aggregate(st: &PresenceState, now: i64, fade: i64) -> (String, String) {
    let live: Vec<&Session> = st
        .sessions
        .values()
        .filter(|s| s.expires_at > now)
        .collect();
    if live.is_empty() {
        return ("Offline".into(), "Offline".into());
    }
    let mut out = if let Some(p) = st.preferred.as_ref().filter(|p| p.expires_at > now) {
        (p.availability.clone(), p.activity.clone())
    } else {
        let eff = |s: &Session| -> (String, String) {
            if !s.teams_client && s.availability == "Available" {
                let idle = now - s.last_set;
                if idle >= 2 * fade {
                    return ("Away".into(), "Away".into());
                }
                if idle >= fade {
                    return ("Available".into(), "AvailableInactive".into());
                }
            }
            (s.availability.clone(), s.activity.clone())
        };
        live.iter()
            .map(|s| (eff(s), s.last_set))
            .max_by(|a, b| rank(&a.0.0).cmp(&rank(&b.0.0)).then(a.1.cmp(&b.1)))
            .map(|x| x.0)
            .unwrap_or(("Offline".into(), "Offline".into()))
    };
    if st.out_of_office && out.0 != "Offline" {
        out.1 = "OutOfOffice".into();
    }
    out
}

/// Whether the passing of time alone can change this user's aggregate: an expiring session, an
/// app session that fades, or a preferred presence (it expires).
fn time_dependent(st: &PresenceState) -> bool {
    st.preferred.is_some()
        || st
            .sessions
            .values()
            .any(|s| s.expires_at != i64::MAX || !s.teams_client)
}

impl Fake {
    /// Teams derives "In a meeting" and "Out of office" from the calendar (graph.md 4.5, 5.2):
    /// an ongoing busy/tentative event turns Available into Busy/InAMeeting (unless the user set a
    /// preferred presence), an ongoing `oof` event sets the activity OutOfOffice.
    fn calendar_overlay(
        &self,
        uid: &str,
        agg: (String, String),
        has_pref: bool,
        now: i64,
    ) -> (String, String) {
        if !self.cfg.calendar_drives_presence || agg.0 == "Offline" {
            return agg;
        }
        match self.calendar_activity(uid, now) {
            Some("OutOfOffice") => (agg.0, "OutOfOffice".into()),
            Some("InAMeeting")
                if !has_pref && (agg.0 == "Available" || agg.0 == "AvailableIdle") =>
            {
                ("Busy".into(), "InAMeeting".into())
            }
            _ => agg,
        }
    }

    fn presence_state(&mut self, uid: &str) -> &mut PresenceState {
        self.presence
            .users
            .entry(uid.to_string())
            .or_insert_with(|| PresenceState {
                published: ("Offline".into(), "Offline".into()),
                ..Default::default()
            })
    }

    /// Recompute a user's aggregate; publish (sequence + notifications) only if it changed.
    pub(crate) fn presence_changed(&mut self, uid: &str) {
        let now = self.now();
        let fade = self.cfg.presence_idle_fade_ms;
        let st = self.presence_state(uid);
        st.sessions.retain(|_, s| s.expires_at > now);
        if st.preferred.as_ref().is_some_and(|p| p.expires_at <= now) {
            st.preferred = None;
        }
        let agg = aggregate(st, now, fade);
        let has_pref = st.preferred.is_some();
        let agg = self.calendar_overlay(uid, agg, has_pref, now);
        let st = self.presence_state(uid);
        if agg != st.published {
            st.published = agg;
            self.presence.counter += 1;
            let c = self.presence.counter;
            self.presence.users.get_mut(uid).expect("state").seq = c;
            self.notify_presence(uid);
        }
    }

    pub(crate) fn presence_tick(&mut self) {
        let now = self.now();
        let fade = self.cfg.presence_idle_fade_ms;
        let mut stale: Vec<String> = self
            .presence
            .users
            .iter()
            // Only time can change a user here; Teams-client sessions alone never expire or
            // fade, so their aggregate is the one published at the last change (and skipping
            // them keeps a tick cheap with hundreds of users).
            .filter(|(_, st)| time_dependent(st))
            .filter(|(_, st)| {
                (!st.sessions.is_empty() || st.preferred.is_some())
                    && aggregate(st, now, fade) != st.published
                    || st.sessions.values().any(|s| s.expires_at <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        // Meetings starting or ending change the shown presence too.
        // (At most once per second of fake time: expanding series is the costly part.)
        if self.cfg.calendar_drives_presence && now - self.presence.calendar_checked >= 1_000 {
            self.presence.calendar_checked = now;
            stale.extend(
                self.calendars
                    .keys()
                    .filter(|u| {
                        self.presence
                            .users
                            .get(*u)
                            .is_some_and(|st| !st.sessions.is_empty())
                    })
                    .cloned(),
            );
        }
        for u in stale {
            self.presence_changed(&u);
        }
    }

    /// The Teams client of `user` sets its presence (control API): a session that never fades.
    pub fn teams_client_presence(
        &mut self,
        user: &str,
        session: Option<&str>,
        availability: &str,
        activity: &str,
    ) -> Result<(), String> {
        let uid = self.resolve_user(user).map_err(|e| e.message)?;
        let now = self.now();
        let sid = session.unwrap_or("teams-desktop").to_string();
        self.presence_state(&uid).sessions.insert(
            sid,
            Session {
                availability: availability.into(),
                activity: activity.into(),
                expires_at: i64::MAX,
                last_set: now,
                teams_client: true,
            },
        );
        self.presence_changed(&uid);
        Ok(())
    }

    /// A Teams client signs out.
    pub fn teams_client_signout(&mut self, user: &str, session: Option<&str>) {
        if let Ok(uid) = self.resolve_user(user) {
            self.presence_state(&uid)
                .sessions
                .remove(session.unwrap_or("teams-desktop"));
            self.presence_changed(&uid);
        }
    }

    /// Set automatic replies / out-of-office.
    pub fn set_out_of_office(&mut self, user: &str, on: bool) {
        if let Ok(uid) = self.resolve_user(user) {
            self.presence_state(&uid).out_of_office = on;
            self.presence_changed(&uid);
        }
    }

    /// Current aggregate presence `(availability, activity)` of a user.
    pub fn current_presence(&mut self, user: &str) -> Option<(String, String)> {
        let uid = self.resolve_user(user).ok()?;
        self.presence_changed(&uid);
        Some(
            self.presence
                .users
                .get(&uid)
                .map(|s| s.published.clone())
                .unwrap_or(("Offline".into(), "Offline".into())),
        )
    }

    /// Full presence state of a user (control API read-back).
    pub fn presence_detail(&self, uid: &str) -> Option<&PresenceState> {
        self.presence.users.get(uid)
    }

    /// Presence JSON as Graph returns it.
    pub(crate) fn presence_json(&mut self, uid: &str, own: bool) -> Value {
        let teams = self.user(uid).is_some_and(|u| u.teams_licensed);
        if !teams {
            // Non-Teams users: PresenceUnknown (UNVERIFIED detail, graph.md 2.3).
            return json!({"id": uid, "availability": "PresenceUnknown", "activity": "PresenceUnknown", "statusMessage": null,
                          "outOfOfficeSettings": {"message": null, "isOutOfOffice": false}, "sequenceNumber": null});
        }
        self.presence_changed(uid);
        let st = self.presence_state(uid).clone();
        let status = st.status_message.as_ref().map(|(m, published)| {
            let mut m = m.clone();
            if own {
                m["publishedDateTime"] = json!(iso_z(*published));
            } else if let Some(o) = m.as_object_mut() {
                // Omitted when reading another user's presence (4.1).
                o.remove("expiryDateTime");
            }
            m
        });
        json!({"id": uid, "availability": st.published.0, "activity": st.published.1, "statusMessage": status,
               "outOfOfficeSettings": {"message": null, "isOutOfOffice": st.out_of_office},
               "sequenceNumber": format!("C{:028}", st.seq),
               "workLocation": {"@odata.type": "microsoft.graph.userWorkLocation"}})
    }

    pub(crate) fn get_presence(&mut self, id: &str, caller: &Caller, me: bool) -> GResult {
        let ok = if me {
            caller.has(
                &[
                    "Presence.Read",
                    "Presence.Read.All",
                    "Presence.ReadWrite",
                    "Presence.ReadWrite.All",
                ],
                &[],
            )
        } else {
            caller.has(
                &["Presence.Read.All", "Presence.ReadWrite.All"],
                &["Presence.Read.All", "Presence.ReadWrite.All"],
            )
        };
        if !ok {
            return Err(forbidden(false, caller));
        }
        let uid = self
            .resolve_user(id)
            .map_err(|_| gerr(404, "NotFound", "The requested user is not found."))?;
        let own = caller.user_id.as_deref() == Some(uid.as_str());
        let mut v = self.presence_json(&uid, own);
        v["@odata.context"] = json!(format!(
            "{}/v1.0/$metadata#users('{uid}')/presence/$entity",
            self.graph_base()
        ));
        ok_json(v)
    }

    pub(crate) fn get_presences_by_user_id(&mut self, req: &Request, caller: &Caller) -> GResult {
        if !caller.has(
            &["Presence.Read.All", "Presence.ReadWrite.All"],
            &["Presence.Read.All", "Presence.ReadWrite.All"],
        ) {
            return Err(forbidden(false, caller));
        }
        if !self.cfg.cloud.presence_bulk_and_set() {
            return Err(gerr(
                400,
                "BadRequest",
                "getPresencesByUserId is not supported in this national cloud.",
            ));
        }
        let body = req
            .json_body()
            .ok_or_else(|| gerr(400, "BadRequest", "Empty Payload. JSON content expected."))?;
        let ids: Vec<String> = body["ids"]
            .as_array()
            .ok_or_else(|| gerr(400, "BadRequest", "The 'ids' parameter is required."))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if ids.len() > self.cfg.presence_max_ids {
            return Err(gerr(
                400,
                "BadRequest",
                &format!(
                    "The number of ids exceeds the maximum of {}.",
                    self.cfg.presence_max_ids
                ),
            ));
        }
        let mut out = vec![];
        for id in ids {
            let known = self
                .users
                .find(&id)
                .map(|e| (e.user.id.clone(), e.user.teams_licensed));
            match (known, self.cfg.unknown_presence_ids) {
                (Some((uid, true)), _) => {
                    let mut v = self.presence_json(&uid, false);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("workLocation");
                    }
                    out.push(v)
                }
                (_, UnknownPresenceIds::Omit) => {}
                (_, UnknownPresenceIds::NotFound) => return Err(gerr(404, "NotFound", &format!("User '{id}' not found."))),
                (_, UnknownPresenceIds::PresenceUnknown) => out.push(json!({"id": id, "availability": "PresenceUnknown", "activity": "PresenceUnknown", "outOfOfficeSettings": {"message": null, "isOutOfOffice": false}})),
            }
        }
        ok_json(
            json!({"@odata.context": format!("{}/v1.0/$metadata#Collection(microsoft.graph.presence)", self.graph_base()), "value": out}),
        )
    }

    pub(crate) fn presence_action(
        &mut self,
        id: &str,
        action: &str,
        req: &Request,
        caller: &Caller,
    ) -> GResult {
        if !caller.has(&["Presence.ReadWrite"], &["Presence.ReadWrite.All"]) {
            return Err(forbidden(false, caller));
        }
        let cloud = self.cfg.cloud;
        let allowed = match action {
            "setStatusMessage" | "clearUserPreferredPresence" => cloud.presence_global_only_apis(),
            _ => cloud.presence_bulk_and_set(),
        };
        if !allowed {
            return Err(gerr(
                400,
                "BadRequest",
                &format!("{action} is not supported in this national cloud."),
            ));
        }
        let uid = self
            .resolve_user(id)
            .map_err(|_| gerr(404, "NotFound", "The requested user is not found."))?;
        let body = req.json_body().unwrap_or(json!({}));
        let s = |k: &str| body[k].as_str().unwrap_or("").to_string();
        let now = self.now();
        let dur = |default: i64| -> Result<i64, GraphErr> {
            match body["expirationDuration"].as_str() {
                None => Ok(default),
                Some(d) => parse_duration(d).ok_or_else(|| {
                    gerr(
                        400,
                        "InvalidArgument",
                        "The provided [ExpirationDuration] is not a valid ISO-8601 duration.",
                    )
                }),
            }
        };
        match action {
            "setPresence" => {
                let sid = s("sessionId");
                if !sid.eq_ignore_ascii_case(&caller.app_id) {
                    return Err(gerr(
                        400,
                        "InvalidArgument",
                        "The provided [SessionId] must be the application id of the caller.",
                    ));
                }
                let (a, b) = pair_ok(SET_PAIRS, &s("availability"), &s("activity")).ok_or_else(|| gerr(400, "InvalidArgument", "The provided combination of [Availability] and [Activity] is not supported."))?;
                let d = dur(300_000)?;
                if !(300_000..=14_400_000).contains(&d) {
                    return Err(gerr(
                        400,
                        "InvalidArgument",
                        "The provided [ExpirationDuration] is out of range.",
                    ));
                }
                self.presence_state(&uid).sessions.insert(
                    sid.to_lowercase(),
                    Session {
                        availability: a,
                        activity: b,
                        expires_at: now + d,
                        last_set: now,
                        teams_client: false,
                    },
                );
            }
            "clearPresence" => {
                let sid = s("sessionId").to_lowercase();
                if self.presence_state(&uid).sessions.remove(&sid).is_none() {
                    return Err(gerr(404, "NotFound", "The presence session was not found."));
                }
            }
            "setUserPreferredPresence" => {
                let (a, b) = pair_ok(PREFERRED_PAIRS, &s("availability"), &s("activity")).ok_or_else(|| gerr(400, "InvalidArgument", "The provided combination of [Availability] and [Activity] is not supported."))?;
                let default = if a == "DoNotDisturb" || a == "Busy" {
                    86_400_000
                } else {
                    7 * 86_400_000
                };
                let d = dur(default)?;
                self.presence_state(&uid).preferred = Some(Preferred {
                    availability: a,
                    activity: b,
                    expires_at: now + d,
                });
            }
            "clearUserPreferredPresence" => {
                self.presence_state(&uid).preferred = None;
            }
            "setStatusMessage" => {
                let mut m = body["statusMessage"].clone();
                if m.is_null() {
                    return Err(gerr(400, "InvalidArgument", "statusMessage is required."));
                }
                if m.get("expiryDateTime").is_none() {
                    m["expiryDateTime"] = json!({"dateTime": iso_naive7(i64::from(i32::MAX) * 1000), "timeZone": "UTC"});
                }
                self.presence_state(&uid).status_message = Some((m, now));
            }
            _ => {
                return Err(gerr(
                    400,
                    "BadRequest",
                    &format!("Unknown presence action '{action}'."),
                ));
            }
        }
        self.presence_changed(&uid);
        Ok(Reply::Resp(Response::empty(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sess(a: &str, b: &str, t: i64, teams: bool) -> Session {
        Session {
            availability: a.into(),
            activity: b.into(),
            expires_at: t + 3_600_000,
            last_set: t,
            teams_client: teams,
        }
    }

    #[test]
    fn only_expiring_or_fading_presence_depends_on_time() {
        let mut st = PresenceState::default();
        assert!(!time_dependent(&st), "offline stays offline");
        let mut teams = sess("Busy", "InAMeeting", 0, true);
        teams.expires_at = i64::MAX;
        st.sessions.insert("teams".into(), teams);
        assert!(!time_dependent(&st), "a Teams client never fades");
        st.sessions
            .insert("app".into(), sess("Available", "Available", 0, false));
        assert!(time_dependent(&st), "an app session expires and fades");
        st.sessions.remove("app");
        st.preferred = Some(Preferred {
            availability: "Away".into(),
            activity: "Away".into(),
            expires_at: 10,
        });
        assert!(time_dependent(&st), "a preferred presence expires");
    }

    #[test]
    fn aggregation_precedence_dnd_busy_available_away() {
        let mut st = PresenceState::default();
        st.sessions
            .insert("teams".into(), sess("Available", "Available", 0, true));
        st.sessions
            .insert("app".into(), sess("Busy", "InACall", 0, false));
        assert_eq!(
            aggregate(&st, 1, 300_000),
            ("Busy".into(), "InACall".into())
        );
        st.sessions
            .insert("teams".into(), sess("DoNotDisturb", "Presenting", 0, true));
        assert_eq!(aggregate(&st, 1, 300_000).0, "DoNotDisturb");
        st.preferred = Some(Preferred {
            availability: "Available".into(),
            activity: "Available".into(),
            expires_at: 10_000,
        });
        assert_eq!(
            aggregate(&st, 1, 300_000).0,
            "Available",
            "preferred beats sessions"
        );
        st.sessions.clear();
        assert_eq!(
            aggregate(&st, 1, 300_000).0,
            "Offline",
            "preferred needs a session"
        );
    }
}
