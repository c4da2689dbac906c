//! PBX configuration objects through PbxAdminApi, as the PBX Manager plugins use them
//! (innovaphone.md §1.2, §8.2; SDK `PbxAdminApi.htm`): `GetAppObjects`, `GetObject`,
//! `UpdateObject` and `DeleteObject` on App objects (pseudo type `app`).
//!
//! Behaviour, as documented and as the plugins rely on it:
//! - Names are unique: an `h323` (SIP) used by another object or a user is refused, so is a
//!   `cn` used by another object.
//! - `UpdateObject` with the `guid` of an object changes only the fields present; without a
//!   `guid` it creates an object and answers with the new `guid`; `guid` `"*"` or `"?"`
//!   addresses the object by `cn` and creates it when missing. An unknown `guid` is an error.
//! - Passwords: `pwd` in clear, or `copyPwd` naming the `h323` of an object whose password is
//!   copied (an unknown name is an error). Passwords are never returned.
//! - `GetAppObjects {uri}` lists the App objects whose URL starts with `uri` (head match),
//!   with `title`, `app` (last URL segment), `url`, `connected`, `guid`, `sip`.
//! - Every node's own App object (the one it dials with) is an object too. Changing it here
//!   does not change how the node dials.
//!
//! Errors are answered like the PBX's other results: `error` (number) and `errorText`.

use crate::pbx::{ConnId, ConnState, Pbx, result_of};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One configuration object (App objects; other pseudo types are stored as given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// Object GUID.
    pub guid: String,
    /// Long Name.
    pub cn: String,
    /// Name (SIP).
    pub h323: String,
    /// Hidden from LDAP.
    pub hide: bool,
    /// Critical object (the plugin marks its objects so).
    pub critical: bool,
    /// Password; never returned by any request.
    #[serde(skip)]
    pub pwd: String,
    /// `pseudo` as given (`{"type":"app","app":{url, checkmarks...}}`).
    pub pseudo: Value,
    /// App rights (`apps`, comma list), if set.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub apps: String,
    /// How many `UpdateObject` requests changed it (0 = as created).
    pub updates: u32,
}

impl Object {
    /// `pseudo.app.url`, if it is an App object.
    pub fn url(&self) -> Option<&str> {
        self.pseudo["app"]["url"].as_str()
    }

    /// The object as `GetObject` answers it (no password).
    fn to_json(&self) -> Value {
        let mut v = json!({"guid": self.guid, "cn": self.cn, "h323": self.h323,
            "hide": self.hide, "critical": self.critical, "pseudo": self.pseudo});
        if !self.apps.is_empty() {
            v["apps"] = json!(self.apps);
        }
        v
    }
}

/// The object store.
#[derive(Debug, Default)]
pub struct Objects {
    by_guid: BTreeMap<String, Object>,
}

fn error(r: &mut Value, code: u32, text: &str) {
    r["error"] = json!(code);
    r["errorText"] = json!(text);
}

impl Pbx {
    /// Makes sure every node's own App object is in the store.
    fn node_objects(&mut self) {
        for n in &self.nodes {
            let a = &n.cfg.app;
            if self.objects.by_guid.contains_key(&a.guid) {
                continue;
            }
            let has = |api: &str| n.cfg.apis.iter().any(|x| x == api);
            let app = json!({"url": a.url, "websocket": true, "pbx": has("PbxApi"),
                "tableusers": has("PbxTableUsers"), "admin": has("PbxAdminApi")});
            self.objects.by_guid.insert(
                a.guid.clone(),
                Object {
                    guid: a.guid.clone(),
                    cn: a.dn.clone(),
                    h323: a.sip.clone(),
                    hide: true,
                    critical: true,
                    pwd: a.password.clone(),
                    pseudo: json!({"type": "app", "app": app}),
                    apps: String::new(),
                    updates: 0,
                },
            );
        }
    }

    /// Every configuration object, by GUID (read-back for tests and the control API).
    pub fn objects(&mut self) -> Vec<Object> {
        self.node_objects();
        self.objects.by_guid.values().cloned().collect()
    }

    /// Whether the object with `h323` has password `pwd` (tests check copies this way, since
    /// passwords are never returned).
    pub fn object_password_is(&mut self, h323: &str, pwd: &str) -> bool {
        self.node_objects();
        self.objects
            .by_guid
            .values()
            .any(|o| o.h323.eq_ignore_ascii_case(h323) && o.pwd == pwd)
    }

    fn object_by(&self, field: &str, value: &str) -> Option<&Object> {
        self.objects.by_guid.values().find(|o| match field {
            "cn" => o.cn == value,
            _ => o.h323.eq_ignore_ascii_case(value),
        })
    }

    pub(crate) fn on_object(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        self.node_objects();
        let mut r = result_of(msg);
        match mt {
            "GetAppObjects" => {
                let uri = msg["uri"].as_str().unwrap_or("");
                let connected: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| {
                        n.conn
                            .and_then(|c| self.conns.get(&c))
                            .is_some_and(|c| c.state == ConnState::LoggedIn)
                    })
                    .map(|n| n.cfg.app.guid.clone())
                    .collect();
                let list: Vec<Value> = self
                    .objects
                    .by_guid
                    .values()
                    .filter(|o| o.pseudo["type"] == "app")
                    .filter(|o| o.url().is_some_and(|u| u.starts_with(uri)))
                    .map(|o| {
                        let url = o.url().unwrap_or("");
                        let app = url.rsplit('/').next().unwrap_or("");
                        json!({"title": o.cn, "app": app, "url": url, "guid": o.guid,
                            "sip": o.h323, "connected": connected.contains(&o.guid)})
                    })
                    .collect();
                r["objects"] = json!(list);
            }
            "GetObject" => {
                let found = match (
                    msg["guid"].as_str(),
                    msg["cn"].as_str(),
                    msg["h323"].as_str(),
                ) {
                    (Some(g), _, _) => self.objects.by_guid.get(g),
                    (None, Some(cn), _) => self.object_by("cn", cn),
                    (None, None, Some(h)) => self.object_by("h323", h),
                    _ => None,
                };
                match found {
                    Some(o) => {
                        if let (Value::Object(dst), Value::Object(src)) = (&mut r, o.to_json()) {
                            dst.extend(src);
                        }
                    }
                    None => error(&mut r, 1, "object not found"),
                }
            }
            "UpdateObject" => {
                if let Err(e) = self.update_object(msg, &mut r) {
                    error(&mut r, 1, &e);
                }
            }
            "DeleteObject" => {
                let guid = msg["guid"].as_str().unwrap_or("");
                if self.objects.by_guid.remove(guid).is_none() {
                    error(&mut r, 1, "object not found");
                }
            }
            _ => return,
        }
        self.send(conn, r);
    }

    fn update_object(&mut self, msg: &Value, r: &mut Value) -> Result<(), String> {
        let by_cn = matches!(msg["guid"].as_str(), Some("*" | "?"));
        let existing = match msg["guid"].as_str() {
            Some(_) if by_cn => msg["cn"]
                .as_str()
                .and_then(|cn| self.object_by("cn", cn))
                .map(|o| o.guid.clone()),
            Some(g) if self.objects.by_guid.contains_key(g) => Some(g.to_string()),
            Some(_) => return Err("object not found".into()),
            None => None,
        };
        let mut obj = match &existing {
            Some(g) => self.objects.by_guid[g].clone(),
            None => Object {
                guid: String::new(),
                cn: String::new(),
                h323: String::new(),
                hide: false,
                critical: false,
                pwd: String::new(),
                pseudo: Value::Null,
                apps: String::new(),
                updates: 0,
            },
        };
        let text = |k: &str| msg[k].as_str().map(str::trim).map(str::to_string);
        if let Some(cn) = text("cn") {
            obj.cn = cn;
        }
        if let Some(h) = text("h323") {
            obj.h323 = h;
        }
        if obj.h323.is_empty() {
            return Err("name (h323) missing".into());
        }
        let me = existing.as_deref().unwrap_or("");
        let clash = |o: &&Object| o.guid != me;
        if self
            .objects
            .by_guid
            .values()
            .filter(clash)
            .any(|o| o.h323.eq_ignore_ascii_case(&obj.h323))
            || self.find_user_by_sip(&obj.h323).is_some()
        {
            return Err(format!("name {} already in use", obj.h323));
        }
        if !obj.cn.is_empty()
            && self
                .objects
                .by_guid
                .values()
                .filter(clash)
                .any(|o| o.cn == obj.cn)
        {
            return Err(format!("long name {} already in use", obj.cn));
        }
        if let Some(b) = msg["hide"].as_bool() {
            obj.hide = b;
        }
        if let Some(b) = msg["critical"].as_bool() {
            obj.critical = b;
        }
        if let Some(a) = text("apps") {
            obj.apps = a;
        }
        if let Some(from) = text("copyPwd").filter(|s| !s.is_empty()) {
            obj.pwd = self
                .object_by("h323", &from)
                .map(|o| o.pwd.clone())
                .ok_or_else(|| format!("copyPwd: no object named {from}"))?;
        } else if let Some(p) = msg["pwd"].as_str() {
            obj.pwd = p.to_string();
        }
        if let Some(p) = msg.get("pseudo").filter(|p| p.is_object()) {
            if p["type"] == "app" && p["app"]["url"].as_str().is_none_or(str::is_empty) {
                return Err("App object without url".into());
            }
            obj.pseudo = p.clone();
        }
        match existing {
            Some(g) => {
                let before = &self.objects.by_guid[&g];
                if *before != obj {
                    obj.updates = before.updates + 1;
                }
                self.objects.by_guid.insert(g, obj);
            }
            None => {
                obj.guid = self.rng.guid();
                r["guid"] = json!(obj.guid);
                self.objects.by_guid.insert(obj.guid.clone(), obj);
            }
        }
        Ok(())
    }
}
