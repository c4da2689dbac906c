//! Licensing through PbxAdminApi (spec §6, item 15): `CheckAppLic` with head match and pool
//! limits, `GetAppLics`, `GetPbxLicenses`, test mode.

use crate::pbx::{ConnId, Licence, LicenceCheck, Pbx, result_of};
use serde_json::{Value, json};
use std::collections::HashSet;

/// `App(x)` → (`App`, `x`); a bare name counts as `App`.
fn split(lic: &str) -> (&str, &str) {
    match (lic.find('('), lic.strip_suffix(')')) {
        (Some(i), Some(s)) => (&lic[..i], &s[i + 1..]),
        _ => ("App", lic),
    }
}

impl Pbx {
    /// Installs (or changes the count of) a licence pool.
    pub fn set_licence(&mut self, name: &str, count: u32) {
        match self.licences.iter_mut().find(|l| l.name == name) {
            Some(l) => l.count = count,
            None => self.licences.push(Licence {
                name: name.into(),
                count,
            }),
        }
        self.lic_cache.clear();
    }

    /// Installed licences.
    pub fn licences(&self) -> &[Licence] {
        &self.licences
    }

    /// Assigns (`true`) or removes a licence of a user at runtime.
    pub fn assign_licence(&mut self, guid: &str, lic: &str, assign: bool) -> bool {
        let Some(mut u) = self.users.get(guid).cloned() else {
            return false;
        };
        u.lics.retain(|l| l != lic);
        self.lic_order.remove(&(guid.to_string(), lic.to_string()));
        if assign {
            u.lics.push(lic.into());
        }
        self.upsert_user(u);
        true
    }

    /// Users holding a pool slot of licence `name`: the first `count` assignees in assignment
    /// order (users beyond the pool size are unlicensed).
    fn holders(&mut self, name: &str) -> &HashSet<String> {
        if !self.lic_cache.contains_key(name) {
            let count = self
                .licences
                .iter()
                .find(|l| l.name == name)
                .map_or(0, |l| l.count) as usize;
            let mut v: Vec<(u64, String)> = self
                .lic_order
                .iter()
                .filter(|((g, l), _)| l == name && self.users.contains_key(g))
                .map(|((g, _), seq)| (*seq, g.clone()))
                .collect();
            v.sort();
            let set = v.into_iter().take(count).map(|(_, g)| g).collect();
            self.lic_cache.insert(name.to_string(), set);
        }
        &self.lic_cache[name]
    }

    /// Whether user `guid` is licensed for `lic` (e.g. `App(innovaphone-microsoft365)`): test
    /// mode, or an assigned licence of the same kind whose name is a head of the requested app
    /// name and whose pool still has room for this user.
    pub fn is_licensed(&mut self, guid: &str, lic: &str) -> bool {
        if self.switches.testmode {
            return self.users.contains_key(guid);
        }
        let (kind, app) = split(lic);
        let Some(u) = self.users.get(guid) else {
            return false;
        };
        let candidates: Vec<String> = u
            .lics
            .iter()
            .filter(|l| {
                let (k, a) = split(l);
                k == kind && app.starts_with(a)
            })
            .cloned()
            .collect();
        candidates.iter().any(|l| self.holders(l).contains(guid))
    }

    /// CheckAppLic requests seen.
    pub fn licence_checks(&self) -> &[LicenceCheck] {
        &self.licence_checks
    }

    pub(crate) fn on_admin(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        let mut r = result_of(msg);
        match mt {
            "CheckAppLic" => {
                let lic = msg["lic"].as_str().unwrap_or("");
                let ok = match self.resolve(msg) {
                    Some(g) => self.is_licensed(&g, lic),
                    None => false,
                };
                r["ok"] = json!(ok);
                let node = self.nodes[self.conns[&conn].node].cfg.name.clone();
                let at_ms = self.now();
                self.licence_checks.push(LicenceCheck {
                    node,
                    request: msg.clone(),
                    ok,
                    at_ms,
                });
            }
            "GetAppLics" => {
                if !self.switches.testmode {
                    let lics: Vec<Value> = self
                        .licences
                        .clone()
                        .iter()
                        .filter(|l| l.name.starts_with("App("))
                        .map(|l| {
                            let used = self.holders(&l.name).len();
                            json!({"name": l.name, "version": "13", "count": l.count.to_string(),
                                "used": used.to_string(), "local": l.count.to_string(),
                                "slaves": "0", "key": ""})
                        })
                        .collect();
                    r["lic"] = json!(lics);
                }
            }
            "GetPbxLicenses" => {
                if !self.switches.testmode {
                    let users = self.users.values().filter(|u| u.pseudo.is_none()).count();
                    r["lic"] = json!([{"name":"Port","count":"100000","local":"100000",
                        "used": users.to_string(),"slaves":"0","version":"14"}]);
                }
            }
            "GetAppObjects" | "GetObject" | "UpdateObject" | "DeleteObject" => {
                return self.on_object(conn, mt, msg);
            }
            "MonitorUnallowed" => {
                // Response format is [UNKNOWN]; we list the refused watches.
                let list: Vec<Value> = self
                    .unallowed()
                    .into_iter()
                    .map(|u| json!({"sip": u.sip, "guid": u.guid}))
                    .collect();
                r["unallowed"] = json!(list);
            }
            _ => return,
        }
        self.send(conn, r);
    }
}
