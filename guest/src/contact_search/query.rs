//! What a search asks Graph and what comes back (graph.md §6): the requests, the prefix
//! matching a user expects, ranking, and numbers fit for dialling.

use serde_json::{Value, json};

use crate::event::{Header, HttpRequest};
use crate::graph::{api, form};

/// Contact properties read from Outlook.
const CONTACT_SELECT: &str = "displayName,givenName,surname,emailAddresses,businessPhones,mobilePhone,homePhones,companyName";
/// User properties read from the directory.
const USER_SELECT: &str =
    "id,displayName,givenName,surname,mail,businessPhones,mobilePhone,companyName";
/// One page is plenty: results are capped far below this.
const PAGE: u32 = 100;
/// Directory page (graph.md §6.2).
const DIRECTORY_PAGE: u32 = 25;

/// The words of a query, lower case; empty when there is nothing to search for.
pub fn words(query: &str) -> Vec<String> {
    query
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// An OData string literal: single quotes doubled.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `GET /users/{id}/contacts` for contacts whose given name, surname, display name or company
/// starts with `word`. Only `startswith` on these scalar properties: Exchange rejects
/// `startswith` inside `emailAddresses/any()` (graph.md §6.1).
pub fn contacts_request(
    graph_url: &str,
    token: &str,
    user: &str,
    word: &str,
    timeout_ms: u32,
) -> HttpRequest {
    let w = literal(word);
    let filter = ["givenName", "surname", "displayName", "companyName"]
        .iter()
        .map(|p| format!("startswith({p},{w})"))
        .collect::<Vec<_>>()
        .join(" or ");
    let url = format!(
        "{}/users/{}/contacts?$select={CONTACT_SELECT}&$top={PAGE}&$filter={}",
        api::root(graph_url),
        form::encode(user),
        form::encode(&filter)
    );
    let mut req = api::request("GET", url, token, None);
    req.timeout_ms = timeout_ms;
    req
}

/// `GET /users?$search=...` over display name and mail (graph.md §6.2): needs
/// `ConsistencyLevel: eventual` and `$count=true`; `"`, `\` and `&` cannot be searched for.
pub fn directory_request(
    graph_url: &str,
    token: &str,
    word: &str,
    timeout_ms: u32,
) -> Option<HttpRequest> {
    let clean: String = word
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '&'))
        .collect();
    if clean.is_empty() {
        return None;
    }
    let search = format!("\"displayName:{clean}\" OR \"mail:{clean}\"");
    let url = format!(
        "{}/users?$search={}&$select={USER_SELECT}&$top={DIRECTORY_PAGE}&$count=true",
        api::root(graph_url),
        form::encode(&search)
    );
    let mut req = api::request("GET", url, token, None);
    req.headers
        .push(Header::new("ConsistencyLevel", "eventual"));
    req.timeout_ms = timeout_ms;
    Some(req)
}

/// One result, as the Phone App shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Found {
    /// Display name.
    pub dn: String,
    /// Given name.
    pub given: String,
    /// Surname.
    pub surname: String,
    /// Company.
    pub company: String,
    /// Business numbers, dialable.
    pub business: Vec<String>,
    /// Mobile numbers, dialable.
    pub mobile: Vec<String>,
    /// Home numbers, dialable.
    pub home: Vec<String>,
    /// E-mail addresses.
    pub email: Vec<String>,
}

impl Found {
    /// The `contact` object of a `SearchInfo` (innovaphone.md §7.2: phone fields are arrays).
    pub fn contact(&self) -> Value {
        json!({
            "displayname": self.dn,
            "givenname": self.given,
            "sn": self.surname,
            "company": self.company,
            "telephonenumber": self.business,
            "mobile": self.mobile,
            "homephone": self.home,
            "email": self.email,
        })
    }

    /// Whether every query word is the start of a word of the name or company.
    pub fn matches(&self, words: &[String]) -> bool {
        let hay: Vec<String> = [&self.dn, &self.given, &self.surname, &self.company]
            .iter()
            .flat_map(|s| self::words(s))
            .collect();
        words
            .iter()
            .all(|w| hay.iter().any(|h| h.starts_with(w.as_str())))
    }

    /// Lower is better: the whole query starting the name first, then a name word, then
    /// a company match.
    pub fn rank(&self, query: &str) -> u8 {
        let q = query.trim().to_lowercase();
        let first = words(query).into_iter().next().unwrap_or_default();
        let starts = |s: &str| s.to_lowercase().starts_with(&first);
        if self.dn.to_lowercase().starts_with(&q) {
            0
        } else if starts(&self.given)
            || starts(&self.surname)
            || words(&self.dn).iter().any(|w| w.starts_with(&first))
        {
            1
        } else {
            2
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn numbers<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in values.filter_map(Value::as_str).filter_map(dialable) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A number as the phone dials it: `+` and digits only. The `(0)` of `+49 (0)7031 …` is not
/// dialled from abroad, and an extension suffix (`x12`, `ext. 12`) cannot be dialled at all.
pub fn dialable(raw: &str) -> Option<String> {
    let mut s = raw.trim().to_lowercase();
    if let Some(rest) = s.strip_prefix("tel:") {
        s = rest.to_string();
    }
    if let Some(i) = s.find(['x', 'e', ';']) {
        s.truncate(i);
    }
    if s.trim_start().starts_with('+') {
        s = s.replace("(0)", "");
    }
    let plus = s.trim_start().starts_with('+');
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(if plus { format!("+{digits}") } else { digits })
}

/// An Outlook contact (graph.md §6.1).
pub fn from_contact(c: &Value) -> Found {
    let mut dn = text(c, "displayName");
    let (given, surname) = (text(c, "givenName"), text(c, "surname"));
    if dn.is_empty() {
        dn = format!("{given} {surname}").trim().to_string();
    }
    Found {
        dn,
        given,
        surname,
        company: text(c, "companyName"),
        business: numbers(array(c, "businessPhones")),
        mobile: numbers(c.get("mobilePhone").into_iter()),
        home: numbers(array(c, "homePhones")),
        email: array(c, "emailAddresses")
            .filter_map(|e| e.get("address").and_then(Value::as_str))
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// A directory user (graph.md §6.2).
pub fn from_user(u: &Value) -> Found {
    Found {
        dn: text(u, "displayName"),
        given: text(u, "givenName"),
        surname: text(u, "surname"),
        company: text(u, "companyName"),
        business: numbers(array(u, "businessPhones")),
        mobile: numbers(u.get("mobilePhone").into_iter()),
        home: Vec::new(),
        email: u
            .get("mail")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(|m| vec![m.to_string()])
            .unwrap_or_default(),
    }
}

/// The entries of a collection response (`value`).
pub fn values(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("value").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// What the user sees: only entries matching every word, best first, then by name, each
/// person once, at most `max`.
pub fn select(found: Vec<Found>, query: &str, max: usize) -> Vec<Found> {
    let words = words(query);
    let mut list: Vec<(u8, String, Found)> = found
        .into_iter()
        .filter(|f| !f.dn.is_empty() && f.matches(&words))
        .map(|f| (f.rank(query), f.dn.to_lowercase(), f))
        .collect();
    list.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut out: Vec<Found> = Vec::new();
    for (_, _, f) in list {
        // The same person from contacts and directory: keep the first (best) one.
        let dup = out.iter().any(|o| {
            o.dn.to_lowercase() == f.dn.to_lowercase()
                && (o
                    .email
                    .iter()
                    .any(|e| f.email.iter().any(|x| x.eq_ignore_ascii_case(e)))
                    || (o.business == f.business && o.mobile == f.mobile))
        });
        if !dup {
            out.push(f);
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(given: &str, surname: &str, company: &str) -> Found {
        from_contact(
            &json!({"givenName": given, "surname": surname, "companyName": company,
            "businessPhones": ["+49 (0)7031 555-12"], "mobilePhone": "0170 555 99 x3",
            "emailAddresses": [{"name": "x", "address": format!("{given}@example.com")}]}),
        )
    }

    #[test]
    fn numbers_are_dialable() {
        assert_eq!(
            dialable("+49 (0)7031 555-12").as_deref(),
            Some("+49703155512")
        );
        assert_eq!(
            dialable("+1 425 555 0100 ext. 12").as_deref(),
            Some("+14255550100")
        );
        assert_eq!(dialable("(0170) 555/99").as_deref(), Some("017055599"));
        assert_eq!(dialable("tel:+4412").as_deref(), Some("+4412"));
        assert_eq!(dialable("n/a"), None);
        let c = contact("Ada", "Berg", "ACME");
        assert_eq!(c.business, vec!["+49703155512"]);
        assert_eq!(c.mobile, vec!["017055599"]);
        assert_eq!(c.dn, "Ada Berg");
    }

    #[test]
    fn prefix_matching_on_words_of_names_and_company() {
        let c = contact("Jürgen", "Müller", "Bäckerei Süd");
        assert!(c.matches(&words("jü")));
        assert!(c.matches(&words("MÜL")));
        assert!(c.matches(&words("Müller Jür")));
        assert!(c.matches(&words("süd")));
        assert!(!c.matches(&words("ürgen")));
        assert!(!c.matches(&words("Jürgen Schmidt")));
    }

    #[test]
    fn results_are_ranked_capped_and_unique() {
        let all = vec![
            contact("Zoe", "Anders", "Annex"),
            contact("Anna", "Zeller", ""),
            contact("Bob", "Kurz", "Anixter"),
            contact("Anna", "Zeller", ""),
            contact("Andreas", "Berg", ""),
            contact("Carl", "Lang", ""),
        ];
        let got: Vec<String> = select(all.clone(), "an", 10)
            .into_iter()
            .map(|f| f.dn)
            .collect();
        assert_eq!(
            got,
            ["Andreas Berg", "Anna Zeller", "Zoe Anders", "Bob Kurz"]
        );
        assert_eq!(select(all, "an", 2).len(), 2);
    }

    #[test]
    fn requests_use_filters_exchange_accepts() {
        let r = contacts_request("https://graph.microsoft.com", "tok", "u-1", "o'br", 3000);
        assert!(
            r.url
                .starts_with("https://graph.microsoft.com/v1.0/users/u-1/contacts?$select=")
        );
        let filter = r.url.split("$filter=").nth(1).unwrap();
        let decoded = form::decode(&format!("f={filter}"));
        assert_eq!(
            decoded[0].1,
            "startswith(givenName,'o''br') or startswith(surname,'o''br') or startswith(displayName,'o''br') or startswith(companyName,'o''br')"
        );
        assert!(!r.url.contains("emailAddresses/any"));
        assert_eq!(r.timeout_ms, 3000);
        let d = directory_request("https://g", "tok", "a\"&b", 3000).unwrap();
        assert!(d.url.contains("$count=true"));
        assert_eq!(
            crate::event::header(&d.headers, "consistencylevel"),
            Some("eventual")
        );
        assert!(directory_request("https://g", "tok", "\"&", 3000).is_none());
    }
}
