//! Presence change-notification subscriptions (graph.md §3.1, §3.5, §4.4): request builders,
//! parsing, and Microsoft's clock.
//!
//! Expiry times are computed from the HTTP `Date` of Graph's own responses (the incumbent broke
//! on a wrong local clock), so [`skew_ms`] is measured on every response and applied here.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api;
use crate::event::{Header, HttpRequest, HttpResponse, header};

/// Maximum ids per presence subscription.
pub const MAX_IDS: usize = 650;

/// What the connector keeps of one account's subscription (`sub/<account>` in KV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Graph's subscription id.
    pub id: String,
    /// Expiry (ms since the epoch, Microsoft's clock).
    pub expiry_ms: u64,
    /// The secret Graph echoes in every notification.
    pub client_state: String,
    /// The watched Entra ids, sorted.
    pub ids: Vec<String>,
    /// Whether notifications carry encrypted resource data.
    #[serde(default)]
    pub rich: bool,
}

/// A subscription as listed by `GET /subscriptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Listed {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Resource path.
    #[serde(default)]
    pub resource: String,
    /// Where notifications go.
    #[serde(default, rename = "notificationUrl")]
    pub notification_url: String,
}

impl Listed {
    /// Whether it watches changes of Entra users.
    pub fn is_users(&self) -> bool {
        self.resource
            .trim_start_matches('/')
            .eq_ignore_ascii_case("users")
    }

    /// Whether it watches presence (the only kind this connector creates per account).
    pub fn is_presence(&self) -> bool {
        self.resource
            .trim_start_matches('/')
            .to_ascii_lowercase()
            .starts_with("communications/presences")
    }
}

/// The resource path watching `ids` (GUIDs single-quoted, else Graph answers 400).
pub fn resource(ids: &[String]) -> String {
    let quoted: Vec<String> = ids
        .iter()
        .map(|id| format!("'{}'", id.replace('\'', "")))
        .collect();
    format!(
        "/communications/presences?$filter=id in ({})",
        quoted.join(",")
    )
}

/// Where the connector wants notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `<public base>/<domain>/<instance>/subscriptions`.
    pub notification: String,
    /// `<public base>/<domain>/<instance>/lifecycle`.
    pub lifecycle: String,
}

impl Urls {
    /// Builds both from the public base URL and the instance's domain and name.
    pub fn new(public_base: &str, domain: &str, instance: &str) -> Self {
        let base = format!("{}/{domain}/{instance}", public_base.trim_end_matches('/'));
        Urls {
            notification: format!("{base}/subscriptions"),
            lifecycle: format!("{base}/lifecycle"),
        }
    }
}

/// The encryption certificate for rich notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Base64 DER.
    pub base64: String,
    /// Our id for it (the host key name).
    pub id: String,
}

/// `POST /subscriptions` for `ids`.
pub fn create_request(
    graph_url: &str,
    token: &str,
    ids: &[String],
    urls: &Urls,
    expiry_ms: u64,
    client_state: &str,
    cert: Option<&Certificate>,
) -> HttpRequest {
    let mut body = json!({
        "changeType": "updated",
        "notificationUrl": urls.notification,
        "lifecycleNotificationUrl": urls.lifecycle,
        "resource": resource(ids),
        "expirationDateTime": iso(expiry_ms),
        "clientState": client_state,
        "includeResourceData": cert.is_some(),
    });
    if let Some(c) = cert {
        body["encryptionCertificate"] = json!(c.base64);
        body["encryptionCertificateId"] = json!(c.id);
    }
    api::request(
        "POST",
        format!("{}/subscriptions", api::root(graph_url)),
        token,
        Some(&body),
    )
}

/// The resource of the user-change subscription (graph.md §3.1: users support `updated` and
/// `deleted`).
pub const USERS_RESOURCE: &str = "/users";

/// `POST /subscriptions` for changes of Entra users (plain notifications: they only say
/// which user changed; the connector reads the users again).
pub fn users_create_request(
    graph_url: &str,
    token: &str,
    urls: &Urls,
    expiry_ms: u64,
    client_state: &str,
) -> HttpRequest {
    let body = json!({
        "changeType": "updated,deleted",
        "notificationUrl": urls.notification,
        "lifecycleNotificationUrl": urls.lifecycle,
        "resource": USERS_RESOURCE,
        "expirationDateTime": iso(expiry_ms),
        "clientState": client_state,
    });
    api::request(
        "POST",
        format!("{}/subscriptions", api::root(graph_url)),
        token,
        Some(&body),
    )
}

/// `PATCH /subscriptions/{id}` with a new expiry (renewal; also reauthorizes).
pub fn renew_request(graph_url: &str, token: &str, id: &str, expiry_ms: u64) -> HttpRequest {
    api::request(
        "PATCH",
        format!("{}/subscriptions/{id}", api::root(graph_url)),
        token,
        Some(&json!({ "expirationDateTime": iso(expiry_ms) })),
    )
}

/// `DELETE /subscriptions/{id}`.
pub fn delete_request(graph_url: &str, token: &str, id: &str) -> HttpRequest {
    api::request(
        "DELETE",
        format!("{}/subscriptions/{id}", api::root(graph_url)),
        token,
        None,
    )
}

/// `GET /subscriptions` (the signed-in account's subscriptions of this app).
pub fn list_request(graph_url: &str, token: &str) -> HttpRequest {
    api::request(
        "GET",
        format!("{}/subscriptions", api::root(graph_url)),
        token,
        None,
    )
}

fn invalid(resp: &HttpResponse, e: impl std::fmt::Display) -> api::GraphError {
    api::GraphError {
        status: resp.status,
        code: "invalid_response".into(),
        message: e.to_string(),
        retry_after_ms: None,
    }
}

/// Parses a list answer (`nextLink` pages are rare for one account's few subscriptions and
/// are not followed).
pub fn parse_list(resp: &HttpResponse) -> Result<Vec<Listed>, api::GraphError> {
    let resp = api::check(resp)?;
    let v: Value = serde_json::from_slice(&resp.body).map_err(|e| invalid(resp, e))?;
    Ok(v.get("value")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|s| serde_json::from_value::<Listed>(s.clone()).ok())
                .filter(|s| !s.id.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// Parses a created or renewed subscription: its id and expiry (ms).
pub fn parse_subscription(resp: &HttpResponse) -> Result<(String, u64), api::GraphError> {
    let resp = api::check(resp)?;
    let v: Value = serde_json::from_slice(&resp.body).map_err(|e| invalid(resp, e))?;
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    let exp = v
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(parse_iso);
    match (id, exp) {
        ("", _) | (_, None) => Err(invalid(resp, "subscription without id or expiry")),
        (id, Some(exp)) => Ok((id.to_string(), exp)),
    }
}

/// Microsoft's clock minus ours, from a response's `Date` header (`None` without one).
pub fn skew_ms(headers: &[Header], local_ms: u64) -> Option<i64> {
    let date = parse_http_date(header(headers, "date")?)?;
    Some(date as i64 - local_ms as i64)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn epoch_ms(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + s) as i64;
    u64::try_from(secs).ok().map(|s| s * 1000 + ms as u64)
}

/// `2026-01-15T10:55:00.000Z` for ms since the epoch.
pub fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60,
        ms % 1000
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00|±hh:mm)` (Graph's spellings).
pub fn parse_iso(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<u32>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    let rest = s.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..n], &r[n..])
        }
        None => ("", rest),
    };
    let ms = format!("{frac:0<3}").get(..3)?.parse::<u32>().ok()?;
    let offset_min: i64 = match zone {
        "" | "Z" | "z" => 0,
        z if z.len() == 6 => {
            let sign = match z.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (z.get(1..3)?.parse::<i64>().ok()? * 60 + z.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    let utc = epoch_ms(y as i64, mo, d, h, mi, sec, ms)? as i64 - offset_min * 60_000;
    u64::try_from(utc).ok()
}

/// Formats an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let t = secs.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, t, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let mut hms = t.split(':').map(|p| p.parse::<u32>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    epoch_ms(y.parse().ok()?, mo, d.parse().ok()?, h, mi, sec, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_parse_and_format() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(iso(784_111_777_123), "1994-11-06T08:49:37.123Z");
        assert_eq!(parse_iso("1994-11-06T08:49:37.123Z"), Some(784_111_777_123));
        assert_eq!(
            parse_iso("2026-01-15T10:55:00.0000000Z"),
            parse_iso("2026-01-15T10:55:00Z")
        );
        assert_eq!(
            parse_iso("2026-01-15T11:55:00+01:00"),
            parse_iso("2026-01-15T10:55:00Z")
        );
        assert_eq!(parse_iso("2026-13-15T10:55:00Z"), None);
        assert_eq!(parse_iso("2026-01-15"), None);
        // Garbage never panics (multi-byte characters where digits or signs belong).
        for bad in [
            "2026-01-15T10:55:00é1:00",
            "2026-01-15T10:55:00.é",
            "ééééééééééééééééééééé",
            "",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:é GMT"), None);
        for ms in [0u64, 951_782_400_000, 1_750_000_000_999, 4_102_444_800_000] {
            assert_eq!(parse_iso(&iso(ms)), Some(ms));
        }
        let h = [Header::new("Date", "Sun, 06 Nov 1994 08:49:37 GMT")];
        assert_eq!(skew_ms(&h, 784_111_777_000 - 5_000), Some(5_000));
        assert_eq!(skew_ms(&[], 1), None);
    }

    #[test]
    fn create_body_follows_graph() {
        let urls = Urls::new("https://c.example.com/", "example.com", "m365");
        assert_eq!(
            urls.notification,
            "https://c.example.com/example.com/m365/subscriptions"
        );
        let ids = vec!["a1".to_string(), "b2".to_string()];
        let cert = Certificate {
            base64: "MII".into(),
            id: "k1".into(),
        };
        let r = create_request(
            "https://graph.microsoft.com",
            "t",
            &ids,
            &urls,
            0,
            "cs",
            Some(&cert),
        );
        let b: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            b["resource"],
            "/communications/presences?$filter=id in ('a1','b2')"
        );
        assert_eq!(b["expirationDateTime"], "1970-01-01T00:00:00.000Z");
        assert_eq!(b["includeResourceData"], true);
        assert_eq!(b["encryptionCertificateId"], "k1");
        assert_eq!(b["lifecycleNotificationUrl"], urls.lifecycle);
        let plain = create_request(
            "https://graph.microsoft.com",
            "t",
            &ids,
            &urls,
            0,
            "cs",
            None,
        );
        let b: Value = serde_json::from_slice(&plain.body).unwrap();
        assert_eq!(b["includeResourceData"], false);
        assert!(b.get("encryptionCertificate").is_none());
    }

    #[test]
    fn answers_parse() {
        let l = parse_list(&HttpResponse::text(
            200,
            r#"{"value":[{"id":"s1","resource":"/communications/presences?$filter=id in ('a')","notificationUrl":"u"},{"id":"s2","resource":"users"},{"x":1}]}"#,
        ))
        .unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].is_presence() && !l[1].is_presence());
        let (id, exp) = parse_subscription(&HttpResponse::text(
            201,
            r#"{"id":"s1","expirationDateTime":"1970-01-01T00:00:01Z"}"#,
        ))
        .unwrap();
        assert_eq!((id.as_str(), exp), ("s1", 1000));
        assert!(parse_subscription(&HttpResponse::text(201, "{}")).is_err());
        assert_eq!(
            parse_subscription(&HttpResponse::text(404, ""))
                .unwrap_err()
                .status,
            404
        );
    }
}
