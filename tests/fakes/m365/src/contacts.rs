//! Outlook contacts with the filters Exchange really accepts (graph.md 6.1, item 30).

use serde_json::{Value, json};

use crate::core::{Caller, Fake, GResult, GraphErr, Reply, gerr, ok_json};
use crate::http::{Request, Response};
use crate::odata::{Expr, eval, parse_filter, parse_search};

/// A stored contact (Graph JSON with an `id`).
pub type Contact = Value;

const NAME_PROPS: &[&str] = &["displayName", "givenName", "surname"];
/// Delegated scopes and application roles that may read contacts.
const CONTACT_SCOPES: &[&str] = &["Contacts.Read", "Contacts.ReadWrite"];

fn invalid_filter() -> GraphErr {
    gerr(
        400,
        "ErrorInvalidUrlQueryFilter",
        "The query filter contains one or more invalid nodes.",
    )
}

/// Only `emailAddresses/any(a:a/address eq '..')` and startswith/eq on name properties.
fn check_contact_filter(e: &Expr) -> Result<(), GraphErr> {
    match e {
        Expr::Or(a, b) | Expr::And(a, b) => {
            check_contact_filter(a)?;
            check_contact_filter(b)
        }
        Expr::Any(p, v, body) => {
            if !p.eq_ignore_ascii_case("emailAddresses") {
                return Err(invalid_filter());
            }
            match body.as_ref() {
                Expr::Cmp(path, op, _)
                    if op == "eq" && path.eq_ignore_ascii_case(&format!("{v}/address")) =>
                {
                    Ok(())
                }
                _ => Err(invalid_filter()),
            }
        }
        Expr::StartsWith(p, _) | Expr::Cmp(p, _, _)
            if NAME_PROPS.iter().any(|n| n.eq_ignore_ascii_case(p))
                || p.eq_ignore_ascii_case("companyName") =>
        {
            Ok(())
        }
        _ => Err(invalid_filter()),
    }
}

impl Fake {
    /// Add a contact (Graph JSON) to a user's mailbox; returns its id.
    pub fn add_contact(&mut self, user: &str, mut c: Value) -> Result<String, String> {
        let uid = self.resolve_user(user).map_err(|e| e.message)?;
        let id = format!("AAMkAGI2{}", self.new_guid().replace('-', ""));
        c["id"] = json!(id);
        for k in ["businessPhones", "homePhones", "emailAddresses"] {
            if c.get(k).is_none() {
                c[k] = json!([]);
            }
        }
        if c.get("displayName").is_none() {
            let dn = format!(
                "{} {}",
                c["givenName"].as_str().unwrap_or(""),
                c["surname"].as_str().unwrap_or("")
            )
            .trim()
            .to_string();
            c["displayName"] = json!(dn);
        }
        self.contacts
            .entry(uid.clone())
            .or_default()
            .push(c.clone());
        self.notify_mailbox(&uid, true, &id, "created", c);
        Ok(id)
    }

    pub(crate) fn list_contacts(&mut self, user: &str, req: &Request, caller: &Caller) -> GResult {
        let uid = self.check_mailbox(user, caller, CONTACT_SCOPES, CONTACT_SCOPES)?;
        let filter = match req.q("$filter") {
            Some(f) => {
                let e = parse_filter(&f).map_err(|_| invalid_filter())?;
                if e.startswith_in_any() {
                    return Err(invalid_filter());
                }
                check_contact_filter(&e)?;
                Some(e)
            }
            None => None,
        };
        let search = match req.q("$search") {
            Some(s) => {
                let quoted = if s.trim().starts_with('"') {
                    s.clone()
                } else {
                    format!("\"{}\"", s.trim())
                };
                Some(
                    parse_search(&quoted, false)
                        .map_err(|m| gerr(400, "ErrorInvalidUrlQuery", &m))?,
                )
            }
            None => None,
        };
        let items: Vec<Value> = self
            .contacts
            .get(&uid)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                filter.as_ref().is_none_or(|f| eval(f, c))
                    && search.as_ref().is_none_or(|s| {
                        s.matches(
                            c,
                            &[
                                "displayName",
                                "givenName",
                                "surname",
                                "companyName",
                                "emailAddresses",
                            ],
                        )
                    })
            })
            .collect();
        let body = self.page_contacts(req, items, user)?;
        Ok(Reply::Resp(Response::json(200, &body)))
    }

    fn page_contacts(
        &self,
        req: &Request,
        items: Vec<Value>,
        user: &str,
    ) -> Result<Value, GraphErr> {
        // Reuse the calendar pager ($top/$skip/$select, $skip-based nextLink).
        let mut fake_req = req.clone();
        if fake_req.q("$top").is_none() {
            let sep = if fake_req.target.contains('?') {
                '&'
            } else {
                '?'
            };
            fake_req.target = format!(
                "{}{sep}$top={}",
                fake_req.target, self.cfg.outlook_default_top
            );
        }
        let top = fake_req
            .q("$top")
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(10)
            .max(1);
        let skip = req
            .q("$skip")
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(0);
        let page: Vec<Value> = items.iter().skip(skip).take(top).cloned().collect();
        let mut body = json!({ "value": page });
        if skip + top < items.len() {
            let q: Vec<String> = req
                .query()
                .into_iter()
                .filter(|(k, _)| k != "$skip")
                .map(|(k, v)| format!("{k}={}", crate::http::pct_encode(&v)))
                .collect();
            body["@odata.nextLink"] = json!(format!(
                "{}/v1.0/users/{user}/contacts?{}&$skip={}",
                self.graph_base(),
                q.join("&"),
                skip + top
            ));
        }
        Ok(body)
    }

    pub(crate) fn get_contact(&mut self, user: &str, id: &str, caller: &Caller) -> GResult {
        let uid = self.check_mailbox(user, caller, CONTACT_SCOPES, CONTACT_SCOPES)?;
        let c = self
            .contacts
            .get(&uid)
            .and_then(|v| v.iter().find(|c| c["id"] == id))
            .cloned()
            .ok_or_else(|| {
                gerr(
                    404,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                )
            })?;
        ok_json(c)
    }
}
