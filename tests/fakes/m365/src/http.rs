//! Plain request/response values exchanged with the sans-IO core, plus form and query decoding.

use serde_json::{Value, json};

/// An HTTP request as seen by the core.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query exactly as sent (`/v1.0/users?$top=5`).
    pub target: String,
    /// Header name/value pairs (names compared case-insensitively).
    pub headers: Vec<(String, String)>,
    /// Raw body bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// Build a request.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_string(),
            target: target.to_string(),
            ..Default::default()
        }
    }
    /// Add a header (builder style).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Set a JSON body and its Content-Type.
    pub fn json(mut self, v: &Value) -> Self {
        self.body = serde_json::to_vec(v).unwrap_or_default();
        self.header("Content-Type", "application/json")
    }
    /// Set a raw body.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
    /// Set a bearer token.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    /// First header value with this name.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Path without query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// Raw query string (without `?`).
    pub fn raw_query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
    /// Decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        form_decode(self.raw_query())
    }
    /// First decoded query parameter with this name.
    pub fn q(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    /// Body parsed as JSON.
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// An HTTP response produced by the core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// JSON response.
    pub fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
    /// Empty response.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }
    /// Plain-text response.
    pub fn text(status: u16, s: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: s.as_bytes().to_vec(),
        }
    }
    /// Add a header (builder style).
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    /// First header value with this name.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Body as JSON (Null if not JSON).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Decode `application/x-www-form-urlencoded` with real form semantics: pairs split on `&`,
/// key/value on the first `=`, `+` is a space, `%XX` is a byte. A malformed escape is kept
/// literally (as ASP.NET does), so an unencoded `%` in a password changes the password.
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k, true), pct_decode(v, true)),
            None => (pct_decode(p, true), String::new()),
        })
        .collect()
}

/// Percent-decode; `plus_space` turns `+` into a space.
pub fn pct_decode(s: &str, plus_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode everything except unreserved characters (RFC 3986).
pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Graph's error envelope.
pub fn graph_error_body(
    code: &str,
    message: &str,
    date: &str,
    request_id: &str,
    client_request_id: &str,
) -> Value {
    json!({"error": {"code": code, "message": message, "innerError": {
        "date": date, "request-id": request_id, "client-request-id": client_request_id}}})
}

/// Percent-decode a path segment (`+` stays a plus).
pub fn pct_decode_path(s: &str) -> String {
    pct_decode(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_is_real_form_semantics() {
        let v = form_decode("password=P%40ss%26w%2Brd%25%21&a=b+c&x");
        assert_eq!(v[0], ("password".into(), "P@ss&w+rd%!".into()));
        assert_eq!(v[1], ("a".into(), "b c".into()));
        assert_eq!(v[2], ("x".into(), "".into()));
        // Unencoded: the password is cut at '&', '+' becomes a space.
        let v = form_decode("password=P@ss&w+rd%!");
        assert_eq!(v[0].1, "P@ss");
        assert_eq!(v[1].0, "w rd%!");
        assert_eq!(pct_decode("%zz%4", false), "%zz%4");
    }
}
