//! Entra ID v2.0 token endpoint: password (ROPC), client credentials, refresh token and device
//! code grants, scriptable AADSTS errors, and the bearer tokens Graph validates on every call.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::clock::entra_timestamp;
use crate::core::{Caller, Fake, GraphErr, gerr};
use crate::http::{Request, Response, form_decode};

const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

pub(crate) struct RefreshGrant {
    user_id: String,
    app_id: String,
    scopes: Vec<String>,
    expires: i64,
    revoked: bool,
}

#[derive(PartialEq)]
enum DeviceState {
    Pending,
    Approved(String),
    Declined,
    Redeemed,
}

pub(crate) struct DeviceCode {
    user_code: String,
    app_id: String,
    scopes: Vec<String>,
    expires: i64,
    interval_ms: i64,
    last_poll: Option<i64>,
    state: DeviceState,
}

/// Token-service state.
pub struct TokenState {
    secret: [u8; 32],
    refresh: HashMap<String, RefreshGrant>,
    device: HashMap<String, DeviceCode>,
    /// Scripted AADSTS error per user (lower-case UPN or id).
    pub(crate) aadsts_user: HashMap<String, u32>,
    /// Scripted AADSTS error per client id.
    pub(crate) aadsts_app: HashMap<String, u32>,
}

impl TokenState {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self {
            secret,
            refresh: HashMap::new(),
            device: HashMap::new(),
            aadsts_user: HashMap::new(),
            aadsts_app: HashMap::new(),
        }
    }
}

/// `error` and default description of an AADSTS code.
pub fn aadsts_text(code: u32) -> (&'static str, &'static str) {
    match code {
        50126 => (
            "invalid_grant",
            "Error validating credentials due to invalid username or password.",
        ),
        50076 => (
            "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.",
        ),
        50079 => (
            "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.",
        ),
        53003 => (
            "invalid_grant",
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        ),
        50034 => (
            "invalid_grant",
            "The user account {EUII Hidden} does not exist in the directory. To sign into this application, the account must be added to the directory.",
        ),
        50053 => (
            "invalid_grant",
            "Your account is locked because you've tried to sign in too many times with an incorrect user ID or password.",
        ),
        50055 => ("invalid_grant", "The password is expired."),
        50057 => ("invalid_grant", "The user account is disabled."),
        65001 => (
            "invalid_grant",
            "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource.",
        ),
        70011 => (
            "invalid_scope",
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
        ),
        500011 => (
            "invalid_resource",
            "The resource principal was not found in the tenant.",
        ),
        700016 => (
            "unauthorized_client",
            "Application with identifier was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
        ),
        7000215 => (
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        ),
        7000218 => (
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
        7000222 => (
            "invalid_client",
            "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app.",
        ),
        700025 => (
            "invalid_client",
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        ),
        90002 => (
            "invalid_request",
            "Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
        ),
        90013 => ("invalid_request", "Invalid input received from the user."),
        900144 => (
            "invalid_request",
            "The request body must contain the following parameter: 'grant_type'.",
        ),
        90023 => (
            "invalid_request",
            "The password grant is not supported on the /common or /consumers endpoints. Use a tenant-specific endpoint or /organizations.",
        ),
        70016 => (
            "authorization_pending",
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ),
        70018 => (
            "bad_verification_code",
            "Invalid verification code was provided.",
        ),
        70019 => ("expired_token", "Verification code expired."),
        70000 => (
            "authorization_declined",
            "The user declined the authorization request.",
        ),
        70008 => (
            "invalid_grant",
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        ),
        70001 => ("unsupported_grant_type", "The grant type is not supported."),
        _ => ("invalid_grant", "Scripted error."),
    }
}

fn b64u(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default())
}

impl Fake {
    /// Entra error JSON with trace/correlation ids. `error` overrides the default for the code.
    pub(crate) fn aad_error(&mut self, code: u32, error: Option<&str>, extra: &str) -> Response {
        let (default_error, text) = aadsts_text(code);
        let error = error.unwrap_or(default_error);
        let trace = self.new_guid();
        let corr = self.new_guid();
        let ts = entra_timestamp(self.now());
        let msg = if extra.is_empty() {
            text.to_string()
        } else {
            format!("{text} {extra}")
        };
        let desc = format!(
            "AADSTS{code}: {msg}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
        );
        let status = if error == "invalid_client" { 401 } else { 400 };
        Response::json(
            status,
            &json!({"error": error, "error_description": desc, "error_codes": [code], "timestamp": ts,
                    "trace_id": trace, "correlation_id": corr,
                    "error_uri": format!("{}/error?code={code}", self.cfg.cloud.login_host())}),
        )
    }

    /// Script an AADSTS error for a user (UPN or id); `None` clears it.
    pub fn script_user_error(&mut self, user: &str, code: Option<u32>) {
        let key = self
            .users
            .find(user)
            .map(|e| e.user.id.clone())
            .unwrap_or_else(|| user.to_lowercase());
        match code {
            Some(c) => self.tokens.aadsts_user.insert(key, c),
            None => self.tokens.aadsts_user.remove(&key),
        };
    }

    /// Script an AADSTS error for an app; `None` clears it.
    pub fn script_app_error(&mut self, client_id: &str, code: Option<u32>) {
        match code {
            Some(c) => self.tokens.aadsts_app.insert(client_id.to_string(), c),
            None => self.tokens.aadsts_app.remove(client_id),
        };
    }

    /// Revoke every refresh token of a user ("revoke sessions" / password reset).
    pub fn revoke_refresh_tokens(&mut self, user: &str) {
        let Some(uid) = self.users.find(user).map(|e| e.user.id.clone()) else {
            return;
        };
        for g in self.tokens.refresh.values_mut() {
            if g.user_id == uid {
                g.revoked = true;
            }
        }
    }

    /// Approve a pending device code for `user` (what the user does in the browser).
    pub fn approve_device_code(&mut self, user_code: &str, user: &str) -> bool {
        let Some(uid) = self.users.find(user).map(|e| e.user.id.clone()) else {
            return false;
        };
        match self
            .tokens
            .device
            .values_mut()
            .find(|d| d.user_code == user_code)
        {
            Some(d) => {
                d.state = DeviceState::Approved(uid);
                true
            }
            None => false,
        }
    }

    /// Decline a pending device code.
    pub fn decline_device_code(&mut self, user_code: &str) -> bool {
        match self
            .tokens
            .device
            .values_mut()
            .find(|d| d.user_code == user_code)
        {
            Some(d) => {
                d.state = DeviceState::Declined;
                true
            }
            None => false,
        }
    }

    fn tenant_known(&self, t: &str) -> bool {
        t.eq_ignore_ascii_case(&self.tenant_id)
            || t.eq_ignore_ascii_case(&self.domain)
            || ["organizations", "common", "consumers"].contains(&t)
    }

    pub(crate) fn token_endpoint(&mut self, tenant: &str, which: &str, req: &Request) -> Response {
        let ct = req
            .get_header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_form =
            ct.split(';').next().map(str::trim) == Some("application/x-www-form-urlencoded");
        if is_form && ct.contains("charset") && self.cfg.reject_form_charset {
            return self.aad_error(90013, None, "");
        }
        // A non-form body is not decoded at all: the STS then misses every parameter.
        let params = if is_form {
            form_decode(&String::from_utf8_lossy(&req.body))
        } else {
            vec![]
        };
        let p = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if !self.tenant_known(tenant) {
            return self.aad_error(90002, None, &format!("Tenant '{tenant}' not found."));
        }
        // Client id and secret: body or HTTP Basic (RFC 6749 2.3.1).
        let mut client_id = p("client_id");
        let mut secret = p("client_secret");
        if let Some(basic) = req
            .get_header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            && let Some(dec) = STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            && let Some((id, s)) = dec.split_once(':')
        {
            client_id = Some(crate::http::pct_decode(id, true));
            secret = Some(crate::http::pct_decode(s, true));
        }
        let grant = p("grant_type");
        if which == "token" && grant.is_none() {
            return self.aad_error(900144, None, "");
        }
        let Some(client_id) = client_id else {
            return self.aad_error(900144, Some("invalid_request"), "(client_id)");
        };
        let Some(app) = self.apps.get(&client_id).cloned() else {
            return self.aad_error(700016, None, &format!("App: '{client_id}'."));
        };
        if let Some(code) = self.tokens.aadsts_app.get(&client_id).copied() {
            return self.aad_error(code, None, "");
        }
        if secret.is_some() && app.secret.is_none() {
            return self.aad_error(700025, None, "");
        }
        if let Some(s) = &secret {
            if app.secret.as_deref() != Some(s.as_str()) {
                return self.aad_error(7000215, None, &format!("App: '{client_id}'."));
            }
            if app.secret_expired {
                return self.aad_error(7000222, None, &format!("App: '{client_id}'."));
            }
        }
        let scope = p("scope").unwrap_or_default();
        if which == "devicecode" {
            if secret.is_none() && !app.public_client {
                return self.aad_error(7000218, None, "");
            }
            return self.device_code_start(&app.client_id, &scope);
        }
        let grant = grant.unwrap_or_default();
        match grant.as_str() {
            "client_credentials" => {
                if secret.is_none() && p("client_assertion").is_none() {
                    return self.aad_error(7000218, None, "");
                }
                if ["common", "consumers"].contains(&tenant) || tenant == "organizations" {
                    return self.aad_error(
                        90023,
                        Some("invalid_request"),
                        "Client credentials require an explicit tenant.",
                    );
                }
                let expected = format!("{}/.default", self.cfg.cloud.graph_host());
                let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
                if scopes.len() != 1 || !scopes[0].ends_with("/.default") {
                    return self.aad_error(70011, None, &format!("The scope '{scope}' is not valid. The scope must be of the form '<resource>/.default'."));
                }
                if !scopes[0].eq_ignore_ascii_case(&expected)
                    && scopes[0] != "00000003-0000-0000-c000-000000000000/.default"
                {
                    return self.aad_error(
                        500011,
                        None,
                        &format!(
                            "The resource principal named {} was not found in the tenant.",
                            scopes[0].trim_end_matches("/.default")
                        ),
                    );
                }
                let caller = Caller {
                    app_id: app.client_id.clone(),
                    user_id: None,
                    scp: vec![],
                    roles: app.roles.clone(),
                    token_exp_ms: 0,
                };
                let (at, exp_in) = self.mint_access_token(&caller);
                Response::json(
                    200,
                    &json!({"token_type": "Bearer", "expires_in": exp_in, "ext_expires_in": exp_in, "access_token": at}),
                )
            }
            "password" => {
                if tenant == "common" || tenant == "consumers" {
                    return self.aad_error(90023, Some("invalid_request"), "");
                }
                if secret.is_none() && !app.public_client {
                    return self.aad_error(7000218, None, "");
                }
                let username = p("username").unwrap_or_default();
                let password = p("password").unwrap_or_default();
                let Some(user) = self.users.find(&username).map(|e| e.user.clone()) else {
                    return self.aad_error(50034, None, "");
                };
                if let Some(code) = self.tokens.aadsts_user.get(&user.id).copied() {
                    return self.aad_error(code, None, "");
                }
                // Leading/trailing whitespace in passwords is unsupported by ROPC (1.2).
                if user.password != password || password.trim() != password {
                    return self.aad_error(50126, None, "");
                }
                if !user.account_enabled {
                    return self.aad_error(50057, None, "");
                }
                if user.mfa_required {
                    return self.aad_error(50076, None, "");
                }
                match self.delegated_scopes(&app, &scope) {
                    Ok(scopes) => self.user_token_response(&app.client_id, &user.id, scopes),
                    Err(r) => r,
                }
            }
            "refresh_token" => {
                if secret.is_none() && !app.public_client {
                    return self.aad_error(7000218, None, "");
                }
                let rt = p("refresh_token").unwrap_or_default();
                let now = self.now();
                let grant = self.tokens.refresh.get(&rt).map(|g| {
                    (
                        g.user_id.clone(),
                        g.app_id.clone(),
                        g.scopes.clone(),
                        g.expires,
                        g.revoked,
                    )
                });
                let Some((uid, app_id, scopes, expires, revoked)) = grant else {
                    return self.aad_error(70008, None, "");
                };
                if revoked || expires <= now || app_id != client_id {
                    return self.aad_error(70008, None, "");
                }
                if let Some(code) = self.tokens.aadsts_user.get(&uid).copied() {
                    let err = if code == 50076 {
                        Some("interaction_required")
                    } else {
                        None
                    };
                    return self.aad_error(code, err, "");
                }
                // A refresh may narrow scopes; keep the original grant otherwise.
                let requested = if scope.trim().is_empty() {
                    Ok(scopes.clone())
                } else {
                    self.delegated_scopes(&app, &scope)
                };
                match requested {
                    Ok(mut s) => {
                        // Rotation: the new RT is always issued; the old one stays valid.
                        if !s.iter().any(|x| x == "offline_access") {
                            s.push("offline_access".into());
                        }
                        self.user_token_response(&app.client_id, &uid, s)
                    }
                    Err(r) => r,
                }
            }
            "urn:ietf:params:oauth:grant-type:device_code" => {
                self.device_code_poll(&client_id, &p("device_code").unwrap_or_default())
            }
            _ => self.aad_error(70001, Some("unsupported_grant_type"), &format!("'{grant}'")),
        }
    }

    /// Validate requested delegated scopes; returns short scope names (with OIDC ones kept).
    fn delegated_scopes(
        &mut self,
        app: &crate::tenant::AppReg,
        scope: &str,
    ) -> Result<Vec<String>, Response> {
        let host = self.cfg.cloud.graph_host();
        let mut out = vec![];
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            let short =
                if let Some(rest) = s.strip_prefix("https://").and_then(|r| r.split_once('/')) {
                    if !s.starts_with(host) {
                        return Err(self.aad_error(
                        500011,
                        None,
                        &format!(
                            "The resource principal named https://{} was not found in the tenant.",
                            rest.0
                        ),
                    ));
                    }
                    rest.1.to_string()
                } else {
                    s.to_string()
                };
            if short == ".default" {
                out.extend(app.delegated.iter().cloned());
                continue;
            }
            if !OIDC_SCOPES.contains(&short.as_str())
                && !app.delegated.is_empty()
                && !app.delegated.iter().any(|d| d.eq_ignore_ascii_case(&short))
            {
                return Err(self.aad_error(
                    65001,
                    None,
                    &format!("Scope '{short}' not consented."),
                ));
            }
            out.push(short);
        }
        if out.iter().all(|s| OIDC_SCOPES.contains(&s.as_str())) {
            out.extend(app.delegated.iter().cloned());
        }
        Ok(out)
    }

    fn user_token_response(&mut self, app_id: &str, uid: &str, scopes: Vec<String>) -> Response {
        let api: Vec<String> = scopes
            .iter()
            .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
            .cloned()
            .collect();
        let caller = Caller {
            app_id: app_id.into(),
            user_id: Some(uid.into()),
            scp: api.clone(),
            roles: vec![],
            token_exp_ms: 0,
        };
        let (at, exp_in) = self.mint_access_token(&caller);
        let mut shown = api.clone();
        for o in ["profile", "openid", "email"] {
            if scopes.iter().any(|s| s == o) {
                shown.push(o.into());
            }
        }
        let mut body = json!({"token_type": "Bearer", "scope": shown.join(" "), "expires_in": exp_in,
                              "ext_expires_in": exp_in, "access_token": at});
        if scopes.iter().any(|s| s == "offline_access") {
            let rt = format!("1.{}", URL_SAFE_NO_PAD.encode(self.new_guid().as_bytes()));
            let expires = self.now() + self.cfg.refresh_token_lifetime_s * 1000;
            self.tokens.refresh.insert(
                rt.clone(),
                RefreshGrant {
                    user_id: uid.into(),
                    app_id: app_id.into(),
                    scopes: scopes.clone(),
                    expires,
                    revoked: false,
                },
            );
            body["refresh_token"] = json!(rt);
        }
        if scopes.iter().any(|s| s == "openid") {
            let upn = self
                .user(uid)
                .map(|u| u.user_principal_name.clone())
                .unwrap_or_default();
            let now_s = self.now() / 1000;
            let claims = json!({"aud": app_id, "iss": format!("{}/{}/v2.0", self.cfg.cloud.login_host(), self.tenant_id),
                                "iat": now_s, "nbf": now_s, "exp": now_s + 3600, "oid": uid, "tid": self.tenant_id,
                                "preferred_username": upn, "ver": "2.0"});
            body["id_token"] = json!(format!(
                "{}.{}.",
                b64u(&json!({"typ": "JWT", "alg": "none"})),
                b64u(&claims)
            ));
        }
        Response::json(200, &body)
    }

    fn device_code_start(&mut self, app_id: &str, scope: &str) -> Response {
        let app = self.apps.get(app_id).cloned().unwrap_or_default();
        let scopes = match self.delegated_scopes(&app, scope) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let device_code = format!(
            "DAQABAAEAAAD{}",
            URL_SAFE_NO_PAD.encode(format!("{}{}", self.new_guid(), self.new_guid()))
        );
        const ALPHA: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let user_code: String = (0..9)
            .map(|_| ALPHA[rand::Rng::gen_range(&mut self.rng, 0..ALPHA.len())] as char)
            .collect();
        let now = self.now();
        self.tokens.device.insert(
            device_code.clone(),
            DeviceCode {
                user_code: user_code.clone(),
                app_id: app_id.into(),
                scopes,
                expires: now + self.cfg.device_code_expires_s * 1000,
                interval_ms: self.cfg.device_code_interval_s * 1000,
                last_poll: None,
                state: DeviceState::Pending,
            },
        );
        let uri = "https://microsoft.com/devicelogin";
        Response::json(
            200,
            &json!({"device_code": device_code, "user_code": user_code, "verification_uri": uri,
                    "expires_in": self.cfg.device_code_expires_s, "interval": self.cfg.device_code_interval_s,
                    "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate.")}),
        )
    }

    fn device_code_poll(&mut self, client_id: &str, device_code: &str) -> Response {
        let now = self.now();
        let slow_down = self.cfg.device_code_slow_down;
        let Some(d) = self.tokens.device.get_mut(device_code) else {
            return self.aad_error(70018, None, "");
        };
        if d.app_id != client_id {
            return self.aad_error(70018, None, "");
        }
        if now >= d.expires {
            return self.aad_error(70019, None, "");
        }
        let early = d.last_poll.is_some_and(|t| now - t < d.interval_ms);
        d.last_poll = Some(now);
        match &d.state {
            DeviceState::Declined => self.aad_error(70000, None, ""),
            DeviceState::Redeemed => {
                self.aad_error(70018, None, "The device code was already redeemed.")
            }
            _ if early && slow_down => {
                // RFC 8628 3.5: the client must add 5 s to its interval.
                d.interval_ms += 5_000;
                let mut r = self.aad_error(70016, Some("slow_down"), "Polling too frequently.");
                let mut b = r.body_json();
                b["error"] = json!("slow_down");
                r.body = serde_json::to_vec(&b).unwrap_or_default();
                r
            }
            DeviceState::Pending => self.aad_error(70016, None, ""),
            DeviceState::Approved(uid) => {
                let uid = uid.clone();
                let scopes = d.scopes.clone();
                d.state = DeviceState::Redeemed;
                self.user_token_response(client_id, &uid, scopes)
            }
        }
    }

    fn sign(&self, msg: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.tokens.secret).expect("hmac key");
        mac.update(msg.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Mint a JWT-shaped access token (opaque to clients; HS256 with the fake's secret).
    pub(crate) fn mint_access_token(&mut self, c: &Caller) -> (String, i64) {
        let now_s = self.now() / 1000;
        // Real lifetimes vary (60-90 min): clients must use expires_in, never a constant.
        let jitter = self.cfg.access_token_lifetime_jitter_s;
        let life = self.cfg.access_token_lifetime_s
            + if jitter > 0 {
                rand::Rng::gen_range(&mut self.rng, 0..=jitter)
            } else {
                0
            };
        let mut claims = json!({"aud": self.cfg.cloud.graph_host(), "iss": format!("https://sts.windows.net/{}/", self.tenant_id),
            "iat": now_s, "nbf": now_s, "exp": now_s + life, "appid": c.app_id, "tid": self.tenant_id,
            "uti": self.new_guid(), "ver": "1.0"});
        if let Some(u) = &c.user_id {
            claims["oid"] = json!(u);
            claims["scp"] = json!(c.scp.join(" "));
            if let Some(user) = self.user(u) {
                claims["upn"] = json!(user.user_principal_name);
            }
        } else {
            claims["roles"] = json!(c.roles);
            claims["oid"] = json!(format!("sp-{}", c.app_id));
        }
        let head = b64u(&json!({"typ": "JWT", "alg": "HS256", "kid": "fake-m365"}));
        let signing_input = format!("{head}.{}", b64u(&claims));
        let sig = self.sign(&signing_input);
        (format!("{signing_input}.{sig}"), life)
    }

    /// Issue an access token directly (library shortcut for tests): delegated when `user` is set.
    pub fn issue_token(
        &mut self,
        app_id: &str,
        user: Option<&str>,
        scopes_or_roles: &[&str],
    ) -> String {
        let uid = user.and_then(|u| self.users.find(u).map(|e| e.user.id.clone()));
        let v: Vec<String> = scopes_or_roles.iter().map(|s| s.to_string()).collect();
        let c = match uid {
            Some(u) => Caller {
                app_id: app_id.into(),
                user_id: Some(u),
                scp: v,
                roles: vec![],
                token_exp_ms: 0,
            },
            None => Caller {
                app_id: app_id.into(),
                user_id: None,
                scp: vec![],
                roles: v,
                token_exp_ms: 0,
            },
        };
        self.mint_access_token(&c).0
    }

    /// Validate the bearer token of a Graph call (item 7).
    pub(crate) fn authenticate(&mut self, req: &Request) -> Result<Caller, GraphErr> {
        let unauth = |m: &str| {
            let mut e = gerr(401, "InvalidAuthenticationToken", m);
            e.headers.push(("WWW-Authenticate".into(), "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"".into()));
            e
        };
        let Some(tok) = req.get_header("authorization").and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) else {
            return Err(unauth("Access token is empty."));
        };
        let parts: Vec<&str> = tok.trim().split('.').collect();
        if parts.len() != 3 {
            return Err(unauth(
                "IDX14100: JWT is not well formed, there are no dots (.).",
            ));
        }
        if self.sign(&format!("{}.{}", parts[0], parts[1])) != parts[2] {
            return Err(unauth(
                "Access token validation failure. Invalid signature.",
            ));
        }
        let claims: Value = URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| unauth("Invalid token."))?;
        if claims["aud"].as_str() != Some(self.cfg.cloud.graph_host()) {
            return Err(unauth("Access token validation failure. Invalid audience."));
        }
        if claims["tid"].as_str() != Some(self.tenant_id.as_str()) {
            return Err(unauth("Access token validation failure. Invalid issuer."));
        }
        let now_s = self.now() / 1000;
        if claims["exp"].as_i64().unwrap_or(0) <= now_s {
            return Err(unauth("Lifetime validation failed, the token is expired."));
        }
        if claims["nbf"].as_i64().unwrap_or(0) > now_s + 300 {
            return Err(unauth(
                "Lifetime validation failed, the token is not yet valid (nbf).",
            ));
        }
        let app_id = claims["appid"].as_str().unwrap_or("").to_string();
        let exp_ms = claims["exp"].as_i64().unwrap_or(0) * 1000;
        if let Some(scp) = claims["scp"].as_str() {
            Ok(Caller {
                app_id,
                user_id: claims["oid"].as_str().map(str::to_string),
                scp: scp
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                roles: vec![],
                token_exp_ms: exp_ms,
            })
        } else {
            let roles = claims["roles"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Caller {
                app_id,
                user_id: None,
                scp: vec![],
                roles,
                token_exp_ms: exp_ms,
            })
        }
    }
}

/// 403 for a token that lacks the needed scope/role. Directory endpoints answer
/// `Authorization_RequestDenied`, the others `Forbidden`.
pub(crate) fn forbidden(directory: bool, caller: &Caller) -> GraphErr {
    let kind = if caller.is_app_only() {
        "application permission (roles)"
    } else {
        "delegated permission (scp)"
    };
    if directory {
        gerr(
            403,
            "Authorization_RequestDenied",
            &format!("Insufficient privileges to complete the operation. Missing {kind}."),
        )
    } else {
        gerr(
            403,
            "Forbidden",
            &format!(
                "Missing role permissions on the request. API requires one of the needed {kind}s."
            ),
        )
    }
}
