//! Items 1-6: the Entra token endpoint.

use fake_m365::Request;

use crate::common::*;

fn aad_code(r: &fake_m365::Response) -> u64 {
    r.body_json()["error_codes"][0].as_u64().unwrap_or(0)
}

#[test]
fn misencoded_password_fails_as_50126() {
    let mut t = setup();
    let app = t.app.clone();
    // Correctly encoded: works, although the password holds & + % # = < and spaces.
    let ok = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All"),
    ]);
    assert_eq!(ok.status, 200);
    // Unencoded: '&' splits the body, '+' becomes a space, '%' stays literal -> wrong password.
    let tenant = t.tenant();
    let raw = format!(
        "client_id={app}&grant_type=password&username=pbx-svc%40contoso.com&password={SVC_PASSWORD}&scope=Presence.Read.All"
    );
    let bad = t.token_raw(&tenant, &raw);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body_json()["error"], "invalid_grant");
    assert_eq!(aad_code(&bad), 50126);
}

#[test]
fn token_rejects_non_form_content_type() {
    let mut t = setup();
    let tenant = t.tenant();
    let body = format!(
        "{{\"client_id\":\"{}\",\"grant_type\":\"password\"}}",
        t.app
    );
    let r = t
        .fake
        .handle(
            Request::new("POST", &format!("/{tenant}/oauth2/v2.0/token"))
                .header("Content-Type", "application/json")
                .body(body.into_bytes()),
        )
        .unwrap_response();
    assert_eq!(r.status, 400);
    assert!(
        r.body_json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS900144:")
    );
}

#[test]
fn password_grant_rejected_on_common() {
    let mut t = setup();
    let body = form(&[
        ("client_id", &t.app.clone()),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All"),
    ]);
    for tenant in ["common", "consumers"] {
        let r = t.token_raw(tenant, &body);
        assert_eq!(r.status, 400);
        assert_eq!(r.body_json()["error"], "invalid_request");
    }
    assert_eq!(t.token_raw("organizations", &body).status, 200);
    assert_eq!(aad_code(&t.token_raw("nonexistent.example", &body)), 90002);
}

#[test]
fn client_credentials_requires_dot_default_scope() {
    let mut t = setup();
    let (d, s) = (t.daemon.clone(), t.daemon_secret.clone());
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        (
            "scope",
            "https://graph.microsoft.com/Presence.ReadWrite.All",
        ),
    ]);
    assert_eq!(r.status, 400);
    assert_eq!(r.body_json()["error"], "invalid_scope");
    assert_eq!(aad_code(&r), 70011);
    // HTTP Basic client authentication works too (RFC 6749 2.3.1).
    let tenant = t.tenant();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{d}:{}", fake_m365::http::pct_encode(&s)),
    );
    let r = t
        .fake
        .handle(
            Request::new("POST", &format!("/{tenant}/oauth2/v2.0/token"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Authorization", &format!("Basic {basic}"))
                .body(
                    form(&[
                        ("grant_type", "client_credentials"),
                        ("scope", "https://graph.microsoft.com/.default"),
                    ])
                    .into_bytes(),
                ),
        )
        .unwrap_response();
    assert_eq!(r.status, 200, "{:?}", r.body_json());
}

#[test]
fn scripted_aadsts_errors_have_entra_shape() {
    let mut t = setup();
    let app = t.app.clone();
    let ropc = |t: &mut T| {
        t.token(&[
            ("client_id", &app),
            ("grant_type", "password"),
            ("username", "pbx-svc@contoso.com"),
            ("password", SVC_PASSWORD),
            ("scope", "Presence.Read.All"),
        ])
    };
    for code in [50126u32, 50076, 50079, 53003, 50057, 50053, 50055] {
        t.fake.script_user_error("pbx-svc@contoso.com", Some(code));
        let r = ropc(&mut t);
        assert_eq!(r.status, 400);
        let b = r.body_json();
        assert_eq!(b["error"], "invalid_grant");
        assert!(
            b["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}:"))
        );
        assert!(
            b["error_description"]
                .as_str()
                .unwrap()
                .contains("Trace ID:")
        );
        assert_eq!(b["error_codes"][0], code);
        for k in ["timestamp", "trace_id", "correlation_id"] {
            assert!(b[k].is_string(), "{k}");
        }
    }
    t.fake.script_user_error("pbx-svc@contoso.com", None);
    assert_eq!(ropc(&mut t).status, 200);
    // App-level errors.
    let (d, s) = (t.daemon.clone(), t.daemon_secret.clone());
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", "the-secret-id-not-value"),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    assert_eq!((r.status, aad_code(&r)), (401, 7000215));
    let r = t.token(&[
        ("client_id", &d),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    assert_eq!((r.status, aad_code(&r)), (401, 7000218));
    // ROPC with a confidential app but no secret: public client flows disabled.
    let r = t.token(&[
        ("client_id", &d),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All"),
    ]);
    assert_eq!(aad_code(&r), 7000218);
    let r = t.token(&[
        ("client_id", "99999999-9999-9999-9999-999999999999"),
        ("grant_type", "client_credentials"),
        ("client_secret", "x"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    assert_eq!(
        (
            r.status,
            r.body_json()["error"].as_str().unwrap().to_string(),
            aad_code(&r)
        ),
        (400, "unauthorized_client".into(), 700016)
    );
    t.fake.script_app_error(&d, Some(7000222));
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    assert_eq!((r.status, aad_code(&r)), (401, 7000222));
}

#[test]
fn refresh_token_rotates_and_old_stays_valid_until_revoked() {
    let mut t = setup();
    let app = t.app.clone();
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All offline_access"),
    ]);
    let rt1 = r.body_json()["refresh_token"].as_str().unwrap().to_string();
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "refresh_token"),
        ("refresh_token", &rt1),
    ]);
    assert_eq!(r.status, 200);
    let rt2 = r.body_json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2, "every refresh returns a new RT");
    // The old one still works.
    assert_eq!(
        t.token(&[
            ("client_id", &app),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1)
        ])
        .status,
        200
    );
    t.fake.revoke_refresh_tokens("pbx-svc@contoso.com");
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "refresh_token"),
        ("refresh_token", &rt2),
    ]);
    assert_eq!(
        (
            r.body_json()["error"].as_str().unwrap().to_string(),
            aad_code(&r)
        ),
        ("invalid_grant".into(), 70008)
    );
}

#[test]
fn short_access_token_lifetime_expires() {
    let mut cfg = fake_m365::Config::default();
    cfg.access_token_lifetime_s = 60;
    let mut t = setup_with(cfg);
    let app = t.app.clone();
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "User.Read.All"),
    ]);
    assert_eq!(r.body_json()["expires_in"], 60);
    let tok = r.body_json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.get(&tok, "/users").status, 200);
    t.clock.advance(61_000);
    let r = t.get(&tok, "/users");
    assert_eq!(r.status, 401);
    assert_eq!(r.body_json()["error"]["code"], "InvalidAuthenticationToken");
}

#[test]
fn client_credentials_never_returns_refresh_token() {
    let mut t = setup();
    let (d, s) = (t.daemon.clone(), t.daemon_secret.clone());
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        (
            "scope",
            "https://graph.microsoft.com/.default offline_access",
        ),
    ]);
    // offline_access is not a .default scope: rejected; with only .default there is no RT.
    assert_eq!(r.status, 400);
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    let b = r.body_json();
    assert!(b.get("refresh_token").is_none());
    assert_eq!(b["token_type"], "Bearer");
}

#[test]
fn refresh_token_only_with_offline_access() {
    let mut t = setup();
    let app = t.app.clone();
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All"),
    ]);
    assert!(r.body_json().get("refresh_token").is_none());
    assert!(r.body_json().get("id_token").is_none());
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All offline_access openid"),
    ]);
    assert!(r.body_json()["refresh_token"].is_string());
    assert!(r.body_json()["id_token"].is_string());
}

fn device_start(t: &mut T) -> (String, String, i64) {
    let tenant = t.tenant();
    let r = t
        .fake
        .handle(
            Request::new("POST", &format!("/{tenant}/oauth2/v2.0/devicecode"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(
                    form(&[
                        ("client_id", &t.app.clone()),
                        ("scope", "Presence.Read.All offline_access"),
                    ])
                    .into_bytes(),
                ),
        )
        .unwrap_response();
    assert_eq!(r.status, 200);
    let b = r.body_json();
    for k in [
        "device_code",
        "user_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    ] {
        assert!(!b[k].is_null(), "{k}");
    }
    assert!(b.get("verification_uri_complete").is_none());
    (
        b["device_code"].as_str().unwrap().into(),
        b["user_code"].as_str().unwrap().into(),
        b["interval"].as_i64().unwrap(),
    )
}

#[test]
fn device_code_flow_pending_slow_down_approve() {
    let mut t = setup();
    let (dc, uc, interval) = device_start(&mut t);
    let app = t.app.clone();
    let poll = |t: &mut T| {
        t.token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", &app),
            ("device_code", &dc),
        ])
    };
    let r = poll(&mut t);
    assert_eq!(
        (
            r.body_json()["error"].as_str().unwrap().to_string(),
            aad_code(&r)
        ),
        ("authorization_pending".into(), 70016)
    );
    // Polled again at once: slow_down.
    assert_eq!(poll(&mut t).body_json()["error"], "slow_down");
    t.clock.advance((interval + 5) * 1000 + 1);
    assert_eq!(poll(&mut t).body_json()["error"], "authorization_pending");
    assert!(t.fake.approve_device_code(&uc, "pbx-svc@contoso.com"));
    t.clock.advance((interval + 5) * 1000 + 1);
    let r = poll(&mut t);
    assert_eq!(r.status, 200);
    assert!(r.body_json()["refresh_token"].is_string());
}

#[test]
fn device_code_expires_and_declines() {
    let mut t = setup();
    let app = t.app.clone();
    let (dc, _, _) = device_start(&mut t);
    t.clock.advance(901_000);
    let r = t.token(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", &app),
        ("device_code", &dc),
    ]);
    assert_eq!(
        (
            r.body_json()["error"].as_str().unwrap().to_string(),
            aad_code(&r)
        ),
        ("expired_token".into(), 70019)
    );
    let (dc, uc, _) = device_start(&mut t);
    t.fake.decline_device_code(&uc);
    let r = t.token(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", &app),
        ("device_code", &dc),
    ]);
    assert_eq!(r.body_json()["error"], "authorization_declined");
    let r = t.token(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", &app),
        ("device_code", "bogus"),
    ]);
    assert_eq!(r.body_json()["error"], "bad_verification_code");
}

#[test]
fn password_with_outer_whitespace_fails() {
    let mut t = setup();
    let app = t.app.clone();
    t.fake.add_user(fake_m365::UserSpec {
        display_name: "Spacey".into(),
        user_principal_name: Some("spacey@contoso.com".into()),
        password: Some(" pass word ".into()),
        ..Default::default()
    });
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "spacey@contoso.com"),
        ("password", " pass word "),
        ("scope", "Presence.Read.All"),
    ]);
    assert_eq!(aad_code(&r), 50126);
}

#[test]
fn public_client_with_secret_and_lifetime_jitter() {
    let mut cfg = fake_m365::Config::default();
    cfg.access_token_lifetime_jitter_s = 1800;
    let mut t = setup_with(cfg);
    let app = t.app.clone();
    let r = t.token(&[
        ("client_id", &app),
        ("client_secret", "x"),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "Presence.Read.All"),
    ]);
    assert_eq!((r.status, aad_code(&r)), (401, 700025));
    let lifetimes: Vec<i64> = (0..8)
        .map(|_| {
            t.token(&[
                ("client_id", &app),
                ("grant_type", "password"),
                ("username", "pbx-svc@contoso.com"),
                ("password", SVC_PASSWORD),
                ("scope", "Presence.Read.All"),
            ])
            .body_json()["expires_in"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(lifetimes.iter().all(|l| (3599..=5399).contains(l)));
    assert!(
        lifetimes.iter().any(|l| *l != lifetimes[0]),
        "lifetimes vary: {lifetimes:?}"
    );
}
