//! PbxTableUsers replication (spec §3, items 8 and 9): ReplicateStart → StartResult → Next /
//! NextResult loop ending with a NextResult without `columns`, live Add/Update/Del pushes (also
//! during the initial load), resume by `guid`+`usn`, column and `pseudo` filters.

use crate::pbx::{ConnId, ConnState, Pbx, Repl, result_of};
use crate::users::User;
use serde_json::{Value, json};
use std::collections::VecDeque;

impl Pbx {
    pub(crate) fn on_replication(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        match mt {
            "ReplicateStart" => self.replicate_start(conn, msg),
            "ReplicateNext" => self.replicate_next(conn, msg),
            // Replicator-side changes need `update` columns; the connector never writes users.
            _ => {}
        }
    }

    /// Replaces the database GUID: the next resume with the old GUID gets a full reload.
    pub fn reset_db_guid(&mut self) {
        self.db_guid = self.rng.guid();
    }

    /// Current database GUID and highest usn.
    pub fn db_position(&self) -> (String, u64) {
        (self.db_guid.clone(), self.usn)
    }

    fn replicate_start(&mut self, conn: ConnId, msg: &Value) {
        let columns: Vec<String> = msg["columns"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let pseudo: Option<Vec<String>> = msg["pseudo"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        });
        let filter = |u: &User| match &pseudo {
            None => u.pseudo.is_none(),
            Some(types) => types.iter().any(|t| t == u.pseudo_type()),
        };
        let resume = msg["guid"].as_str() == Some(self.db_guid.as_str());
        let since = if resume {
            msg["usn"].as_u64().unwrap_or(0)
        } else {
            0
        };
        let mut rows: Vec<&User> = self
            .users
            .values()
            .filter(|u| filter(u) && u.usn > since)
            .collect();
        rows.sort_by_key(|u| u.usn);
        let pending: VecDeque<String> = rows.iter().map(|u| u.guid.clone()).collect();
        let deleted: Vec<String> = if resume {
            self.tombstones
                .iter()
                .filter(|(usn, _, t)| {
                    *usn > since
                        && match &pseudo {
                            None => t.is_empty(),
                            Some(types) => types.iter().any(|x| x == t),
                        }
                })
                .map(|(_, g, _)| g.clone())
                .collect()
        } else {
            vec![]
        };
        let src = msg.get("src").and_then(|s| s.as_str()).map(String::from);
        let mut r = result_of(msg);
        r["guid"] = json!(self.db_guid);
        r["usn"] = json!(self.usn);
        r["columns"] = msg["columns"].clone();
        self.send(conn, r);
        // Rows deleted since the resume point are reported before the loop starts.
        for g in deleted {
            let mut m = json!({"api":"PbxTableUsers","mt":"ReplicateDel","columns":{"guid": g}});
            if let Some(s) = &src {
                m["src"] = json!(s);
            }
            self.send(conn, m);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.repl = Some(Repl {
                src,
                columns,
                pseudo,
                pending,
                done: false,
            });
        }
    }

    fn replicate_next(&mut self, conn: ConnId, msg: &Value) {
        let mut r = result_of(msg);
        loop {
            let Some(repl) = self.conns.get_mut(&conn).and_then(|c| c.repl.as_mut()) else {
                // Next without Start: answered without columns, like an empty table.
                self.send(conn, r);
                return;
            };
            match repl.pending.pop_front() {
                None => {
                    repl.done = true;
                    self.send(conn, r);
                    return;
                }
                Some(g) => {
                    let Some(u) = self.users.get(&g) else {
                        continue;
                    };
                    r["usn"] = json!(u.usn);
                    r["columns"] = u.row(&repl.columns);
                    self.send(conn, r);
                    return;
                }
            }
        }
    }

    fn repl_targets(&self, u: &User) -> Vec<(ConnId, Option<String>, Vec<String>, bool)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.state == ConnState::LoggedIn)
            .filter_map(|(id, c)| {
                let r = c.repl.as_ref()?;
                let matches = match &r.pseudo {
                    None => u.pseudo.is_none(),
                    Some(t) => t.iter().any(|x| x == u.pseudo_type()),
                };
                let pending = r.pending.contains(&u.guid);
                matches.then(|| (*id, r.src.clone(), r.columns.clone(), pending))
            })
            .collect()
    }

    pub(crate) fn replicate_change(&mut self, guid: &str, existed: bool) {
        let Some(u) = self.users.get(guid).cloned() else {
            return;
        };
        for (conn, src, cols, pending) in self.repl_targets(&u) {
            // A row still queued for the initial load goes out there with its new content.
            if pending && existed {
                continue;
            }
            let mt = if existed {
                "ReplicateUpdate"
            } else {
                "ReplicateAdd"
            };
            let mut m = json!({"api":"PbxTableUsers","mt":mt,"usn":u.usn,"columns":u.row(&cols)});
            if self.switches.src_on_replication_pushes
                && let Some(s) = src
            {
                m["src"] = json!(s);
            }
            self.send(conn, m);
        }
    }

    pub(crate) fn replicate_delete(&mut self, u: &User) {
        for (conn, src, _, pending) in self.repl_targets(u) {
            if pending && let Some(r) = self.conns.get_mut(&conn).and_then(|c| c.repl.as_mut()) {
                r.pending.retain(|g| g != &u.guid);
            }
            let mut m =
                json!({"api":"PbxTableUsers","mt":"ReplicateDel","columns":{"guid":u.guid}});
            if self.switches.src_on_replication_pushes
                && let Some(s) = src
            {
                m["src"] = json!(s);
            }
            self.send(conn, m);
        }
    }
}
