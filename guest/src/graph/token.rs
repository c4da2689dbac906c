//! Token requests to the Microsoft identity platform v2.0 and their responses (graph.md §1),
//! sans-IO: functions build [`HttpRequest`]s and parse response bodies; the caller starts the
//! request through `Env` and feeds the completion back.
//!
//! Grants: resource-owner password (ROPC), client credentials, refresh token (rotating: every
//! success returns a new refresh token that replaces the old one) and device code (MFA-capable
//! sign-in without a password).

use serde::Deserialize;

use super::aadsts::{self, Action};
use super::form;
use crate::event::{Header, HttpRequest};

/// The public-cloud login endpoint; national clouds use another (graph.md §8).
pub const DEFAULT_LOGIN_BASE: &str = "https://login.microsoftonline.com";

/// The public-cloud Graph resource, for scopes.
pub const DEFAULT_GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// Refresh this long before an access token expires (graph.md §1.7: at least 5 minutes).
pub const REFRESH_MARGIN_MS: u64 = 5 * 60 * 1000;

/// Token requests give up after this long.
pub const TIMEOUT_MS: u32 = 30_000;

/// An app registration in a tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// Login base URL, e.g. `https://login.microsoftonline.com`.
    pub login_base: String,
    /// Tenant id or verified domain (never `common` for these grants).
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret, for confidential clients only (never sent by public-client flows).
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("login_base", &self.login_base)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What to ask the token endpoint for.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant<'a> {
    /// ROPC: a communication user's name and password (delegated; no MFA possible).
    Password {
        /// User principal name.
        username: &'a str,
        /// Password, any characters.
        password: &'a str,
        /// Space-separated scopes.
        scope: &'a str,
    },
    /// Client credentials (application permissions); scope must be `<resource>/.default`.
    ClientCredentials {
        /// Space-separated scopes.
        scope: &'a str,
    },
    /// Refresh-token grant.
    RefreshToken {
        /// The newest refresh token.
        refresh_token: &'a str,
        /// Space-separated scopes.
        scope: &'a str,
    },
    /// Device-code polling (step 2 of the device-code flow).
    DeviceCode {
        /// `device_code` from the device authorization response.
        device_code: &'a str,
    },
}

/// Delegated scope for a Graph resource: everything consented, plus a refresh token.
pub fn delegated_scope(resource: &str) -> String {
    format!("{}/.default offline_access", resource.trim_end_matches('/'))
}

/// Application scope for a Graph resource.
pub fn app_scope(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

fn endpoint(client: &Client, what: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/{what}",
        client.login_base.trim_end_matches('/'),
        form::encode(&client.tenant)
    )
}

fn post(url: String, body: String) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url,
        // No `charset` parameter: ADAL.NET failed with it (graph.md §1.2); the body is ASCII.
        headers: vec![
            Header::new("content-type", "application/x-www-form-urlencoded"),
            Header::new("accept", "application/json"),
        ],
        body: body.into_bytes(),
        timeout_ms: TIMEOUT_MS,
    }
}

/// The token request for `grant`.
pub fn token_request(client: &Client, grant: &Grant) -> HttpRequest {
    let mut pairs: Vec<(&str, &str)> = vec![("client_id", &client.client_id)];
    match grant {
        Grant::Password {
            username,
            password,
            scope,
        } => {
            pairs.extend([
                ("grant_type", "password"),
                ("username", *username),
                ("password", *password),
                ("scope", *scope),
            ]);
        }
        Grant::ClientCredentials { scope } => {
            pairs.extend([("grant_type", "client_credentials"), ("scope", *scope)]);
        }
        Grant::RefreshToken {
            refresh_token,
            scope,
        } => {
            pairs.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", *refresh_token),
                ("scope", *scope),
            ]);
        }
        Grant::DeviceCode { device_code } => {
            pairs.extend([
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", *device_code),
            ]);
        }
    }
    if let Some(secret) = &client.client_secret {
        pairs.push(("client_secret", secret));
    }
    post(endpoint(client, "token"), form::body(&pairs))
}

/// Step 1 of the device-code flow: asks for a user code to show the administrator.
pub fn device_code_request(client: &Client, scope: &str) -> HttpRequest {
    post(
        endpoint(client, "devicecode"),
        form::body(&[("client_id", &client.client_id), ("scope", scope)]),
    )
}

/// A token obtained from the endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Bearer token for Graph.
    pub access_token: String,
    /// The new refresh token, if the grant returned one (it replaces the previous one).
    pub refresh_token: Option<String>,
    /// When the access token expires, ms since the epoch.
    pub expires_at_ms: u64,
    /// Granted scopes.
    pub scope: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .field("scope", &self.scope)
            .finish()
    }
}

impl Token {
    /// When to refresh: [`REFRESH_MARGIN_MS`] before expiry, or halfway through a lifetime
    /// shorter than twice the margin, so a short-lived token is still renewed in time.
    pub fn refresh_at_ms(&self, issued_ms: u64) -> u64 {
        let lifetime = self.expires_at_ms.saturating_sub(issued_ms);
        if lifetime >= 2 * REFRESH_MARGIN_MS {
            self.expires_at_ms - REFRESH_MARGIN_MS
        } else {
            issued_ms + lifetime / 2
        }
    }

    /// Whether the token is unusable at `now_ms` (expired or within a minute of it).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms + 60_000 >= self.expires_at_ms
    }
}

/// The device authorization response (step 1).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct DeviceAuthorization {
    /// Secret code for polling; never shown.
    pub device_code: String,
    /// Code the administrator enters.
    pub user_code: String,
    /// Where to enter it.
    pub verification_uri: String,
    /// Lifetime of the codes, seconds.
    #[serde(default = "default_device_expiry")]
    pub expires_in: u64,
    /// Minimum polling interval, seconds.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Ready-made instruction text.
    #[serde(default)]
    pub message: String,
}

fn default_device_expiry() -> u64 {
    900
}

fn default_interval() -> u64 {
    5
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"<redacted>")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish()
    }
}

/// A failed token request, with advice for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// HTTP status (0 if no response arrived).
    pub status: u16,
    /// OAuth `error` value, e.g. `invalid_grant`.
    pub error: String,
    /// AADSTS codes, from `error_codes` or the description.
    pub codes: Vec<u32>,
    /// First line of `error_description` (without trace ids).
    pub description: String,
    /// What to tell the administrator.
    pub advice: &'static str,
    /// What the connector should do.
    pub action: Action,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.codes.first() {
            Some(code) => write!(f, "AADSTS{code}: {}", self.advice),
            None => write!(f, "{}: {}", self.error, self.advice),
        }
    }
}

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize, Default)]
struct RawError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u32>,
}

/// Reads `AADSTS<digits>` codes out of a description.
fn codes_in(description: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = description;
    while let Some(pos) = rest.find("AADSTS") {
        rest = &rest[pos + 6..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(code) = digits.parse()
            && !out.contains(&code)
        {
            out.push(code);
        }
    }
    out
}

/// Turns an error response (or an unreadable one) into a [`TokenError`].
pub fn parse_error(status: u16, body: &[u8]) -> TokenError {
    let raw: RawError = serde_json::from_slice(body).unwrap_or_default();
    let mut codes = raw.error_codes;
    if codes.is_empty() {
        codes = codes_in(&raw.error_description);
    }
    let description = raw
        .error_description
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let error = if raw.error.is_empty() {
        format!("http_{status}")
    } else {
        raw.error
    };
    // The OAuth error decides for the device-code poll states; otherwise the first known code.
    let (advice, action) = match error.as_str() {
        "authorization_pending" | "slow_down" | "authorization_declined" | "expired_token" => {
            aadsts::advice_for_error(&error)
        }
        _ => codes
            .iter()
            .find_map(|c| aadsts::advice(*c))
            .unwrap_or_else(|| {
                if status == 429 || status >= 500 {
                    aadsts::advice_for_error("temporarily_unavailable")
                } else {
                    aadsts::advice_for_error(&error)
                }
            }),
    };
    TokenError {
        status,
        error,
        codes,
        description,
        advice,
        action,
    }
}

/// Parses a token endpoint response received at `now_ms`.
pub fn parse_token(status: u16, body: &[u8], now_ms: u64) -> Result<Token, TokenError> {
    if status != 200 {
        return Err(parse_error(status, body));
    }
    let raw: RawToken = serde_json::from_slice(body).map_err(|e| TokenError {
        status,
        error: "invalid_response".into(),
        codes: vec![],
        description: e.to_string(),
        advice: "The token endpoint answered with an unreadable body; retrying later.",
        action: Action::Retry,
    })?;
    // `expires_in` is a number, though some proxies pass it as text; 1 hour if absent.
    let expires_in = match raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(3600),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
        _ => 3600,
    };
    Ok(Token {
        access_token: raw.access_token,
        refresh_token: raw.refresh_token.filter(|r| !r.is_empty()),
        expires_at_ms: now_ms + expires_in * 1000,
        scope: raw.scope,
    })
}

/// Parses the device authorization response.
pub fn parse_device_authorization(
    status: u16,
    body: &[u8],
) -> Result<DeviceAuthorization, TokenError> {
    if status != 200 {
        return Err(parse_error(status, body));
    }
    serde_json::from_slice(body).map_err(|e| TokenError {
        status,
        error: "invalid_response".into(),
        codes: vec![],
        description: e.to_string(),
        advice: "The device-code endpoint answered with an unreadable body; retrying later.",
        action: Action::Retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::header;

    fn client(secret: Option<&str>) -> Client {
        Client {
            login_base: DEFAULT_LOGIN_BASE.into(),
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: secret.map(str::to_string),
        }
    }

    fn body(req: &HttpRequest) -> String {
        String::from_utf8(req.body.clone()).unwrap()
    }

    #[test]
    fn ropc_encodes_every_value() {
        let scope = delegated_scope(DEFAULT_GRAPH_RESOURCE);
        let req = token_request(
            &client(None),
            &Grant::Password {
                username: "pbx-svc@contoso.com",
                password: "P@ss&w+rd%! #<",
                scope: &scope,
            },
        );
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            header(&req.headers, "Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            body(&req),
            "client_id=11111111-2222-3333-4444-555555555555&grant_type=password\
             &username=pbx-svc%40contoso.com&password=P%40ss%26w%2Brd%25%21%20%23%3C\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default%20offline_access"
        );
        let sent = form::decode(&body(&req));
        assert!(sent.contains(&("password".into(), "P@ss&w+rd%! #<".into())));
        assert!(!sent.iter().any(|(k, _)| k == "client_secret"));
    }

    #[test]
    fn client_credentials_carry_the_secret_encoded() {
        let req = token_request(
            &client(Some("s3cr3t+/=~")),
            &Grant::ClientCredentials {
                scope: &app_scope("https://graph.microsoft.com/"),
            },
        );
        let b = body(&req);
        assert!(b.contains("grant_type=client_credentials"));
        assert!(b.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));
        assert!(b.ends_with("client_secret=s3cr3t%2B%2F%3D~"));
    }

    #[test]
    fn refresh_and_device_code_grants() {
        let req = token_request(
            &client(None),
            &Grant::RefreshToken {
                refresh_token: "1.AXkA+x/y==",
                scope: "a b",
            },
        );
        assert!(
            body(&req).contains(
                "grant_type=refresh_token&refresh_token=1.AXkA%2Bx%2Fy%3D%3D&scope=a%20b"
            )
        );
        let req = token_request(
            &client(None),
            &Grant::DeviceCode {
                device_code: "GMM h",
            },
        );
        assert!(body(&req).contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=GMM%20h"
        ));
        let req = device_code_request(&client(None), "Presence.Read.All offline_access");
        assert!(req.url.ends_with("/oauth2/v2.0/devicecode"));
        assert!(body(&req).ends_with("scope=Presence.Read.All%20offline_access"));
    }

    #[test]
    fn national_cloud_login_base() {
        let mut c = client(None);
        c.login_base = "https://login.microsoftonline.us/".into();
        let req = token_request(&c, &Grant::ClientCredentials { scope: "x" });
        assert!(
            req.url
                .starts_with("https://login.microsoftonline.us/contoso")
        );
    }

    #[test]
    fn token_response_parsed_and_refresh_scheduled() {
        let b = br#"{"token_type":"Bearer","scope":"Presence.Read.All User.Read.All","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0","refresh_token":"1.AXkA","id_token":"x"}"#;
        let t = parse_token(200, b, 1_000_000).unwrap();
        assert_eq!(t.access_token, "eyJ0");
        assert_eq!(t.refresh_token.as_deref(), Some("1.AXkA"));
        assert_eq!(t.expires_at_ms, 1_000_000 + 3_599_000);
        assert_eq!(
            t.refresh_at_ms(1_000_000),
            1_000_000 + 3_599_000 - REFRESH_MARGIN_MS
        );
        assert!(!t.expired(1_000_000));
        assert!(t.expired(1_000_000 + 3_550_000));
        // A 4-minute token is refreshed halfway, not after it expired.
        let short = parse_token(200, br#"{"access_token":"a","expires_in":"240"}"#, 0).unwrap();
        assert_eq!(short.refresh_at_ms(0), 120_000);
        assert!(short.refresh_token.is_none());
        // Secrets never show in debug output.
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("eyJ0") && !dbg.contains("1.AXkA"));
    }

    #[test]
    fn unreadable_success_body_is_an_error_not_a_panic() {
        let e = parse_token(200, b"<html>", 0).unwrap_err();
        assert_eq!(e.action, Action::Retry);
    }

    #[test]
    fn aadsts_errors_get_actionable_advice() {
        let b = br#"{"error":"invalid_grant","error_description":"AADSTS50126: Error validating credentials due to invalid username or password.\r\nTrace ID: 5c0e\r\nCorrelation ID: d77a\r\nTimestamp: 2025-04-30 09:46:18Z","error_codes":[50126],"timestamp":"2025-04-30 09:46:18Z"}"#;
        let e = parse_token(400, b, 0).unwrap_err();
        assert_eq!(e.codes, vec![50126]);
        assert_eq!(e.action, Action::FixConfiguration);
        assert_eq!(
            e.description,
            "AADSTS50126: Error validating credentials due to invalid username or password."
        );
        assert!(
            e.to_string()
                .starts_with("AADSTS50126: Wrong user name or password")
        );

        // Codes are found in the description when `error_codes` is missing.
        let b = br#"{"error":"invalid_grant","error_description":"AADSTS50076: Due to a configuration change made by your administrator..."}"#;
        let e = parse_token(400, b, 0).unwrap_err();
        assert_eq!(e.codes, vec![50076]);
        assert_eq!(e.action, Action::SignInAgain);
        assert!(e.advice.contains("device-code"));

        let b = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#;
        let e = parse_token(401, b, 0).unwrap_err();
        assert!(e.advice.contains("not its Secret ID"));
    }

    #[test]
    fn device_code_flow_states() {
        let b = br#"{"device_code":"GMMhmHCX","user_code":"FRK7QD4LS","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in..."}"#;
        let d = parse_device_authorization(200, b).unwrap();
        assert_eq!(d.user_code, "FRK7QD4LS");
        assert_eq!(d.interval, 5);
        assert!(!format!("{d:?}").contains("GMMhmHCX"));

        let pending = br#"{"error":"authorization_pending","error_description":"AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.","error_codes":[70016]}"#;
        assert_eq!(
            parse_token(400, pending, 0).unwrap_err().action,
            Action::KeepPolling
        );
        let slow = br#"{"error":"slow_down"}"#;
        assert_eq!(
            parse_token(400, slow, 0).unwrap_err().action,
            Action::SlowDown
        );
        let expired = br#"{"error":"expired_token","error_codes":[70019]}"#;
        assert_eq!(
            parse_token(400, expired, 0).unwrap_err().action,
            Action::SignInAgain
        );
        let declined = br#"{"error":"authorization_declined"}"#;
        assert_eq!(
            parse_token(400, declined, 0).unwrap_err().action,
            Action::SignInAgain
        );
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        let e = parse_token(503, b"", 0).unwrap_err();
        assert_eq!(e.error, "http_503");
        assert_eq!(e.action, Action::Retry);
        assert_eq!(
            parse_token(429, b"{}", 0).unwrap_err().action,
            Action::Retry
        );
        let unknown = parse_token(
            400,
            br#"{"error":"invalid_request","error_codes":[12345]}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(unknown.action, Action::FixConfiguration);
    }
}
