//! What every Graph call shares: bearer-authenticated JSON requests, the error envelope, and
//! throttling (`Retry-After`, graph.md §7.2).

use serde::Deserialize;

use crate::event::{Header, HttpRequest, HttpResponse, header};

/// Graph calls give up after this long.
pub const TIMEOUT_MS: u32 = 30_000;

/// The v1.0 root of a Graph resource URL (`https://graph.microsoft.com` ->
/// `https://graph.microsoft.com/v1.0`).
pub fn root(graph_url: &str) -> String {
    format!("{}/v1.0", graph_url.trim_end_matches('/'))
}

/// A Graph request with a bearer token; `body` is sent as JSON when present.
pub fn request(
    method: &str,
    url: String,
    token: &str,
    body: Option<&serde_json::Value>,
) -> HttpRequest {
    let mut headers = vec![
        Header::new("authorization", &format!("Bearer {token}")),
        Header::new("accept", "application/json"),
    ];
    let body = match body {
        Some(v) => {
            headers.push(Header::new("content-type", "application/json"));
            v.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    HttpRequest {
        method: method.into(),
        url,
        headers,
        body,
        timeout_ms: TIMEOUT_MS,
    }
}

/// A Graph error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status.
    pub status: u16,
    /// `error.code`, e.g. `TooManyRequests`, `Authorization_RequestDenied`.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// How long to wait before retrying, if the response said so or the status calls for it.
    pub retry_after_ms: Option<u64>,
}

impl GraphError {
    /// Whether retrying the same request later can succeed (throttling, server trouble).
    pub fn transient(&self) -> bool {
        matches!(self.status, 429 | 500 | 502 | 503 | 504)
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph {} {}: {}", self.status, self.code, self.message)
    }
}

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    error: Inner,
}

#[derive(Deserialize, Default)]
struct Inner {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `Retry-After` in milliseconds: Graph sends whole seconds. An HTTP-date or garbage is
/// ignored (the caller then backs off on its own).
pub fn retry_after_ms(headers: &[Header]) -> Option<u64> {
    let v = header(headers, "retry-after")?.trim();
    v.parse::<u64>().ok().map(|s| s.min(3600) * 1000)
}

/// `Ok(response)` for 2xx, else the parsed error.
pub fn check(resp: &HttpResponse) -> Result<&HttpResponse, GraphError> {
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    let env: Envelope = serde_json::from_slice(&resp.body).unwrap_or_default();
    Err(GraphError {
        status: resp.status,
        code: if env.error.code.is_empty() {
            format!("http_{}", resp.status)
        } else {
            env.error.code
        },
        message: env.error.message,
        retry_after_ms: retry_after_ms(&resp.headers),
    })
}

/// Exponential backoff with up to 25 % jitter: `attempt` 1 -> `base_ms`, doubling, capped at
/// `max_ms`. `random` is any random number (from `Env::random_u64`).
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, random: u64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.clamp(1, 20).saturating_sub(1).min(20));
    let d = exp.min(max_ms);
    d + random % (d / 4 + 1)
}

/// How long to wait before retrying a failed call: `Retry-After` when given (exactly that, as
/// Graph asks), else jittered backoff.
pub fn retry_delay_ms(error: &GraphError, attempt: u32, random: u64) -> u64 {
    error
        .retry_after_ms
        .unwrap_or_else(|| backoff_ms(attempt, 2_000, 5 * 60_000, random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: Vec<Header>, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn throttling_honours_retry_after() {
        let r = resp(
            429,
            vec![Header::new("Retry-After", "5")],
            r#"{"error":{"code":"TooManyRequests","message":"Too many requests from Identifier:West Europe"}}"#,
        );
        let e = check(&r).unwrap_err();
        assert_eq!(e.code, "TooManyRequests");
        assert!(e.transient());
        assert_eq!(e.retry_after_ms, Some(5000));
        assert_eq!(retry_delay_ms(&e, 3, 12345), 5000);
    }

    #[test]
    fn errors_without_envelope_or_header_back_off() {
        let e = check(&resp(503, vec![], "<html>")).unwrap_err();
        assert_eq!(e.code, "http_503");
        assert!(e.transient());
        let d1 = retry_delay_ms(&e, 1, 0);
        let d3 = retry_delay_ms(&e, 3, 0);
        assert_eq!((d1, d3), (2_000, 8_000));
        assert!(backoff_ms(30, 2_000, 300_000, u64::MAX) <= 300_000 + 75_000);
        let forbidden = check(&resp(
            403,
            vec![],
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges"}}"#,
        ))
        .unwrap_err();
        assert!(!forbidden.transient());
        assert!(check(&resp(204, vec![], "")).is_ok());
    }

    #[test]
    fn requests_carry_bearer_and_json() {
        let r = request(
            "POST",
            format!(
                "{}/communications/getPresencesByUserId",
                root("https://graph.microsoft.com/")
            ),
            "tok",
            Some(&serde_json::json!({"ids": ["a"]})),
        );
        assert_eq!(
            r.url,
            "https://graph.microsoft.com/v1.0/communications/getPresencesByUserId"
        );
        assert_eq!(header(&r.headers, "Authorization"), Some("Bearer tok"));
        assert_eq!(header(&r.headers, "content-type"), Some("application/json"));
        assert_eq!(r.body, br#"{"ids":["a"]}"#);
    }
}
