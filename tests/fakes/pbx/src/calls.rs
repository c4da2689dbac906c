//! Call state (spec §5, items 13 and 14): PBX calls started by a test hook, alien calls added by
//! the connector (`AddAlienCall`/`DelAlienCall`, normally through a PbxImpersonation session).

use crate::pbx::{AlienCall, ConnId, Pbx, result_of};
use crate::switches::AlienNonLocal;
use serde_json::{Value, json};

impl Pbx {
    /// Test hook: the user starts a PBX call (shows on-the-phone on the user's `loc` PBX only).
    pub fn start_call(&mut self, guid: &str) -> bool {
        if !self.users.contains_key(guid) {
            return false;
        }
        *self.pbx_calls.entry(guid.to_string()).or_default() += 1;
        self.notify_user(guid);
        true
    }

    /// Test hook: the user's PBX call ends.
    pub fn end_call(&mut self, guid: &str) -> bool {
        let Some(n) = self.pbx_calls.get_mut(guid) else {
            return false;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.pbx_calls.remove(guid);
        }
        self.notify_user(guid);
        true
    }

    /// Alien calls currently active.
    pub fn alien_calls(&self) -> Vec<AlienCall> {
        self.alien.values().cloned().collect()
    }

    pub(crate) fn add_alien_call(&mut self, conn: ConnId, msg: &Value) {
        let mut r = result_of(msg);
        let user = match self.acting_user(conn, msg) {
            Some(u) => Some(u),
            // The documented request has no user field: on the App object's own PbxApi there
            // is no user unless the switch accepts the undocumented sip/guid fields.
            None if self.switches.alien_accepts_user_fields => self.resolve(msg),
            None => None,
        };
        let Some(guid) = user else {
            r["error"] = json!(1);
            r["errorText"] = json!("no user");
            self.send(conn, r);
            return;
        };
        let node = self.nodes[self.conns[&conn].node].cfg.name.clone();
        let local = self.users.get(&guid).is_some_and(|u| u.loc == node);
        if !local {
            match self.switches.alien_non_local {
                AlienNonLocal::Reject => {
                    r["error"] = json!(2);
                    r["errorText"] = json!("user not local");
                    self.send(conn, r);
                    return;
                }
                AlienNonLocal::Ignore => return,
                AlienNonLocal::Accept => {}
            }
        }
        let id = self.next_alien;
        self.next_alien += 1;
        let at_ms = self.now();
        self.alien.insert(
            id,
            AlienCall {
                id,
                conn,
                node,
                user: guid.clone(),
                at_ms,
            },
        );
        r["id"] = json!(id);
        self.send(conn, r);
        self.notify_user(&guid);
    }

    pub(crate) fn del_alien_call(&mut self, conn: ConnId, msg: &Value) {
        let mut r = result_of(msg);
        let id = msg["id"].as_u64().unwrap_or(0);
        match self.alien.get(&id) {
            Some(a) if a.conn == conn => {
                let a = self.alien.remove(&id).expect("present");
                self.send(conn, r);
                self.notify_user(&a.user);
            }
            _ => {
                r["error"] = json!(1);
                r["errorText"] = json!("call not found");
                self.send(conn, r);
            }
        }
    }
}
