//! `/users`, `/users/{id}`, `/users/$count` and `/users/delta` (items 9 and 10).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::core::{Caller, Fake, GResult, GraphErr, Reply, gerr, ok_json};
use crate::http::{Request, Response, pct_encode};
use crate::odata::{eval, parse_filter, parse_search};
use crate::tenant::{USER_SINGLE_ONLY_PROPS, User, UserSpec, generate_users, user_from_spec};
use crate::token::forbidden;

/// A user plus change tracking for delta queries.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The user.
    pub user: User,
    /// Last change sequence.
    pub seq: u64,
    /// Change sequence per property.
    pub prop_seq: BTreeMap<String, u64>,
    /// Creation time (ms), for the replication-delay switch.
    pub created_ms: i64,
}

/// The directory.
#[derive(Default)]
pub struct Directory {
    pub(crate) by_id: BTreeMap<String, UserEntry>,
    upn: HashMap<String, String>,
    pub(crate) tombstones: BTreeMap<String, (String, u64)>,
    pub(crate) seq: u64,
    /// Delta tokens older than this sequence get 410 Gone (injected resync).
    pub(crate) gone_before: u64,
}

impl Directory {
    /// Find by id or UPN (case-insensitive).
    pub fn find(&self, id_or_upn: &str) -> Option<&UserEntry> {
        // Object ids compare case-insensitively.
        self.by_id
            .get(id_or_upn)
            .or_else(|| self.by_id.get(&id_or_upn.to_lowercase()))
            .or_else(|| {
                self.upn
                    .get(&id_or_upn.to_lowercase())
                    .and_then(|id| self.by_id.get(id))
            })
    }
    fn insert(&mut self, u: User, now: i64) {
        self.seq += 1;
        let props = u
            .full_json()
            .keys()
            .map(|k| (k.clone(), self.seq))
            .collect();
        self.upn
            .insert(u.user_principal_name.to_lowercase(), u.id.clone());
        self.tombstones.remove(&u.id);
        self.by_id.insert(
            u.id.clone(),
            UserEntry {
                user: u,
                seq: self.seq,
                prop_seq: props,
                created_ms: now,
            },
        );
    }
    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

const READ_DELEGATED: &[&str] = &[
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const READ_APP: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

fn skiptoken_encode(parts: &[u64]) -> String {
    URL_SAFE_NO_PAD.encode(
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn skiptoken_decode(t: &str) -> Option<Vec<u64>> {
    let s = String::from_utf8(URL_SAFE_NO_PAD.decode(t).ok()?).ok()?;
    s.split(':').map(|x| x.parse().ok()).collect()
}

/// Rebuild a query string with `$skiptoken`/`$deltatoken` replaced.
pub(crate) fn requery(req: &Request, key: &str, value: &str) -> String {
    let mut parts: Vec<String> = req
        .query()
        .into_iter()
        .filter(|(k, _)| k != "$skiptoken" && k != "$deltatoken")
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                pct_encode(&v).replace("%24", "$").replace("%2C", ",")
            )
        })
        .collect();
    parts.push(format!("{key}={value}"));
    parts.join("&")
}

pub(crate) fn eventual(req: &Request) -> bool {
    req.get_header("ConsistencyLevel")
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
}

impl Fake {
    /// Create a user.
    pub fn add_user(&mut self, spec: UserSpec) -> User {
        let u = user_from_spec(spec, &self.domain.clone(), &mut self.rng);
        let now = self.now();
        self.users.insert(u.clone(), now);
        u
    }

    /// Insert a fully specified user.
    pub fn insert_user(&mut self, u: User) {
        let now = self.now();
        self.users.insert(u, now);
    }

    /// Populate `count` realistic users deterministically from `seed` (fast: 10,000 in well under
    /// a second).
    pub fn populate(&mut self, count: usize, seed: u64) -> usize {
        for mut u in generate_users(count, seed, &self.domain.clone()) {
            if self.users.find(&u.user_principal_name).is_some() {
                u.user_principal_name =
                    u.user_principal_name
                        .replacen('@', &format!(".{}@", &u.id[..8]), 1);
            }
            self.users.insert(u, 0);
        }
        self.users.len()
    }

    /// Change user properties (JSON merge of Graph property names) — shows up in delta.
    pub fn update_user(&mut self, id: &str, patch: &Value) -> bool {
        let Some(uid) = self.users.find(id).map(|e| e.user.id.clone()) else {
            return false;
        };
        let entry = self.users.by_id.get(&uid).cloned().expect("user");
        let before = entry.user.full_json();
        let mut full = serde_json::to_value(&entry.user).unwrap_or_default();
        if let (Some(m), Some(p)) = (full.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                m.insert(k.clone(), v.clone());
            }
        }
        let Ok(mut u) = serde_json::from_value::<User>(full) else {
            return false;
        };
        if let Some(t) = patch.get("teams").and_then(Value::as_bool) {
            u.teams_licensed = t;
        }
        self.users.seq += 1;
        let seq = self.users.seq;
        let after = u.full_json();
        let mut e = entry;
        for (k, v) in &after {
            if before.get(k) != Some(v) {
                e.prop_seq.insert(k.clone(), seq);
            }
        }
        e.seq = seq;
        e.user = u;
        self.users.by_id.insert(uid.clone(), e);
        self.notify_user(&uid, "updated");
        true
    }

    /// Delete a user: soft (`@removed.reason = changed`) or permanent (`deleted`).
    pub fn delete_user(&mut self, id: &str, permanent: bool) -> bool {
        let Some(uid) = self.users.find(id).map(|e| e.user.id.clone()) else {
            return false;
        };
        if let Some(e) = self.users.by_id.remove(&uid) {
            self.users
                .upn
                .remove(&e.user.user_principal_name.to_lowercase());
        }
        self.users.seq += 1;
        let reason = if permanent { "deleted" } else { "changed" };
        self.users
            .tombstones
            .insert(uid.clone(), (reason.into(), self.users.seq));
        self.notify_user(&uid, "deleted");
        true
    }

    /// Make every existing delta token answer 410 Gone (full resync required).
    pub fn invalidate_delta_tokens(&mut self) {
        // Tokens issued from now on carry a sequence >= gone_before.
        self.users.seq += 1;
        self.users.gone_before = self.users.seq;
    }

    fn check_user_read(&self, caller: &Caller) -> Result<(), GraphErr> {
        if caller.has(READ_DELEGATED, READ_APP) {
            Ok(())
        } else {
            Err(forbidden(true, caller))
        }
    }

    fn parse_select(req: &Request) -> Result<Option<Vec<String>>, GraphErr> {
        let Some(sel) = req.q("$select") else {
            return Ok(None);
        };
        let props: Vec<String> = sel
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Some(props))
    }

    pub(crate) fn list_users(&mut self, req: &Request, caller: &Caller) -> GResult {
        self.check_user_read(caller)?;
        if req.q("$skip").is_some() {
            return Err(gerr(
                400,
                "Request_UnsupportedQuery",
                "'$skip' is not supported by the service.",
            ));
        }
        let select = Self::parse_select(req)?;
        if let Some(sel) = &select
            && let Some(p) = sel.iter().find(|p| {
                USER_SINGLE_ONLY_PROPS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(p))
            })
        {
            return Err(gerr(
                501,
                "NotImplemented",
                &format!(
                    "This operation target is not yet supported. Property '{p}' can only be selected for a single user."
                ),
            ));
        }
        let count = req.q("$count").is_some_and(|c| c == "true");
        let ev = eventual(req);
        if count && !ev {
            return Err(gerr(
                400,
                "Request_BadRequest",
                "$count is not currently supported without the header 'ConsistencyLevel: eventual'.",
            ));
        }
        let search = match req.q("$search") {
            Some(s) => {
                if !ev {
                    return Err(gerr(
                        400,
                        "Request_UnsupportedQuery",
                        "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                    ));
                }
                if s.contains('&') {
                    return Err(gerr(
                        400,
                        "Request_UnsupportedQuery",
                        "Unsupported character '&' in $search.",
                    ));
                }
                Some(
                    parse_search(&s, true)
                        .map_err(|m| gerr(400, "Request_UnsupportedQuery", &m))?,
                )
            }
            None => None,
        };
        let filter = match req.q("$filter") {
            Some(f) => {
                let e = parse_filter(&f)
                    .map_err(|_| gerr(400, "Request_UnsupportedQuery", "Invalid filter clause"))?;
                if e.is_advanced() && !(ev && count) {
                    return Err(gerr(
                        400,
                        "Request_UnsupportedQuery",
                        "Unsupported Query. Advanced query operators require 'ConsistencyLevel: eventual' and '$count=true'.",
                    ));
                }
                Some(e)
            }
            None => None,
        };
        let orderby = req.q("$orderby");
        if orderby.is_some() && filter.is_some() && !(ev && count) {
            return Err(gerr(
                400,
                "Request_UnsupportedQuery",
                "Sorting with $filter requires advanced query parameters.",
            ));
        }
        let top = match req.q("$top") {
            Some(t) => {
                let n: usize = t
                    .parse()
                    .map_err(|_| gerr(400, "Request_BadRequest", "Invalid page size specified."))?;
                if n == 0 || n > self.cfg.users_max_top {
                    return Err(gerr(
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Invalid page size specified: '{n}'. Must be between 1 and {}.",
                            self.cfg.users_max_top
                        ),
                    ));
                }
                n
            }
            None => self.cfg.users_default_top,
        };
        let offset = match req.q("$skiptoken") {
            Some(t) => skiptoken_decode(&t)
                .and_then(|v| v.first().copied())
                .ok_or_else(|| gerr(400, "Request_BadRequest", "Invalid skip token."))?
                as usize,
            None => 0,
        };
        let now = self.now();
        let delay = self.cfg.directory_replication_delay_ms;
        let mut matched: Vec<&UserEntry> = self
            .users
            .by_id
            .values()
            .filter(|e| {
                // Directory replication delay: new users are missing for a while (switch).
                if now - e.created_ms < delay {
                    return false;
                }
                let full = Value::Object(e.user.full_json());
                filter.as_ref().is_none_or(|f| eval(f, &full))
                    && search
                        .as_ref()
                        .is_none_or(|s| s.matches(&full, &["displayName"]))
            })
            .collect();
        if let Some(ob) = &orderby {
            let desc = ob.ends_with(" desc");
            let key = ob.split(' ').next().unwrap_or("displayName").to_string();
            matched.sort_by_key(|e| {
                e.user
                    .full_json()
                    .get(&key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_lowercase()
            });
            if desc {
                matched.reverse();
            }
        }
        let total = matched.len();
        let page: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(top)
            .map(|e| e.user.to_json(select.as_deref()))
            .collect();
        let base = self.graph_base();
        let ctx = match &select {
            Some(s) => format!("{base}/v1.0/$metadata#users({})", s.join(",")),
            None => format!("{base}/v1.0/$metadata#users"),
        };
        let mut body = Map::new();
        body.insert("@odata.context".into(), json!(ctx));
        if count {
            body.insert("@odata.count".into(), json!(total));
        }
        if offset + top < total {
            let q = requery(
                req,
                "$skiptoken",
                &skiptoken_encode(&[(offset + top) as u64]),
            );
            body.insert(
                "@odata.nextLink".into(),
                json!(format!("{base}/v1.0/users?{q}")),
            );
        }
        body.insert("value".into(), Value::Array(page));
        ok_json(Value::Object(body))
    }

    pub(crate) fn count_users(&mut self, req: &Request, caller: &Caller) -> GResult {
        self.check_user_read(caller)?;
        if !eventual(req) {
            return Err(gerr(
                400,
                "Request_BadRequest",
                "$count is not currently supported without the header 'ConsistencyLevel: eventual'.",
            ));
        }
        Ok(Reply::Resp(Response::text(
            200,
            &self.users.len().to_string(),
        )))
    }

    pub(crate) fn get_user(&mut self, id: &str, req: &Request, caller: &Caller) -> GResult {
        // A user may always read themselves (User.Read).
        let own = caller.user_id.as_deref() == Some(id)
            || self
                .users
                .find(id)
                .map(|e| Some(e.user.id.as_str()) == caller.user_id.as_deref())
                .unwrap_or(false);
        if !own {
            self.check_user_read(caller)?;
        }
        let uid = self.resolve_user(id)?;
        let select = Self::parse_select(req)?;
        let mut v = self.users.by_id[&uid].user.to_json(select.as_deref());
        v["@odata.context"] = json!(format!(
            "{}/v1.0/$metadata#users/$entity",
            self.graph_base()
        ));
        ok_json(v)
    }

    pub(crate) fn users_delta(&mut self, req: &Request, caller: &Caller) -> GResult {
        self.check_user_read(caller)?;
        for bad in ["$top", "$expand", "$orderby"] {
            if req.q(bad).is_some() {
                return Err(gerr(
                    400,
                    "Request_UnsupportedQuery",
                    &format!("'{bad}' is not supported with delta query on users."),
                ));
            }
        }
        let select = Self::parse_select(req)?;
        let id_filter: Option<Vec<String>> = match req.q("$filter") {
            Some(f) => {
                let ids: Vec<String> = f
                    .split(" or ")
                    .map(|c| {
                        let c = c.trim();
                        c.strip_prefix("id eq '")
                            .and_then(|r| r.strip_suffix('\''))
                            .map(str::to_string)
                            .ok_or(())
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        gerr(
                            400,
                            "Request_UnsupportedQuery",
                            "Only 'id eq' filters are supported with delta query on users.",
                        )
                    })?;
                if ids.len() > 50 {
                    return Err(gerr(
                        400,
                        "Request_UnsupportedQuery",
                        "Too many ids in delta filter (max 50).",
                    ));
                }
                Some(ids)
            }
            None => None,
        };
        let base = self.graph_base();
        let now = self.now();
        let minimal = req
            .get_header("Prefer")
            .is_some_and(|p| p.contains("return=minimal"));
        // (since, offset, snapshot, issued_ms)
        let (since, offset, snapshot) = if let Some(dt) = req.q("$deltatoken") {
            if dt == "latest" {
                let tok = skiptoken_encode(&[self.users.seq, now as u64]);
                return ok_json(
                    json!({"@odata.context": format!("{base}/v1.0/$metadata#users"), "@odata.deltaLink": format!("{base}/v1.0/users/delta?$deltatoken={tok}"), "value": []}),
                );
            }
            let v = skiptoken_decode(&dt)
                .filter(|v| v.len() == 2)
                .ok_or_else(|| {
                    gerr(
                        400,
                        "syncStateNotFound",
                        "The sync state is not found or is invalid.",
                    )
                })?;
            if v[0] < self.users.gone_before {
                let mut e = gerr(
                    410,
                    "syncStateInvalid",
                    "The sync state is no longer valid; a full resync is required.",
                );
                e.headers
                    .push(("Location".into(), format!("{base}/v1.0/users/delta")));
                return Err(e);
            }
            if now - v[1] as i64 > self.cfg.delta_token_lifetime_ms {
                return Err(gerr(
                    400,
                    "syncStateNotFound",
                    "The delta token has expired.",
                ));
            }
            (v[0], 0u64, self.users.seq)
        } else if let Some(st) = req.q("$skiptoken") {
            let v = skiptoken_decode(&st)
                .filter(|v| v.len() == 3)
                .ok_or_else(|| gerr(400, "Request_BadRequest", "Invalid skip token."))?;
            (v[0], v[1], v[2])
        } else {
            (0, 0, self.users.seq)
        };
        let sel_keys: Option<Vec<String>> = select.clone();
        let relevant = |e: &UserEntry| -> bool {
            match &sel_keys {
                Some(keys) => e.prop_seq.iter().any(|(k, s)| {
                    *s > since
                        && *s <= snapshot
                        && (k == "id" || keys.iter().any(|x| x.eq_ignore_ascii_case(k)))
                }),
                None => e.seq > since && e.seq <= snapshot,
            }
        };
        let mut items: Vec<Value> = vec![];
        for e in self.users.by_id.values() {
            if id_filter
                .as_ref()
                .is_some_and(|ids| !ids.contains(&e.user.id))
                || !relevant(e)
            {
                continue;
            }
            let mut v = e.user.to_json(select.as_deref());
            if minimal
                && since > 0
                && let Some(m) = v.as_object_mut()
            {
                m.retain(|k, _| k == "id" || e.prop_seq.get(k).is_some_and(|s| *s > since));
            }
            items.push(v);
        }
        if since > 0 {
            for (id, (reason, s)) in &self.users.tombstones {
                if *s > since
                    && *s <= snapshot
                    && id_filter.as_ref().is_none_or(|ids| ids.contains(id))
                {
                    items.push(json!({"id": id, "@removed": {"reason": reason}}));
                }
            }
        }
        let page = self.cfg.users_default_top;
        let off = offset as usize;
        let chunk: Vec<Value> = items.iter().skip(off).take(page).cloned().collect();
        let mut body =
            json!({"@odata.context": format!("{base}/v1.0/$metadata#users"), "value": chunk});
        if off + page < items.len() {
            let tok = skiptoken_encode(&[since, (off + page) as u64, snapshot]);
            body["@odata.nextLink"] = json!(format!(
                "{base}/v1.0/users/delta?{}",
                requery(req, "$skiptoken", &tok)
            ));
        } else {
            let tok = skiptoken_encode(&[snapshot, now as u64]);
            body["@odata.deltaLink"] = json!(format!(
                "{base}/v1.0/users/delta?{}",
                requery(req, "$deltatoken", &tok)
            ));
        }
        let mut r = Response::json(200, &body);
        if minimal {
            r.headers
                .push(("Preference-Applied".into(), "return=minimal".into()));
        }
        Ok(Reply::Resp(r))
    }
}
