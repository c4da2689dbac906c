//! PbxApi presence (spec §4, items 10-13): per-user item lists newest first, SetPresence per
//! contact, monitoring with PresenceState/PresenceUpdate, visibility and on-the-phone on the
//! user's `loc` PBX only.

use crate::pbx::{ConnId, ConnState, Pbx, PresenceItem, Sub, result_of};
use crate::switches::{CallPresence, Unallowed, UnknownSubscription};
use serde::Serialize;
use serde_json::{Value, json};

/// A subscription the visibility rules do not allow (what `MonitorUnallowed` reports).
#[derive(Debug, Clone, Serialize)]
pub struct UnallowedSub {
    /// PBX node of the connection.
    pub node: String,
    /// Watched user's h323.
    pub sip: String,
    /// Watched user's GUID.
    pub guid: String,
}

impl Pbx {
    pub(crate) fn on_pbxapi(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        match mt {
            "SubscribePresence" => self.subscribe(conn, msg),
            "UnsubscribePresence" => self.unsubscribe(conn, msg),
            "SetPresence" => self.set_presence_req(conn, msg),
            "AddAlienCall" => self.add_alien_call(conn, msg),
            "DelAlienCall" => self.del_alien_call(conn, msg),
            "GetNodeInfo" => {
                let mut r = result_of(msg);
                r["name"] = json!("root");
                r["prefix_intl"] = json!("000");
                r["prefix_ntl"] = json!("00");
                r["prefix_subs"] = json!("");
                r["country_code"] = json!("49");
                self.send(conn, r);
            }
            _ => {}
        }
    }

    /// The user an impersonated `PbxApi.<n>` session acts as.
    pub(crate) fn acting_user(&self, conn: ConnId, msg: &Value) -> Option<String> {
        let api = msg["api"].as_str()?;
        self.conns.get(&conn)?.imp.get(api).cloned()
    }

    fn subscribe(&mut self, conn: ConnId, msg: &Value) {
        let sip = msg["sip"].as_str().map(String::from);
        let num = msg["num"].as_str().map(String::from);
        let user = match (&sip, &num) {
            (Some(s), _) => self.find_user_by_sip(s),
            (None, Some(n)) => self.find_user_by_num(n),
            _ => None,
        };
        let api = msg["api"].as_str().unwrap_or("PbxApi").to_string();
        let src = msg.get("src").and_then(|s| s.as_str()).map(String::from);
        let mut r = result_of(msg);
        if user.is_none() && self.switches.unknown_subscription == UnknownSubscription::ResultError
        {
            r["error"] = json!(1);
            r["errorText"] = json!("object not found");
            self.send(conn, r);
            return;
        }
        self.send(conn, r);
        let c = self.conns.get_mut(&conn).expect("conn");
        // A second subscription with the same target and src replaces the first.
        c.subs
            .retain(|_, s| !(s.api == api && s.src == src && s.sip == sip && s.num == num));
        // Another live subscription for the same user on this connection means the service
        // duplicated its state (e.g. re-subscribed after a reconnect without cleaning up).
        let dup = user.as_ref().is_some_and(|g| {
            c.subs
                .values()
                .any(|s| s.api == api && s.user.as_ref() == Some(g))
        });
        let id = c.next_sub;
        c.next_sub += 1;
        if let Some(g) = &user {
            c.subs_by_user.entry(g.clone()).or_default().push(id);
        }
        c.subs.insert(
            id,
            Sub {
                api,
                src,
                sip,
                num,
                user: user.clone(),
                up: false,
                last: None,
            },
        );
        if dup {
            self.violation(format!(
                "conn {conn}: duplicate presence subscription for user {}",
                user.unwrap_or_default()
            ));
        }
        self.refresh_sub(conn, id, true);
    }

    fn unsubscribe(&mut self, conn: ConnId, msg: &Value) {
        let sip = msg["sip"].as_str().map(String::from);
        let num = msg["num"].as_str().map(String::from);
        let api = msg["api"].as_str().unwrap_or("PbxApi").to_string();
        let c = self.conns.get_mut(&conn).expect("conn");
        c.subs.retain(|_, s| {
            !(s.api == api && ((sip.is_some() && s.sip == sip) || (num.is_some() && s.num == num)))
        });
        let r = result_of(msg);
        self.send(conn, r);
    }

    /// Sends PresenceState/PresenceUpdate for one subscription as needed.
    fn refresh_sub(&mut self, conn: ConnId, idx: u64, initial: bool) {
        let c = &self.conns[&conn];
        let node = self.nodes[c.node].cfg.name.clone();
        let Some(s) = c.subs.get(&idx) else {
            return;
        };
        let (api, src) = (s.api.clone(), s.src.clone());
        let user = s.user.clone().and_then(|g| self.users.get(&g).cloned());
        let allowed = user.as_ref().is_some_and(|u| u.visibility.presence);
        let was_up = s.up;
        let with_src = |mut m: Value| {
            if let Some(s) = &src {
                m["src"] = json!(s);
            }
            m
        };
        if !allowed {
            let silent = user.is_some() && self.switches.unallowed == Unallowed::Silent;
            if (initial || was_up) && !silent {
                let (sip, num) = (s.sip.clone(), s.num.clone());
                let mut m = json!({"api":api,"mt":"PresenceState","up":false});
                if let Some(x) = sip {
                    m["sip"] = json!(x);
                }
                if let Some(x) = num {
                    m["num"] = json!(x);
                }
                self.send(conn, with_src(m));
            }
            let s = self.sub_mut(conn, idx);
            s.up = false;
            s.last = None;
            return;
        }
        let u = user.expect("allowed implies user");
        if !was_up {
            let m = json!({"api":api,"mt":"PresenceState","up":true,"sip":u.h323,"num":u.e164,
                "dn":u.dn,"email":u.email()});
            self.send(conn, with_src(m));
        }
        let view = Value::Array(
            self.presence_view(&u.guid, &node)
                .into_iter()
                .map(|p| json!(p))
                .collect(),
        );
        let s = &self.conns[&conn].subs[&idx];
        if !was_up || s.last.as_ref() != Some(&view) {
            let m = json!({"api":api,"mt":"PresenceUpdate","presence":view.clone()});
            self.send(conn, with_src(m));
        }
        let s = self.sub_mut(conn, idx);
        s.up = true;
        s.last = Some(view);
    }

    fn sub_mut(&mut self, conn: ConnId, id: u64) -> &mut Sub {
        self.conns
            .get_mut(&conn)
            .and_then(|c| c.subs.get_mut(&id))
            .expect("subscription")
    }

    /// Pushes PresenceUpdates to every subscription watching `guid` whose view changed.
    pub(crate) fn notify_user(&mut self, guid: &str) {
        let mut targets: Vec<(ConnId, u64)> = vec![];
        for (id, c) in self.conns.iter_mut() {
            if c.state != ConnState::LoggedIn {
                continue;
            }
            if let Some(ids) = c.subs_by_user.get_mut(guid) {
                ids.retain(|i| c.subs.contains_key(i));
                targets.extend(ids.iter().map(|i| (*id, *i)));
            }
        }
        for (c, i) in targets {
            self.refresh_sub(c, i, false);
        }
    }

    pub(crate) fn visibility_changed(&mut self, guid: &str) {
        self.notify_user(guid);
    }

    /// Whether the user currently has a call visible on PBX `node`: PBX calls count on the
    /// user's `loc` only; alien calls on the PBX they were added on.
    pub fn on_the_phone(&self, guid: &str, node: &str) -> bool {
        let Some(u) = self.users.get(guid) else {
            return false;
        };
        (u.loc == node && self.pbx_calls.get(guid).copied().unwrap_or(0) > 0)
            || self
                .alien
                .values()
                .any(|a| a.user == guid && a.node == node)
    }

    /// The presence list of a user as PBX `node` shows it to the App object (newest first,
    /// visibility applied). Empty if presence is not visible.
    pub fn presence_view(&self, guid: &str, node: &str) -> Vec<PresenceItem> {
        let Some(u) = self.users.get(guid) else {
            return vec![];
        };
        if !u.visibility.presence {
            return vec![];
        }
        let mut items = self.presence.get(guid).cloned().unwrap_or_default();
        if u.visibility.otf && self.on_the_phone(guid, node) {
            match &self.switches.call_presence {
                CallPresence::TelActivity => {
                    let note = items
                        .iter()
                        .find(|i| i.contact == "tel:")
                        .map(|i| i.note.clone())
                        .unwrap_or_default();
                    items.retain(|i| i.contact != "tel:");
                    items.insert(0, item("tel:", "on-the-phone", &note));
                }
                CallPresence::SeparateItem(c) => {
                    items.retain(|i| &i.contact != c);
                    items.insert(0, item(c, "on-the-phone", ""));
                }
            }
        }
        if !u.visibility.note {
            for i in &mut items {
                i.note.clear();
            }
        }
        items
    }

    /// The stored presence list of a user (what SetPresence wrote), newest first.
    pub fn stored_presence(&self, guid: &str) -> Vec<PresenceItem> {
        self.presence.get(guid).cloned().unwrap_or_default()
    }

    /// Writes one item: replaces only the item with the same contact and moves it to the front;
    /// an empty activity and note removes it (switch `unset_removes_item`).
    pub fn set_presence(&mut self, guid: &str, contact: &str, activity: &str, note: &str) {
        let list = self.presence.entry(guid.to_string()).or_default();
        list.retain(|i| i.contact != contact);
        if !(activity.is_empty() && note.is_empty() && self.switches.unset_removes_item) {
            list.insert(0, item(contact, activity, note));
        }
        self.notify_user(guid);
    }

    /// Gives a realistic share of users PBX-made items: an `im:` item (myApps online state,
    /// `open` or `closed`) for about half of them and a `tel:` activity for about a fifth, so
    /// connectors see mixed lists from the start.
    pub fn seed_presence(&mut self) {
        const ACT: &[&str] = &["away", "busy", "dnd", "lunch", "vacation"];
        let guids: Vec<String> = self
            .users
            .values()
            .filter(|u| u.pseudo.is_none())
            .map(|u| u.guid.clone())
            .collect();
        for g in guids {
            if self.rng.percent(20) {
                let a = ACT[self.rng.below(ACT.len() as u64) as usize];
                self.set_presence(&g, "tel:", a, "");
            }
            if self.rng.percent(50) {
                let status = if self.rng.percent(50) {
                    "open"
                } else {
                    "closed"
                };
                let list = self.presence.entry(g.clone()).or_default();
                list.retain(|i| i.contact != "im:");
                list.push(PresenceItem {
                    contact: "im:".into(),
                    status: status.into(),
                    activity: String::new(),
                    note: String::new(),
                });
                self.notify_user(&g);
            }
        }
    }

    /// Test hook: "the user" changes their own (`tel:`) presence on the phone.
    pub fn set_user_presence(&mut self, guid: &str, activity: &str, note: &str) -> bool {
        if !self.users.contains_key(guid) {
            return false;
        }
        self.set_presence(guid, "tel:", activity, note);
        true
    }

    fn set_presence_req(&mut self, conn: ConnId, msg: &Value) {
        let mut r = result_of(msg);
        let user = if msg.get("guid").is_some() || msg.get("sip").is_some() {
            self.resolve(msg)
        } else {
            self.acting_user(conn, msg)
        };
        let activity = msg["activity"].as_str().unwrap_or("");
        let Some(guid) = user else {
            r["error"] = json!(1);
            r["errorText"] = json!("user not found");
            self.send(conn, r);
            return;
        };
        if activity == "on-the-phone" && !self.switches.accept_set_on_the_phone {
            r["error"] = json!(3);
            r["errorText"] = json!("on-the-phone can not be set");
            self.send(conn, r);
            return;
        }
        self.send(conn, r);
        let contact = msg["contact"].as_str().unwrap_or("").to_string();
        let note = msg["note"].as_str().unwrap_or("").to_string();
        self.set_presence(&guid, &contact, activity, &note);
    }

    /// Subscriptions currently refused by visibility rules.
    pub fn unallowed(&self) -> Vec<UnallowedSub> {
        let mut v = vec![];
        for c in self.conns.values() {
            for s in c.subs.values() {
                if let Some(u) = s.user.as_ref().and_then(|g| self.users.get(g))
                    && !u.visibility.presence
                {
                    v.push(UnallowedSub {
                        node: self.nodes[c.node].cfg.name.clone(),
                        sip: u.h323.clone(),
                        guid: u.guid.clone(),
                    });
                }
            }
        }
        v
    }

    /// Presence subscriptions the connector holds on `node`: `(src, sip|num)`.
    pub fn subscriptions(&self, node: &str) -> Vec<(Option<String>, String)> {
        self.node_conn(node)
            .and_then(|c| self.conns.get(&c))
            .map(|c| {
                c.subs
                    .values()
                    .map(|s| {
                        (
                            s.src.clone(),
                            s.sip.clone().or(s.num.clone()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn item(contact: &str, activity: &str, note: &str) -> PresenceItem {
    PresenceItem {
        contact: contact.into(),
        status: "open".into(),
        activity: activity.into(),
        note: note.into(),
    }
}
