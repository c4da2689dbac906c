//! Items 18-28: subscriptions, handshake, rich notifications, delivery, lifecycle, outage.

use aws_lc_rs::cipher::{AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fake_m365::clock::{TEST_EPOCH_MS, iso_z};
use fake_m365::delivery::HealthState;
use fake_m365::{Config, Handled, OutboundResult, Purpose, ValidationTokenMode};
use serde_json::{Value, json};
use sha1::Digest;

use crate::common::*;

/// The connector side: an RSA key pair and a self-signed certificate, as a test would make it.
pub struct ConnectorCert {
    pub cert_b64: String,
    pub cert_der: Vec<u8>,
    pub pkcs8: Vec<u8>,
}

pub fn connector_cert() -> ConnectorCert {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["connector.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().to_vec();
    ConnectorCert {
        cert_b64: STANDARD.encode(&der),
        cert_der: der,
        pkcs8: key.serialize_der(),
    }
}

/// Independent implementation of graph.md 3.9 with aws-lc-rs (the fake uses RustCrypto).
pub fn decrypt(enc: &Value, pkcs8: &[u8]) -> Value {
    let k =
        OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(pkcs8).unwrap()).unwrap();
    let wrapped = STANDARD.decode(enc["dataKey"].as_str().unwrap()).unwrap();
    let mut out = vec![0u8; k.min_output_size()];
    let sym = k
        .decrypt(&OAEP_SHA1_MGF1SHA1, &wrapped, &mut out, None)
        .unwrap()
        .to_vec();
    assert_eq!(sym.len(), 32);
    let data = STANDARD.decode(enc["data"].as_str().unwrap()).unwrap();
    let sig = STANDARD
        .decode(enc["dataSignature"].as_str().unwrap())
        .unwrap();
    aws_lc_rs::hmac::verify(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &sym),
        &data,
        &sig,
    )
    .expect("HMAC-SHA256 over ciphertext");
    let iv: [u8; 16] = sym[..16].try_into().unwrap();
    let dk = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &sym).unwrap())
        .unwrap();
    let mut buf = data.clone();
    let pt = dk
        .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
        .unwrap();
    serde_json::from_slice(pt).unwrap()
}

fn rich_body(ids: &[&str], c: &ConnectorCert) -> Value {
    let mut b = presence_sub_body(ids);
    b["includeResourceData"] = json!(true);
    b["encryptionCertificate"] = json!(c.cert_b64);
    b["encryptionCertificateId"] = json!("pbxconn-cert-2026-01");
    b
}

#[test]
fn handshake_validates_both_urls_exact_token() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let mut b = presence_sub_body(&[&a]);
    b["lifecycleNotificationUrl"] = b["notificationUrl"].clone();
    let Handled::Pending(ticket) = t.send(&tok, "POST", "/subscriptions", b) else {
        panic!("handshake expected")
    };
    let effects = t.fake.take_effects();
    // Identical URLs: two validation POSTs, query string preserved, token URL-encoded.
    assert_eq!(effects.len(), 2);
    for e in &effects {
        assert_eq!(e.purpose, Purpose::Validation);
        assert!(
            e.url
                .starts_with("https://connector.example/notify?tenant=contoso&validationToken=")
        );
        assert!(!e.url.contains(' '));
        assert_eq!(e.timeout_ms, 10_000);
    }
    assert!(t.fake.take_completed().is_empty());
    t.fake
        .outbound_result(effects[0].id, echo_validation(&effects[0]));
    assert!(t.fake.take_completed().is_empty(), "waits for both");
    t.fake
        .outbound_result(effects[1].id, echo_validation(&effects[1]));
    let done = t.fake.take_completed();
    assert_eq!(done[0].0, ticket);
    assert_eq!(done[0].1.status, 201);
    let s = done[0].1.body_json();
    assert_eq!(s["applicationId"], t.app.as_str());
    assert_eq!(s["creatorId"], t.svc.id.as_str());
    assert!(s.get("encryptionCertificate").is_none_or(|v| v.is_null()));
}

#[test]
fn handshake_timeout_when_endpoint_never_answers() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let Handled::Pending(ticket) = t.send(&tok, "POST", "/subscriptions", presence_sub_body(&[&a]))
    else {
        panic!()
    };
    let effects = t.fake.take_effects();
    assert_eq!(effects.len(), 1);
    // The endpoint never answers and the driver reports nothing: the core times out itself.
    t.clock.advance(9_000);
    assert!(t.fake.take_completed().is_empty());
    t.clock.advance(3_000);
    let done = t.fake.take_completed();
    assert_eq!(done[0].0, ticket);
    assert_eq!(done[0].1.status, 400);
    assert_eq!(done[0].1.body_json()["error"]["code"], "InvalidRequest");
    assert_eq!(
        done[0].1.body_json()["error"]["message"],
        "Subscription validation request timed out."
    );
    assert!(t.fake.subscriptions().is_empty());
}

#[test]
fn handshake_mismatch_and_non_200_fail() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let cases: Vec<(OutboundResult, &str)> = vec![
        (
            OutboundResult::Status {
                status: 202,
                content_type: Some("text/plain".into()),
                body: vec![],
                elapsed_ms: 5,
            },
            "must respond with 200 OK",
        ),
        (
            OutboundResult::Status {
                status: 200,
                content_type: Some("text/plain".into()),
                body: b"Validation%3A+encoded".to_vec(),
                elapsed_ms: 5,
            },
            "exactly match validationToken",
        ),
        (
            OutboundResult::Failed {
                tls: true,
                message: "unknown issuer".into(),
            },
            "trust relationship",
        ),
    ];
    for (res, msg) in cases {
        let Handled::Pending(_) = t.send(&tok, "POST", "/subscriptions", presence_sub_body(&[&a]))
        else {
            panic!()
        };
        let e = t.fake.take_effects();
        t.fake.outbound_result(e[0].id, res);
        let done = t.fake.take_completed();
        assert_eq!(done[0].1.status, 400);
        assert!(
            done[0].1.body_json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(msg),
            "{msg}"
        );
    }
    // http notificationUrl rejected unless the loopback switch allows it.
    let mut b = presence_sub_body(&[&a]);
    b["notificationUrl"] = json!("http://127.0.0.1:9/notify");
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", b.clone())
            .unwrap_response()
            .status,
        400
    );
    t.fake.config_mut().allow_http_loopback = true;
    assert!(matches!(
        t.send(&tok, "POST", "/subscriptions", b),
        Handled::Pending(_)
    ));
}

#[test]
fn presence_resource_requires_quoted_ids_and_max_650() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let mut b = presence_sub_body(&[&a]);
    b["resource"] = json!(format!("/communications/presences?$filter=id in ({a})"));
    let r = t
        .send(&tok, "POST", "/subscriptions", b.clone())
        .unwrap_response();
    assert_eq!(r.status, 400);
    assert_eq!(r.body_json()["error"]["message"], "Invalid filter clause");
    let ids: Vec<String> = (0..651)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", presence_sub_body(&refs))
            .unwrap_response()
            .status,
        400
    );
    assert!(matches!(
        t.send(
            &tok,
            "POST",
            "/subscriptions",
            presence_sub_body(&refs[..650])
        ),
        Handled::Pending(_)
    ));
    // changeType must be updated; single-user resource form accepted.
    let mut b = presence_sub_body(&[&a]);
    b["changeType"] = json!("created,updated");
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", b)
            .unwrap_response()
            .status,
        400
    );
    assert_eq!(
        fake_m365::subscriptions::parse_resource(&format!("communications/presences/{a}"), 650)
            .unwrap(),
        fake_m365::subscriptions::SubKind::Presence(vec![a.clone()])
    );
}

#[test]
fn second_presence_subscription_same_user_app_is_409() {
    let mut t = setup();
    let tok = t.svc_token();
    let (a, b) = (t.alice.id.clone(), t.bob.id.clone());
    assert_eq!(t.subscribe(&tok, presence_sub_body(&[&a])).status, 201);
    // Even for different ids.
    let r = t
        .send(&tok, "POST", "/subscriptions", presence_sub_body(&[&b]))
        .unwrap_response();
    assert_eq!(r.status, 409);
    assert_eq!(r.body_json()["error"]["code"], "ExtensionError");
    assert!(
        r.body_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(
                "A subscripton already exists. It must be deleted before a another can be made."
            )
    );
    // Another service user of the same app may subscribe.
    t.fake.add_user(fake_m365::UserSpec {
        display_name: "PBX Service 2".into(),
        user_principal_name: Some("pbx-svc2@contoso.com".into()),
        ..Default::default()
    });
    let tok2 = t.fake.issue_token(
        &t.app.clone(),
        Some("pbx-svc2@contoso.com"),
        &["Presence.Read.All"],
    );
    assert_eq!(t.subscribe(&tok2, presence_sub_body(&[&b])).status, 201);
    // Generic duplicate: same resource + changeType for users.
    let users = json!({"changeType": "updated,deleted", "notificationUrl": "https://connector.example/users", "resource": "users", "expirationDateTime": iso_z(TEST_EPOCH_MS + 86_400_000), "clientState": "x"});
    let app_tok = t.app_token();
    assert_eq!(t.subscribe(&app_tok, users.clone()).status, 201);
    let r = t
        .send(&app_tok, "POST", "/subscriptions", users)
        .unwrap_response();
    assert_eq!(r.status, 409);
    assert!(
        r.body_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists for the requested combination")
    );
}

#[test]
fn app_only_presence_subscription_is_403() {
    let mut t = setup();
    let tok = t.app_token();
    let a = t.alice.id.clone();
    let r = t
        .send(&tok, "POST", "/subscriptions", presence_sub_body(&[&a]))
        .unwrap_response();
    assert_eq!(r.status, 403);
    assert_eq!(r.body_json()["error"]["code"], "ExtensionError");
    assert!(
        r.body_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not authorized for this user or application")
    );
}

#[test]
fn expiry_rules_raise_45_reject_over_max_and_expire() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let mut b = presence_sub_body(&[&a]);
    b["expirationDateTime"] = json!(iso_z(TEST_EPOCH_MS + 61 * 60_000));
    let r = t
        .send(&tok, "POST", "/subscriptions", b.clone())
        .unwrap_response();
    assert_eq!(r.status, 400);
    assert_eq!(r.body_json()["error"]["code"], "ExtensionError");
    assert_eq!(
        r.body_json()["error"]["message"],
        "Subscription expiration can only be 60 minutes in the future."
    );
    b["expirationDateTime"] = json!(iso_z(TEST_EPOCH_MS + 10 * 60_000));
    let r = t.subscribe(&tok, b);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body_json()["expirationDateTime"],
        iso_z(TEST_EPOCH_MS + 45 * 60_000)
    );
    let id = r.body_json()["id"].as_str().unwrap().to_string();
    // Events: 10,080 min max (configurable).
    let app_tok = t.app_token();
    let ev = json!({"changeType": "created,updated,deleted", "notificationUrl": "https://connector.example/ev", "resource": format!("/users/{a}/events"), "expirationDateTime": iso_z(TEST_EPOCH_MS + 10_081 * 60_000), "clientState": "x"});
    assert_eq!(
        t.send(&app_tok, "POST", "/subscriptions", ev)
            .unwrap_response()
            .status,
        400
    );
    // Expired subscriptions disappear: PATCH -> 404, no more deliveries.
    t.clock.advance(45 * 60_000);
    t.fake.tick();
    assert!(t.fake.subscriptions().is_empty());
    let r = t
        .send(
            &tok,
            "PATCH",
            &format!("/subscriptions/{id}"),
            json!({"expirationDateTime": iso_z(TEST_EPOCH_MS + 100 * 60_000)}),
        )
        .unwrap_response();
    assert_eq!(r.status, 404);
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    assert!(t.fake.take_effects().is_empty());
}

#[test]
fn include_resource_data_requires_certificate() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let mut b = presence_sub_body(&[&a]);
    b["includeResourceData"] = json!(true);
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", b.clone())
            .unwrap_response()
            .status,
        400
    );
    b["encryptionCertificate"] = json!("bm90IGEgY2VydA==");
    b["encryptionCertificateId"] = json!("c1");
    assert_eq!(
        t.send(&tok, "POST", "/subscriptions", b)
            .unwrap_response()
            .status,
        400
    );
}

#[test]
fn rich_notification_decrypts_with_independent_implementation() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let c = connector_cert();
    assert_eq!(t.subscribe(&tok, rich_body(&[&a], &c)).status, 201);
    t.fake
        .teams_client_presence(&a, None, "Busy", "InACall")
        .unwrap();
    let sent = t.answer_all(echo_validation);
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let item = &body["value"][0];
    assert_eq!(item["clientState"], "secret-state");
    assert_eq!(item["tenantId"], t.tenant());
    assert!(
        item["subscriptionExpirationDateTime"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );
    assert_eq!(
        item["resourceData"]["@odata.type"],
        "#microsoft.graph.presence"
    );
    assert_eq!(
        item["resourceData"]["@odata.id"],
        format!("users/{a}/presence")
    );
    let enc = &item["encryptedContent"];
    assert_eq!(enc["encryptionCertificateId"], "pbxconn-cert-2026-01");
    let thumb: String = sha1::Sha1::digest(&c.cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(enc["encryptionCertificateThumbprint"], thumb);
    let plain = decrypt(enc, &c.pkcs8);
    assert_eq!(plain["id"], a.as_str());
    assert_eq!(plain["availability"], "Busy");
    assert_eq!(plain["activity"], "InACall");
    // A tampered ciphertext fails the HMAC check.
    let mut bad = enc.clone();
    let mut data = STANDARD.decode(enc["data"].as_str().unwrap()).unwrap();
    data[0] ^= 1;
    bad["data"] = json!(STANDARD.encode(&data));
    assert!(std::panic::catch_unwind(|| decrypt(&bad, &c.pkcs8)).is_err());
}

fn verify_jwt(tok: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = tok.split('.').collect();
    let head: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == head["kid"])
        .ok_or("unknown kid")?;
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let pk = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
    pk.verify(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    )
    .map_err(|_| "bad signature".to_string())?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap())
}

fn rich_tokens(t: &mut T) -> Value {
    t.fake
        .teams_client_presence(&t.alice.id.clone(), None, "Busy", "InACall")
        .unwrap();
    t.fake
        .teams_client_presence(&t.alice.id.clone(), None, "Away", "Away")
        .unwrap();
    let sent = t.answer_all(echo_validation);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    body["validationTokens"].clone()
}

#[test]
fn validation_tokens_signed_by_rotating_jwks() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let c = connector_cert();
    t.subscribe(&tok, rich_body(&[&a], &c));
    let tokens = rich_tokens(&mut t);
    // One token per app+tenant even with two items in the batch.
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let jwks = t
        .fake
        .handle(fake_m365::Request::new(
            "GET",
            "/common/discovery/v2.0/keys",
        ))
        .unwrap_response()
        .body_json();
    let claims = verify_jwt(tokens[0].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["aud"], t.app.as_str());
    assert_eq!(claims["azp"], "0bf30f3b-4a52-48df-9a82-234910c4a086");
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{}/v2.0", t.tenant())
    );
    assert!(claims["exp"].as_i64().unwrap() > TEST_EPOCH_MS / 1000);
    // Rotation: a new kid that a cached JWKS does not know; refetching finds it.
    t.fake.rotate_signing_key();
    let tokens = rich_tokens(&mut t);
    assert_eq!(
        verify_jwt(tokens[0].as_str().unwrap(), &jwks),
        Err("unknown kid".into())
    );
    let jwks2 = t.fake.jwks();
    assert!(verify_jwt(tokens[0].as_str().unwrap(), &jwks2).is_ok());
    assert_eq!(
        jwks2["keys"].as_array().unwrap().len(),
        2,
        "previous key stays published"
    );
    // Daily rotation happens by itself.
    t.clock.advance(86_400_000);
    t.fake.tick();
    let jwks3 = t.fake.jwks();
    assert_ne!(jwks3["keys"][1]["kid"], jwks2["keys"][1]["kid"]);
}

#[test]
fn validation_token_switches_bad_sig_aud_expired_null() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let c = connector_cert();
    t.subscribe(&tok, rich_body(&[&a], &c));
    let jwks = t.fake.jwks();
    t.fake.config_mut().validation_tokens = ValidationTokenMode::BadSignature;
    assert_eq!(
        verify_jwt(rich_tokens(&mut t)[0].as_str().unwrap(), &jwks),
        Err("bad signature".into())
    );
    t.fake.config_mut().validation_tokens = ValidationTokenMode::WrongAudience;
    assert_ne!(
        verify_jwt(rich_tokens(&mut t)[0].as_str().unwrap(), &jwks).unwrap()["aud"],
        t.app.as_str()
    );
    t.fake.config_mut().validation_tokens = ValidationTokenMode::Expired;
    assert!(
        verify_jwt(rich_tokens(&mut t)[0].as_str().unwrap(), &jwks).unwrap()["exp"]
            .as_i64()
            .unwrap()
            < TEST_EPOCH_MS / 1000
    );
    t.fake.config_mut().validation_tokens = ValidationTokenMode::Null;
    assert!(rich_tokens(&mut t).is_null());
    t.fake.config_mut().validation_tokens = ValidationTokenMode::Valid;
    t.fake.config_mut().validation_token_v1 = true;
    let claims = verify_jwt(rich_tokens(&mut t)[0].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", t.tenant())
    );
    assert_eq!(claims["appid"], "0bf30f3b-4a52-48df-9a82-234910c4a086");
}

fn notify_once(t: &mut T, av: &str) {
    t.fake
        .teams_client_presence(&t.alice.id.clone(), None, av, av)
        .unwrap();
}

#[test]
fn delivery_batches_retries_with_backoff_and_discards() {
    let mut cfg = Config::default();
    cfg.delivery_latency_ms = 1_000;
    cfg.retry_base_ms = 1_000;
    cfg.retry_horizon_ms = 10_000;
    let mut t = setup_with(cfg);
    let tok = t.svc_token();
    let (a, b) = (t.alice.id.clone(), t.bob.id.clone());
    t.subscribe(&tok, presence_sub_body(&[&a, &b]));
    // Two changes from different users within the latency window: one POST with two items.
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    t.fake
        .teams_client_presence(&b, None, "Away", "Away")
        .unwrap();
    assert!(t.fake.take_effects().is_empty(), "latency not elapsed");
    t.clock.advance(1_000);
    let sent = t.fake.take_effects();
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    // A 2xx after the 3 s ack window is not an ack; a 500 neither: retried with backoff.
    t.fake.outbound_result(
        sent[0].id,
        OutboundResult::Status {
            status: 200,
            content_type: None,
            body: vec![],
            elapsed_ms: 3_500,
        },
    );
    assert!(t.fake.take_effects().is_empty());
    t.clock.advance(1_000);
    let r1 = t.fake.take_effects();
    assert_eq!(r1.len(), 1);
    t.fake.outbound_result(
        r1[0].id,
        OutboundResult::Status {
            status: 500,
            content_type: None,
            body: vec![],
            elapsed_ms: 5,
        },
    );
    t.clock.advance(1_000);
    assert!(
        t.fake.take_effects().is_empty(),
        "second retry waits twice as long"
    );
    t.clock.advance(1_000);
    let r2 = t.fake.take_effects();
    assert_eq!(r2.len(), 1);
    t.fake.outbound_result(r2[0].id, OutboundResult::Timeout);
    t.clock.advance(4_000);
    let r3 = t.fake.take_effects();
    t.fake.outbound_result(
        r3[0].id,
        OutboundResult::Status {
            status: 503,
            content_type: None,
            body: vec![],
            elapsed_ms: 5,
        },
    );
    // Next delay (8 s) would pass the 10 s horizon: discarded.
    assert_eq!(t.fake.deliveries().last().unwrap().outcome, "discarded");
    t.clock.advance(60_000);
    assert!(t.fake.take_effects().is_empty());
    // A successful delivery.
    notify_once(&mut t, "DoNotDisturb");
    t.clock.advance(1_000);
    t.answer_all(echo_validation);
    assert_eq!(t.fake.deliveries().last().unwrap().outcome, "delivered");
}

#[test]
fn slow_and_drop_states() {
    let mut cfg = Config::default();
    cfg.health_min_samples = 10;
    let mut t = setup_with(cfg);
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.subscribe(&tok, presence_sub_body(&[&a]));
    let url = "https://connector.example/notify?tenant=contoso".to_string();
    let states = ["Busy", "Away"];
    // 10 answers, 2 of them slower than 3 s (20 % > 10 %): slow.
    for i in 0..10 {
        notify_once(&mut t, states[i % 2]);
        t.answer_all(|_| OutboundResult::Status {
            status: 202,
            content_type: None,
            body: vec![],
            elapsed_ms: if i < 2 { 3_500 } else { 10 },
        });
    }
    assert_eq!(t.fake.endpoint_health(&url), HealthState::Slow);
    notify_once(&mut t, "DoNotDisturb");
    assert!(
        t.fake
            .take_effects()
            .iter()
            .all(|e| e.purpose != Purpose::Notification),
        "delayed 10 min"
    );
    t.clock.advance(600_000);
    assert!(!t.fake.take_effects().is_empty());
    assert_eq!(t.fake.endpoint_health(&url), HealthState::Normal);
    // 10 samples, 2 timeouts (20 % > 15 %): drop.
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.subscribe(&tok, presence_sub_body(&[&a]));
    for i in 0..10 {
        notify_once(&mut t, states[i % 2]);
        t.answer_all(|_| {
            if i < 2 {
                OutboundResult::Timeout
            } else {
                OutboundResult::Status {
                    status: 202,
                    content_type: None,
                    body: vec![],
                    elapsed_ms: 10,
                }
            }
        });
    }
    assert_eq!(t.fake.endpoint_health(&url), HealthState::Drop);
    notify_once(&mut t, "DoNotDisturb");
    assert_eq!(t.fake.deliveries().last().unwrap().outcome, "dropped");
}

#[test]
fn duplicates_and_reordering_switches() {
    let mut cfg = Config::default();
    cfg.duplicate_notifications = true;
    cfg.reorder_notifications = true;
    cfg.delivery_latency_ms = 100;
    let mut t = setup_with(cfg);
    let tok = t.svc_token();
    let (a, b) = (t.alice.id.clone(), t.bob.id.clone());
    t.subscribe(&tok, presence_sub_body(&[&a, &b]));
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    t.fake
        .teams_client_presence(&b, None, "Away", "Away")
        .unwrap();
    t.clock.advance(100);
    let sent = t.fake.take_effects();
    assert_eq!(sent.len(), 2, "duplicated");
    assert_eq!(sent[0].body, sent[1].body);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body["value"][0]["resource"],
        format!("communications/presences/{b}"),
        "reordered"
    );
}

#[test]
fn lifecycle_reauthorization_pauses_until_reauthorize() {
    let mut t = setup();
    let tok = t.svc_token(); // expires at T0 + 3599 s
    let a = t.alice.id.clone();
    let mut b = presence_sub_body(&[&a]);
    b["lifecycleNotificationUrl"] = json!("https://connector.example/lifecycle");
    let id = t.subscribe(&tok, b).body_json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Renewed at 30 min with the same (old) token: the subscription now outlives the token.
    t.clock.advance(30 * 60_000);
    let r = t
        .send(
            &tok,
            "PATCH",
            &format!("/subscriptions/{id}"),
            json!({"expirationDateTime": iso_z(t.fake.now() + 60 * 60_000)}),
        )
        .unwrap_response();
    assert_eq!(r.status, 200);
    // 15 minutes before the token expires: reauthorizationRequired to the lifecycle URL.
    t.clock.advance(15 * 60_000);
    let sent = t.answer_all(echo_validation);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].purpose, Purpose::Lifecycle);
    assert_eq!(sent[0].url, "https://connector.example/lifecycle");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body["value"][0]["lifecycleEvent"],
        "reauthorizationRequired"
    );
    assert_eq!(body["value"][0]["subscriptionId"], id.as_str());
    // Still delivering while the token is valid.
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    assert_eq!(t.answer_all(echo_validation).len(), 1);
    // Token expired: delivery paused, changes held.
    t.clock.advance(15 * 60_000);
    t.fake
        .teams_client_presence(&a, None, "Away", "Away")
        .unwrap();
    assert!(t.answer_all(echo_validation).is_empty());
    let tok = t.svc_token();
    let r = t
        .send(
            &tok,
            "POST",
            &format!("/subscriptions/{id}/reauthorize"),
            json!(null),
        )
        .unwrap_response();
    assert_eq!(r.status, 204);
    assert_eq!(t.answer_all(echo_validation).len(), 1, "backlog released");
    // PATCH within 10 minutes of reauthorize is flagged.
    t.send(
        &tok,
        "PATCH",
        &format!("/subscriptions/{id}"),
        json!({"expirationDateTime": iso_z(t.fake.now() + 60 * 60_000)}),
    );
    assert!(!t.fake.subscriptions()[0].flags.is_empty());
    // Switch: pause as soon as reauthorizationRequired is sent.
    t.fake.config_mut().pause_on_reauthorization_required = true;
    assert!(t.fake.lifecycle_event(&id, "reauthorizationRequired"));
    t.answer_all(echo_validation);
    t.fake
        .teams_client_presence(&a, None, "DoNotDisturb", "DoNotDisturb")
        .unwrap();
    assert!(t.answer_all(echo_validation).is_empty());
    // subscriptionRemoved / missed on request.
    assert!(t.fake.lifecycle_event(&id, "missed"));
    assert!(t.fake.lifecycle_event(&id, "subscriptionRemoved"));
    let sent = t.answer_all(echo_validation);
    let events: Vec<String> = sent
        .iter()
        .flat_map(|e| {
            serde_json::from_slice::<Value>(&e.body).unwrap()["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["lifecycleEvent"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(events, vec!["missed", "subscriptionRemoved"]);
    assert!(t.fake.subscriptions().is_empty());
}

#[test]
fn patch_delete_list_scoping() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let id = t.subscribe(&tok, presence_sub_body(&[&a])).body_json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = connector_cert();
    let r = t.send(&tok, "PATCH", &format!("/subscriptions/{id}"), json!({"expirationDateTime": iso_z(TEST_EPOCH_MS + 55 * 60_000), "encryptionCertificate": c.cert_b64, "encryptionCertificateId": "new"})).unwrap_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body_json()["expirationDateTime"],
        iso_z(TEST_EPOCH_MS + 55 * 60_000)
    );
    assert_eq!(r.body_json()["encryptionCertificateId"], "new");
    assert_eq!(
        t.get(&tok, "/subscriptions").body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Another user of the same app, and an app-only token of another app, see nothing.
    let other = t.fake.issue_token(
        &t.app.clone(),
        Some("adelev@contoso.com"),
        &["Presence.Read.All"],
    );
    assert_eq!(
        t.get(&other, "/subscriptions").body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(t.get(&other, &format!("/subscriptions/{id}")).status, 404);
    let app_tok = t.app_token();
    assert_eq!(
        t.get(&app_tok, "/subscriptions").body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        t.send(&tok, "DELETE", &format!("/subscriptions/{id}"), json!(null))
            .unwrap_response()
            .status,
        204
    );
    assert_eq!(t.get(&tok, &format!("/subscriptions/{id}")).status, 404);
    // After DELETE a new one may be created.
    assert_eq!(t.subscribe(&tok, presence_sub_body(&[&a])).status, 201);
}

#[test]
fn subscription_write_budget_and_list_429_switch() {
    let mut cfg = Config::default();
    cfg.subscription_writes_per_20s = 3;
    let mut t = setup_with(cfg);
    let tok = t.svc_token();
    for _ in 0..3 {
        assert_eq!(
            t.send(&tok, "DELETE", "/subscriptions/none", json!(null))
                .unwrap_response()
                .status,
            404
        );
    }
    let r = t
        .send(&tok, "DELETE", "/subscriptions/none", json!(null))
        .unwrap_response();
    assert_eq!(r.status, 429);
    assert!(r.get_header("Retry-After").is_some());
    t.clock.advance(20_000);
    assert_eq!(
        t.send(&tok, "DELETE", "/subscriptions/none", json!(null))
            .unwrap_response()
            .status,
        404
    );
    t.fake.config_mut().throttle_subscription_list = true;
    let r = t.get(&tok, "/subscriptions");
    assert_eq!(r.status, 429);
    assert_eq!(r.get_header("Retry-After"), Some("5"));
    assert!(
        r.body_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("subscriptionservice.dc.list")
    );
}

#[test]
fn outage_mode_accepts_and_renews_but_never_delivers() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    t.fake.config_mut().notification_outage = true;
    let id = t.subscribe(&tok, presence_sub_body(&[&a])).body_json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = t
        .send(
            &tok,
            "PATCH",
            &format!("/subscriptions/{id}"),
            json!({"expirationDateTime": iso_z(TEST_EPOCH_MS + 50 * 60_000)}),
        )
        .unwrap_response();
    assert_eq!(r.status, 200);
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    t.clock.advance(60_000);
    assert!(t.fake.take_effects().is_empty());
    // The polling fallback still sees the change.
    let app_tok = t.app_token();
    assert_eq!(
        t.post(
            &app_tok,
            "/communications/getPresencesByUserId",
            json!({"ids": [a]})
        )
        .body_json()["value"][0]["availability"],
        "Busy"
    );
    // Per-subscription outage too.
    t.fake.config_mut().notification_outage = false;
    assert!(t.fake.set_subscription_outage(&id, true));
    t.fake
        .teams_client_presence(&a, None, "Away", "Away")
        .unwrap();
    assert!(t.fake.take_effects().is_empty());
}

#[test]
fn patch_new_notification_url_runs_handshake() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    let id = t.subscribe(&tok, presence_sub_body(&[&a])).body_json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A new URL that fails validation leaves the subscription unchanged.
    let Handled::Pending(_) = t.send(
        &tok,
        "PATCH",
        &format!("/subscriptions/{id}"),
        json!({"notificationUrl": "https://connector.example/new"}),
    ) else {
        panic!("handshake expected")
    };
    let e = t.fake.take_effects();
    assert!(
        e[0].url
            .starts_with("https://connector.example/new?validationToken=")
    );
    t.fake.outbound_result(
        e[0].id,
        OutboundResult::Status {
            status: 500,
            content_type: None,
            body: vec![],
            elapsed_ms: 5,
        },
    );
    assert_eq!(t.fake.take_completed()[0].1.status, 400);
    assert_eq!(
        t.fake.subscriptions()[0].notification_url,
        "https://connector.example/notify?tenant=contoso"
    );
    // A valid one takes effect after the handshake.
    let Handled::Pending(ticket) = t.send(
        &tok,
        "PATCH",
        &format!("/subscriptions/{id}"),
        json!({"notificationUrl": "https://connector.example/new"}),
    ) else {
        panic!()
    };
    t.answer_all(echo_validation);
    let done = t.fake.take_completed();
    assert_eq!((done[0].0, done[0].1.status), (ticket, 200));
    t.fake
        .teams_client_presence(&a, None, "Busy", "Busy")
        .unwrap();
    assert_eq!(
        t.answer_all(echo_validation)[0].url,
        "https://connector.example/new"
    );
}

#[test]
fn upper_case_ids_match_case_insensitively() {
    let mut t = setup();
    let tok = t.svc_token();
    let a = t.alice.id.clone();
    assert_eq!(
        t.subscribe(&tok, presence_sub_body(&[&a.to_uppercase()]))
            .status,
        201
    );
    t.fake
        .teams_client_presence(&a.to_uppercase(), None, "Busy", "Busy")
        .unwrap();
    assert_eq!(t.answer_all(echo_validation).len(), 1);
    assert_eq!(
        t.get(&tok, &format!("/users/{}/presence", a.to_uppercase()))
            .status,
        200
    );
}
