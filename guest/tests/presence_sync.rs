//! Teams -> PBX presence (F1) in-process against both independent fakes: the fake PBX dials
//! the connector and replicates its users, the fake Microsoft 365 answers Graph calls, runs the
//! subscription handshake and posts notifications. The harness (`common/mod.rs`, shared with
//! `presence_out.rs`) only shuttles bytes and time.

mod common;

use std::collections::BTreeMap;

use common::*;
use fake_m365::{Fault, FaultKind, OutboundResult, ValidationTokenMode};
use microsoft365::env::{KeyError, OaepHash, PublicKey};
use microsoft365::event::{InitInfo, WsDirection, WsOpen};
use microsoft365::testenv::TestCrypto;
use microsoft365::{Connector, Event};

/// RSA for `TestEnv`, as a host's `keys` interface would do it.
#[derive(Debug, Default)]
struct RsaKeys {
    keys: BTreeMap<String, rsa::RsaPrivateKey>,
}

impl TestCrypto for RsaKeys {
    fn generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError> {
        let k = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits as usize)
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        self.keys.insert(name.into(), k);
        Ok(())
    }
    fn exists(&mut self, name: &str) -> bool {
        self.keys.contains_key(name)
    }
    fn certificate(&mut self, name: &str, cn: &str, _days: u32) -> Result<Vec<u8>, KeyError> {
        use rsa::pkcs8::EncodePrivateKey;
        let k = self.keys.get(name).ok_or(KeyError::NotFound)?;
        let der = k
            .to_pkcs8_der()
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        Ok(params
            .self_signed(&kp)
            .map_err(|e| KeyError::Failed(e.to_string()))?
            .der()
            .to_vec())
    }
    fn oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        cts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        let k = self.keys.get(name).ok_or(KeyError::NotFound)?;
        Ok(cts
            .iter()
            .map(|c| {
                match hash {
                    OaepHash::Sha1 => k.decrypt(rsa::Oaep::new::<sha1::Sha1>(), c),
                    OaepHash::Sha256 => k.decrypt(rsa::Oaep::new::<rsa::sha2::Sha256>(), c),
                }
                .map_err(|e| KeyError::Invalid(e.to_string()))
            })
            .collect())
    }
    fn verify_rs256(&mut self, key: &PublicKey, data: &[u8], sig: &[u8]) -> bool {
        use rsa::signature::Verifier;
        let PublicKey::Rsa(n, e) = key else {
            return false;
        };
        let Ok(pk) = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(n),
            rsa::BigUint::from_bytes_be(e),
        ) else {
            return false;
        };
        let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
            return false;
        };
        rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(pk)
            .verify(data, &sig)
            .is_ok()
    }
}

impl World {
    /// Statuses of the Graph calls to `path`; creations of the user-change subscription are
    /// left out (see [`World::user_subscription_creates`]), so `POST /v1.0/subscriptions`
    /// counts presence subscriptions.
    fn graph_calls(&self, method: &str, path: &str) -> Vec<u16> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == method && r.target.split('?').next() == Some(path))
            .filter(|r| !is_user_subscription_create(r))
            .map(|r| r.status)
            .collect()
    }

    /// Statuses of the creations of the user-change subscription.
    fn user_subscription_creates(&self) -> Vec<u16> {
        self.fake
            .requests()
            .iter()
            .filter(|r| is_user_subscription_create(r))
            .map(|r| r.status)
            .collect()
    }
}

fn is_user_subscription_create(r: &fake_m365::core::SeenRequest) -> bool {
    r.method == "POST"
        && r.target == "/v1.0/subscriptions"
        && serde_json::from_str::<serde_json::Value>(&r.body)
            .is_ok_and(|b| b["resource"] == "/users")
}

fn people(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("Person {i:04}")).collect()
}

#[test]
fn alice_in_a_meeting_shows_meeting_in_the_pbx() {
    let names: Vec<String> = ["Alice Smith", "Bob Jones", "Carol White", "Dan Brown"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut w = World::new(&names, &["Carol White"], 1);
    w.start();
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201]);
    let status = w.status();
    assert_eq!(status["presence"]["matched"], 3, "{status}");
    let not = &status["presence"]["not_matched"];
    assert!(
        not.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Carol White" && p["reason"] == "not-pbx-licensed"),
        "{not}"
    );

    w.fake
        .teams_client_presence(
            "alice.smith@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(0).as_deref(), Some("meeting"));
    // Dan lives on the slave: routed there, in a call.
    w.fake
        .teams_client_presence("dan.brown@contoso.onmicrosoft.com", None, "Busy", "InACall")
        .unwrap();
    w.advance(1_000);
    let dan = w.pbx_activity(3);
    assert!(
        dan.as_deref() == Some("on-the-phone") || dan.as_deref() == Some("busy"),
        "{dan:?}"
    );
    // Unlicensed Carol is never written.
    w.fake
        .teams_client_presence("carol.white@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(2), None);
    // Available again: the item is unset.
    w.fake
        .teams_client_presence(
            "alice.smith@contoso.onmicrosoft.com",
            None,
            "Available",
            "Available",
        )
        .unwrap();
    w.advance(1_000);
    assert!(w.pbx_activity(0).is_none_or(|a| a.is_empty()));
}

#[test]
fn forged_notifications_change_nothing() {
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let sub_id = w.env.kv_text("sub/teams0").map(|s| {
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["id"].as_str().unwrap().to_string()
    });
    let sub_id = sub_id.expect("subscription stored");
    let uid = w
        .fake
        .user("person.0000@contoso.onmicrosoft.com")
        .unwrap()
        .id
        .clone();
    let reads_before = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    let writes_before = w.env.counters.get("presence_pbx_writes_total").copied();
    for (sub, cs) in [(sub_id.as_str(), "wrong"), ("unknown-sub", "x")] {
        let body = serde_json::json!({"value":[{"subscriptionId": sub, "clientState": cs,
            "changeType":"updated","resource": format!("communications/presences/{uid}"),
            "resourceData": {"id": uid}}]});
        let (status, _, _) = w.post_to_connector(
            &format!("{PREFIX}/subscriptions"),
            body.to_string().into_bytes(),
        );
        assert_eq!(status, 202);
    }
    let (status, _, _) =
        w.post_to_connector(&format!("{PREFIX}/subscriptions"), b"<html>".to_vec());
    assert_eq!(status, 202);
    w.pump();
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads_before
    );
    assert_eq!(
        w.env.counters.get("presence_pbx_writes_total").copied(),
        writes_before
    );
    let rejected: u64 = w
        .env
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("graph_notifications_rejected_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejected, 3);
    // The handshake echoes the decoded token byte for byte, as text/plain.
    let (status, ct, body) = w.post_to_connector(
        &format!(
            "{PREFIX}/subscriptions?validationToken=Validation%3A%20Testing%20client%20application"
        ),
        vec![],
    );
    assert_eq!(
        (status, body.as_slice()),
        (200, b"Validation: Testing client application".as_slice())
    );
    assert!(ct.unwrap().starts_with("text/plain"));
}

#[test]
fn users_spread_over_three_accounts_without_conflict() {
    let names = people(1_500);
    let mut w = World::new(&names, &[], 3);
    w.start();
    assert_eq!(
        w.graph_calls("POST", "/v1.0/subscriptions"),
        vec![201, 201, 201]
    );
    let mut watched = 0;
    for a in 0..3 {
        let v: serde_json::Value =
            serde_json::from_str(&w.env.kv_text(&format!("sub/teams{a}")).unwrap()).unwrap();
        let n = v["ids"].as_array().unwrap().len();
        assert!(n <= 650, "{n}");
        watched += n;
    }
    assert_eq!(watched, 1_500);
    w.fake
        .teams_client_presence(
            "person.1499@contoso.onmicrosoft.com",
            None,
            "DoNotDisturb",
            "Presenting",
        )
        .unwrap();
    w.advance(1_000);
    let a = w.pbx_activity(1_499);
    assert!(
        a.as_deref() == Some("on-the-phone") || a.as_deref() == Some("busy"),
        "{a:?}"
    );
}

#[test]
fn restart_within_the_lifetime_renews_and_never_conflicts() {
    let names = people(5);
    let mut w = World::new(&names, &[], 1);
    w.start();
    w.advance(5 * 60_000);
    w.restart();
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201]);
    assert!(w.fake.requests().iter().any(|r| r.method == "PATCH"
        && r.target.starts_with("/v1.0/subscriptions/")
        && r.status == 200));
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
    // And sync continues.
    w.fake
        .teams_client_presence(
            "person.0001@contoso.onmicrosoft.com",
            None,
            "Away",
            "BeRightBack",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("away"));
    // The 10-minute rhythm renews by PATCH for an hour without a new POST.
    w.advance(60 * 60_000);
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201]);
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
}

#[test]
fn lost_kv_at_start_deletes_the_old_subscription_first() {
    let names = people(4);
    let mut w = World::new(&names, &[], 1);
    w.start();
    w.env.kv.retain(|k, _| !k.starts_with("sub/"));
    w.restart();
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201, 201]);
    assert_eq!(
        w.fake
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && r.status == 204)
            .count(),
        1
    );
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
}

#[test]
fn lost_notifications_are_repaired_by_reconciliation() {
    let names = people(4);
    let mut w = World::new(&names, &[], 1);
    w.start();
    w.fake.config_mut().notification_outage = true;
    w.fake
        .teams_client_presence(
            "person.0002@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(60_000);
    assert_eq!(w.pbx_activity(2), None);
    w.advance(30 * 60_000);
    assert_eq!(w.pbx_activity(2).as_deref(), Some("meeting"));
}

#[test]
fn a_429_storm_is_survived() {
    let names = people(4);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let before_fault = w.fake.requests().len();
    w.fake.add_fault(Fault {
        path_contains: Some("getPresencesByUserId".into()),
        method: None,
        fault: FaultKind::Throttle { retry_after_s: 7 },
        remaining: Some(5),
    });
    w.fake
        .teams_client_presence("person.0003@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(3), None);
    w.advance(60_000);
    assert_eq!(w.pbx_activity(3).as_deref(), Some("away"));
    let reads: Vec<u16> = w.fake.requests()[before_fault..]
        .iter()
        .filter(|r| r.target.contains("getPresencesByUserId"))
        .map(|r| r.status)
        .collect();
    // One notification read, five throttled retries at most, then success.
    assert!(
        reads.len() <= 7 && reads.last() == Some(&200),
        "no retry storm: {reads:?}"
    );
}

fn rich_world(names: &[String]) -> World {
    let mut w = World::new(names, &[], 1);
    w.env.crypto = Some(Box::new(RsaKeys::default()));
    w
}

#[test]
fn rich_notifications_are_decrypted_and_checked() {
    let names = people(3);
    let mut w = rich_world(&names);
    w.start();
    let sub: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    assert_eq!(sub["rich"], true, "{sub}");
    let reads = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    w.fake
        .teams_client_presence(
            "person.0001@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("meeting"));
    // Applied from the decrypted content: no read was needed.
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads
    );
    // The key set was fetched once and is cached for the next notification.
    w.fake
        .teams_client_presence("person.0002@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(2).as_deref(), Some("away"));
    assert_eq!(w.graph_calls("GET", "/common/discovery/v2.0/keys").len(), 1);
}

#[test]
fn rich_notifications_with_bad_tokens_change_nothing() {
    for mode in [
        ValidationTokenMode::BadSignature,
        ValidationTokenMode::WrongAudience,
        ValidationTokenMode::Expired,
    ] {
        let names = people(3);
        let mut w = rich_world(&names);
        w.start();
        w.fake.config_mut().validation_tokens = mode;
        let reads = w
            .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len();
        w.fake
            .teams_client_presence(
                "person.0001@contoso.onmicrosoft.com",
                None,
                "Busy",
                "InAMeeting",
            )
            .unwrap();
        w.advance(1_000);
        assert_eq!(w.pbx_activity(1), None, "{mode:?}");
        assert_eq!(
            w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
                .len(),
            reads,
            "{mode:?}"
        );
        assert!(
            w.env.counters.keys().any(
                |k| k.starts_with("graph_notifications_rejected_total{reason=validation token")
            ),
            "{mode:?} {:?}",
            w.env.counters
        );
    }
}

#[test]
fn a_skewed_local_clock_is_reported_and_expiry_uses_microsofts() {
    let names = people(2);
    let mut w = World::new(&names, &[], 1);
    // The local clock is 20 minutes behind Microsoft's.
    w.env.now_ms -= 20 * 60_000;
    w.start();
    assert!(
        w.env.logged("local clock is 1200 s behind Microsoft's"),
        "{:?}",
        w.env.logs
    );
    let create = w
        .env
        .requests
        .iter()
        .rev()
        .find(|(_, r)| r.method == "POST" && r.url.ends_with("/v1.0/subscriptions"))
        .map(|(_, r)| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .unwrap();
    let asked = microsoft365::graph::subscriptions::parse_iso(
        create["expirationDateTime"].as_str().unwrap(),
    )
    .unwrap() as i64;
    let microsoft_now = w.fake.now();
    assert!(
        (asked - (microsoft_now + 60 * 60_000)).abs() < 60_000,
        "asked {asked}, Microsoft's now {microsoft_now}"
    );
    // Sync works regardless, and renewals keep the subscription for hours.
    w.advance(3 * 60 * 60_000);
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201]);
    w.fake
        .teams_client_presence(
            "person.0000@contoso.onmicrosoft.com",
            None,
            "DoNotDisturb",
            "DoNotDisturb",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(0).as_deref(), Some("dnd"));
}

#[test]
fn a_licence_granted_in_the_pbx_starts_sync_for_that_user() {
    let names = people(3);
    let mut w = World::new(&names, &["Person 0001"], 1);
    w.start();
    let before: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    assert_eq!(before["ids"].as_array().unwrap().len(), 2);
    w.fake
        .teams_client_presence("person.0001@contoso.onmicrosoft.com", None, "Busy", "Busy")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1), None);
    assert!(w.pbx.assign_licence(&format!("{:032x}", 2), LICENCE, true));
    w.advance(5_000);
    let after: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    assert_eq!(after["ids"].as_array().unwrap().len(), 3, "{after}");
    assert_eq!(w.pbx_activity(1).as_deref(), Some("busy"));
    // The id list changed by DELETE then POST: never two subscriptions, never a 409.
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201, 201]);
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
}

fn subscription_id(w: &World) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams0").expect("subscription stored")).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Calls about presence subscriptions (the user-change subscription left out).
fn subscription_calls(w: &World, from: usize) -> Vec<(String, String, u16)> {
    let users = w.env.kv_text("users-sub").map(|t| {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["id"].as_str().unwrap().to_string()
    });
    w.fake.requests()[from..]
        .iter()
        .filter(|r| r.target.contains("/subscriptions"))
        .filter(|r| !is_user_subscription_create(r))
        .filter(|r| {
            users
                .as_ref()
                .is_none_or(|u| !r.target.ends_with(u.as_str()))
        })
        .map(|r| (r.method.clone(), r.target.clone(), r.status))
        .collect()
}

/// Minutes of Graph time, the fake's clock ticking every minute as Microsoft's would.
fn minutes(w: &mut World, n: u64) {
    for _ in 0..n {
        w.advance(60_000);
    }
}

#[test]
fn reauthorization_required_is_answered_by_patch_only() {
    let names = people(2);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let id = subscription_id(&w);
    // Asked while the subscription is bound to the current token: a PATCH with that token
    // would change nothing, so the PATCH waits for the next token (fetched 5 minutes before
    // the old one expires; the fake's tokens live 60 minutes).
    let before = w.fake.requests().len();
    assert!(w.fake.lifecycle_event(&id, "reauthorizationRequired"));
    w.advance(1_000);
    assert_eq!(subscription_calls(&w, before), vec![]);
    minutes(&mut w, 60);
    let after = subscription_calls(&w, before);
    let patch = (
        "PATCH".to_string(),
        format!("/v1.0/subscriptions/{id}"),
        200,
    );
    assert!(after.contains(&patch), "{after:?}");
    assert!(after.iter().all(|c| *c == patch), "PATCH only: {after:?}");
    assert_eq!(subscription_id(&w), id);
}

#[test]
fn reauthorization_required_near_the_subscriptions_expiry_is_patched_at_once() {
    let names = people(2);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let id = subscription_id(&w);
    // Renewals fail for 39 minutes: 21 of the subscription's 60 minutes are left, while the
    // token it is bound to (60 minutes, same age) is still the current one.
    w.fake.add_fault(Fault {
        path_contains: Some("/v1.0/subscriptions/".into()),
        method: Some("PATCH".into()),
        fault: FaultKind::Unavailable {
            retry_after_s: None,
        },
        remaining: None,
    });
    minutes(&mut w, 39);
    w.fake.clear_faults();
    let before = w.fake.requests().len();
    assert!(w.fake.lifecycle_event(&id, "reauthorizationRequired"));
    w.advance(1_000);
    assert_eq!(
        subscription_calls(&w, before),
        vec![(
            "PATCH".to_string(),
            format!("/v1.0/subscriptions/{id}"),
            200
        )]
    );
}

#[test]
fn renewals_keep_the_ten_minute_rhythm_when_graph_asks_to_reauthorize() {
    // The fake binds each subscription to the access token that created or renewed it and
    // asks to reauthorize from 15 minutes before that token expires, every minute until it
    // gets a PATCH with a newer token (graph.md §3.6).
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let before = w.fake.requests().len();
    minutes(&mut w, 24 * 60);
    let calls = subscription_calls(&w, before);
    let patches = calls.iter().filter(|c| c.0 == "PATCH").count();
    // 144 by the rhythm plus at most one per new token (24 a day), minus rhythm PATCHes a
    // token's PATCH made unnecessary.
    assert!((140..=170).contains(&patches), "{patches} PATCHes in a day");
    assert!(
        calls.iter().all(|c| c.0 == "PATCH" && c.2 == 200),
        "{calls:?}"
    );
    // Delivery never paused: a change a day later arrives by notification, without a read.
    let reads = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    w.fake
        .teams_client_presence("person.0001@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("away"));
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads + 1,
        "one read for the one (plain) notification"
    );
}

#[test]
fn removed_or_vanished_subscriptions_are_recreated() {
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    w.start();
    // Announced removal: recreated at once.
    let first = subscription_id(&w);
    assert!(w.fake.lifecycle_event(&first, "subscriptionRemoved"));
    w.advance(1_000);
    let second = subscription_id(&w);
    assert_ne!(first, second);
    // Silent removal: the next renewal gets 404 and recreates it; reconciliation repairs what
    // was missed meanwhile.
    w.fake.config_mut().retry_base_ms = 3_600_000;
    assert!(w.fake.lifecycle_event(&second, "subscriptionRemoved"));
    for o in w.fake.take_effects() {
        w.fake.outbound_result(
            o.id,
            OutboundResult::Failed {
                tls: false,
                message: "lost".into(),
            },
        );
    }
    assert_eq!(subscription_id(&w), second, "the removal was not announced");
    w.fake
        .teams_client_presence(
            "person.0002@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(11 * 60_000);
    let third = subscription_id(&w);
    assert_ne!(second, third);
    assert!(
        w.fake
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.target.ends_with(&second) && r.status == 404)
    );
    assert_eq!(w.pbx_activity(2).as_deref(), Some("meeting"));
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
}

#[test]
fn a_rotated_signing_key_is_fetched_again() {
    let names = people(3);
    let mut w = rich_world(&names);
    w.start();
    w.fake
        .teams_client_presence(
            "person.0000@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(0).as_deref(), Some("meeting"));
    w.advance(2 * 60_000);
    w.fake.rotate_signing_key();
    let reads = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    w.fake
        .teams_client_presence("person.0001@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("away"));
    assert_eq!(w.graph_calls("GET", "/common/discovery/v2.0/keys").len(), 2);
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads
    );
}

#[test]
fn notifications_of_another_tenant_change_nothing() {
    let names = people(2);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let v: serde_json::Value = serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    let uid = w
        .fake
        .user("person.0000@contoso.onmicrosoft.com")
        .unwrap()
        .id
        .clone();
    let reads = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    let body = serde_json::json!({"value":[{"subscriptionId": v["id"], "clientState": v["client_state"],
        "tenantId": "00000000-0000-0000-0000-000000000001", "changeType":"updated",
        "resource": format!("communications/presences/{uid}"), "resourceData": {"id": uid}}]});
    let (status, _, _) = w.post_to_connector(
        &format!("{PREFIX}/subscriptions"),
        body.to_string().into_bytes(),
    );
    assert_eq!(status, 202);
    w.pump();
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads
    );
    assert_eq!(
        w.env
            .counters
            .get("graph_notifications_rejected_total{reason=unknown tenant}"),
        Some(&1),
        "{:?}",
        w.env.counters
    );
}

#[test]
fn a_hot_swap_in_the_middle_of_sync_loses_nothing() {
    let names = people(6);
    let mut w = World::new(&names, &[], 1);
    w.start();
    // Notifications in flight, a Graph read pending: the old guest acknowledged the
    // notification (inbox) but never sees the read's answer.
    w.fake
        .teams_client_presence(
            "person.0004@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    for o in w.fake.take_effects() {
        let (status, content_type, body) = w.post_to_connector(&o.url, o.body.clone());
        w.fake.outbound_result(
            o.id,
            OutboundResult::Status {
                status,
                content_type,
                body,
                elapsed_ms: 5,
            },
        );
    }
    assert!(!w.env.kv_keys("inbox/presence/").is_empty());
    // The swap: the host keeps sockets, timers and KV; requests of the old guest complete into
    // the new one, which does not know them.
    let open: Vec<WsOpen> =
        w.c.pbx
            .connections()
            .map(|c| WsOpen {
                id: c.ws,
                direction: WsDirection::Inbound,
                path: "/innovaphone-microsoft365".into(),
                headers: vec![],
                peer: c.peer.clone(),
            })
            .collect();
    w.c = Connector::new();
    w.c.handle(
        &mut w.env,
        Event::Init(InitInfo {
            reason: microsoft365::event::InitReason::Upgrade,
            from_version: Some("microsoft365 0.0.9".into()),
            snapshot: None,
            open_websockets: open,
        }),
    );
    w.pump();
    w.advance(5_000);
    assert_eq!(w.pbx_activity(4).as_deref(), Some("meeting"));
    assert!(w.env.kv_keys("inbox/presence/").is_empty());
    // Sync continues on the adopted subscription.
    w.fake
        .teams_client_presence("person.0005@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(5).as_deref(), Some("away"));
    assert_eq!(w.graph_calls("POST", "/v1.0/subscriptions"), vec![201]);
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
    // The old guest's periodic timers fire into the new one and are not re-armed: one rhythm.
    w.advance(25 * 60_000);
    let renewals = w
        .env
        .timers
        .values()
        .filter(|(_, tag)| tag.starts_with("f1:renew"))
        .count();
    assert_eq!(renewals, 1);
}

#[test]
fn a_reconnecting_slave_gets_the_presence_written_again() {
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    w.start();
    // Person 2 lives on the slave.
    w.fake
        .teams_client_presence(
            "person.0002@contoso.onmicrosoft.com",
            None,
            "Busy",
            "InAMeeting",
        )
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(2).as_deref(), Some("meeting"));
    w.pbx.kill("slave");
    w.advance(1_000);
    let writes = w.env.counters.get("presence_pbx_writes_total").copied();
    w.pbx.restore("slave");
    w.advance(60_000);
    assert!(w.pbx.is_logged_in("slave"));
    w.advance(5_000);
    // Reconciled after the reconnect and written again, even though nothing changed in Teams.
    assert!(w.env.counters.get("presence_pbx_writes_total").copied() > writes);
    assert_eq!(w.pbx_activity(2).as_deref(), Some("meeting"));
    assert!(w.pbx.violations().is_empty(), "{:?}", w.pbx.violations());
}

#[test]
fn plain_mode_is_a_setting() {
    let names = people(2);
    let mut w = rich_world(&names);
    w.env.set_config("presence.notifications", "plain");
    w.start();
    let sub: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    assert_eq!(sub["rich"], false);
    let reads = w
        .graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
        .len();
    w.fake
        .teams_client_presence("person.0001@contoso.onmicrosoft.com", None, "Busy", "Busy")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("busy"));
    // The notification carried no state: the presence was read.
    assert_eq!(
        w.graph_calls("POST", "/v1.0/communications/getPresencesByUserId")
            .len(),
        reads + 1
    );
    assert_eq!(w.graph_calls("GET", "/common/discovery/v2.0/keys").len(), 0);
}

#[test]
fn users_go_to_signed_in_accounts() {
    let names = people(900);
    let mut w = World::new(&names, &[], 2);
    // A third account waits for a device-code sign-in that nobody completes.
    let mut accounts: serde_json::Value =
        serde_json::from_str(&w.env.config["presence.accounts"]).unwrap();
    accounts.as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"name": "teams-mfa", "device-code": true}),
    );
    w.env.set_config("presence.accounts", &accounts.to_string());
    w.start();
    let mut watched = 0;
    for a in ["teams0", "teams1"] {
        let v: serde_json::Value =
            serde_json::from_str(&w.env.kv_text(&format!("sub/{a}")).unwrap()).unwrap();
        watched += v["ids"].as_array().unwrap().len();
    }
    assert_eq!(watched, 900);
    assert!(w.env.kv_text("sub/teams-mfa").is_none());
}

/// The administrator removes the second of two accounts and restarts.
fn remove_second_account(w: &mut World) -> (String, Vec<String>) {
    let old: serde_json::Value =
        serde_json::from_str(&w.env.kv_text("sub/teams1").expect("teams1 subscribed")).unwrap();
    let mut accounts: serde_json::Value =
        serde_json::from_str(&w.env.config["presence.accounts"]).unwrap();
    accounts.as_array_mut().unwrap().truncate(1);
    w.env.set_config("presence.accounts", &accounts.to_string());
    let ids = old["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (old["id"].as_str().unwrap().to_string(), ids)
}

/// Index (in `people`) of a person the removed account watched.
fn moved_person(w: &World, names: &[String], ids: &[String]) -> usize {
    names
        .iter()
        .position(|n| {
            let upn = format!(
                "{}@contoso.onmicrosoft.com",
                n.replace(' ', ".").to_lowercase()
            );
            ids.contains(&w.fake.user(&upn).unwrap().id)
        })
        .expect("the removed account watched someone")
}

fn watched_by_teams0(w: &World) -> usize {
    let v: serde_json::Value = serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    v["ids"].as_array().unwrap().len()
}

#[test]
fn a_removed_account_deletes_its_subscription_and_its_users_move() {
    let names = people(40);
    let mut w = World::new(&names, &[], 2);
    w.start();
    assert_eq!(watched_by_teams0(&w), 20);
    let (old, ids) = remove_second_account(&mut w);
    w.restart();
    // Its users moved to the remaining account, its subscription was deleted with its own
    // token (from the stored refresh token), and nothing of it is left.
    assert_eq!(watched_by_teams0(&w), 40);
    assert_eq!(
        w.graph_calls("DELETE", &format!("/v1.0/subscriptions/{old}")),
        vec![204]
    );
    assert!(w.env.kv_text("sub/teams1").is_none());
    assert!(w.fake.requests().iter().all(|r| r.status != 409));
    let i = moved_person(&w, &names, &ids);
    let upn = format!(
        "{}@contoso.onmicrosoft.com",
        names[i].replace(' ', ".").to_lowercase()
    );
    w.fake
        .teams_client_presence(&upn, None, "Busy", "InAMeeting")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(i).as_deref(), Some("meeting"));
}

#[test]
fn users_of_a_removed_account_move_even_when_its_delete_keeps_failing() {
    let names = people(40);
    let mut w = World::new(&names, &[], 2);
    w.start();
    let (old, ids) = remove_second_account(&mut w);
    w.fake.add_fault(Fault {
        path_contains: Some(format!("/v1.0/subscriptions/{old}")),
        method: Some("DELETE".into()),
        fault: FaultKind::Unavailable {
            retry_after_s: None,
        },
        remaining: None,
    });
    w.restart();
    assert_eq!(watched_by_teams0(&w), 40);
    let i = moved_person(&w, &names, &ids);
    let upn = format!(
        "{}@contoso.onmicrosoft.com",
        names[i].replace(' ', ".").to_lowercase()
    );
    w.fake
        .teams_client_presence(&upn, None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(i).as_deref(), Some("away"));
    // Retried with backoff until the subscription expires (60 minutes), then forgotten.
    minutes(&mut w, 70);
    let attempts = w
        .graph_calls("DELETE", &format!("/v1.0/subscriptions/{old}"))
        .len();
    assert!((2..=30).contains(&attempts), "{attempts} DELETEs");
    assert!(w.env.kv_text("sub/teams1").is_none());
    minutes(&mut w, 30);
    assert_eq!(
        w.graph_calls("DELETE", &format!("/v1.0/subscriptions/{old}"))
            .len(),
        attempts
    );
    w.fake
        .teams_client_presence(&upn, None, "Busy", "Busy")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(i).as_deref(), Some("busy"));
}

fn user_subscription_id(w: &World) -> String {
    let v: serde_json::Value = serde_json::from_str(
        &w.env
            .kv_text("users-sub")
            .expect("user subscription stored"),
    )
    .unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn an_entra_change_is_read_at_once_through_the_user_subscription() {
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    w.start();
    assert_eq!(w.user_subscription_creates(), vec![201]);
    assert_eq!(w.status()["presence"]["matched"], 3);
    let reads = w.graph_calls("GET", "/v1.0/users").len();
    // Person 0001 is renamed in Entra: no PBX user matches that name any more (matching is
    // by display name), well before the hourly re-read.
    assert!(w.fake.update_user(
        "person.0001@contoso.onmicrosoft.com",
        &serde_json::json!({"displayName": "Someone Else"})
    ));
    w.advance(5_000);
    assert_eq!(w.status()["presence"]["matched"], 2);
    assert_eq!(w.graph_calls("GET", "/v1.0/users").len(), reads + 1);
    // Renamed back: synced again, and its Teams presence is read.
    assert!(w.fake.update_user(
        "person.0001@contoso.onmicrosoft.com",
        &serde_json::json!({"displayName": "Person 0001"})
    ));
    w.fake
        .teams_client_presence("person.0001@contoso.onmicrosoft.com", None, "Busy", "Busy")
        .unwrap();
    w.advance(5_000);
    assert_eq!(w.status()["presence"]["matched"], 3);
    assert_eq!(w.pbx_activity(1).as_deref(), Some("busy"));
    // A forged user notification (wrong clientState) reads nothing.
    let reads = w.graph_calls("GET", "/v1.0/users").len();
    let body = serde_json::json!({"value":[{"subscriptionId": user_subscription_id(&w),
        "clientState": "guess", "changeType": "updated", "resource": "Users/x"}]});
    let (status, _, _) = w.post_to_connector(
        &format!("{PREFIX}/subscriptions"),
        body.to_string().into_bytes(),
    );
    assert_eq!(status, 202);
    w.advance(5_000);
    assert_eq!(w.graph_calls("GET", "/v1.0/users").len(), reads);
}

#[test]
fn the_user_subscription_is_renewed_hourly_and_reused_after_a_restart() {
    let names = people(2);
    let mut w = World::new(&names, &[], 1);
    w.start();
    let id = user_subscription_id(&w);
    minutes(&mut w, 3 * 60);
    let renewals = w.graph_calls("PATCH", &format!("/v1.0/subscriptions/{id}"));
    // One an hour: by the rhythm, or for a new token (Graph asks to reauthorize before the
    // bound token expires), which then stands for that hour's renewal.
    assert!(
        (2..=4).contains(&renewals.len()) && renewals.iter().all(|s| *s == 200),
        "{renewals:?}"
    );
    w.restart();
    assert_eq!(user_subscription_id(&w), id);
    assert_eq!(w.user_subscription_creates(), vec![201]);
    assert!(
        w.graph_calls("PATCH", &format!("/v1.0/subscriptions/{id}"))
            .len()
            > renewals.len()
    );
    // Lost from KV: the stale one is deleted at start and a new one created, never two.
    w.env.kv.retain(|k, _| k != "users-sub");
    w.restart();
    assert_eq!(
        w.graph_calls("DELETE", &format!("/v1.0/subscriptions/{id}")),
        vec![204]
    );
    assert_eq!(w.user_subscription_creates(), vec![201, 201]);
    assert_ne!(user_subscription_id(&w), id);
}

#[test]
fn a_local_clock_ahead_without_a_date_header_asks_shorter_lifetimes_instead_of_lapsing() {
    let names = people(3);
    let mut w = World::new(&names, &[], 1);
    // The local clock runs 8 minutes ahead and Graph's answers say nothing of its own clock:
    // the full 60 minutes asked end 68 minutes after Microsoft's now, which Graph refuses.
    w.no_date = true;
    w.env.now_ms += 8 * 60_000;
    w.start();
    w.advance(60_000);
    let creates = w.graph_calls("POST", "/v1.0/subscriptions");
    assert_eq!(creates.first(), Some(&400), "{creates:?}");
    assert_eq!(creates.last(), Some(&201), "{creates:?}");
    assert!(
        w.env
            .logged("Graph refused the subscription expiry as too far ahead")
    );
    let id = subscription_id(&w);
    // Hours later the same subscription still lives, renewed by PATCH, and sync works.
    minutes(&mut w, 3 * 60);
    assert_eq!(subscription_id(&w), id);
    let renewals = w.graph_calls("PATCH", &format!("/v1.0/subscriptions/{id}"));
    assert!(
        renewals.len() >= 15 && renewals.iter().all(|s| *s == 200),
        "{renewals:?}"
    );
    w.fake
        .teams_client_presence("person.0002@contoso.onmicrosoft.com", None, "Away", "Away")
        .unwrap();
    w.advance(1_000);
    assert_eq!(w.pbx_activity(2).as_deref(), Some("away"));
}

/// The ids of every `getPresencesByUserId` the fake answered since request `from`.
fn presence_reads(w: &World, from: usize) -> Vec<Vec<String>> {
    w.fake.requests()[from..]
        .iter()
        .filter(|r| r.target.ends_with("/communications/getPresencesByUserId"))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn a_burst_of_plain_notifications_is_read_with_few_calls_and_never_twice_at_once() {
    let names = people(20);
    let mut w = World::new(&names, &[], 1);
    w.start();
    // Only the notifications posted below arrive.
    w.fake.config_mut().notification_outage = true;
    let v: serde_json::Value = serde_json::from_str(&w.env.kv_text("sub/teams0").unwrap()).unwrap();
    let ids: Vec<String> = (0..names.len())
        .map(|i| {
            let upn = format!("person.{i:04}@contoso.onmicrosoft.com");
            w.fake
                .teams_client_presence(&upn, None, "DoNotDisturb", "DoNotDisturb")
                .unwrap();
            w.fake.user(&upn).unwrap().id.clone()
        })
        .collect();
    let post = |w: &mut World, chunk: &[String]| {
        let items: Vec<serde_json::Value> = chunk
            .iter()
            .map(|uid| {
                serde_json::json!({"subscriptionId": v["id"], "clientState": v["client_state"],
                    "tenantId": w.fake.tenant_id(), "changeType": "updated",
                    "resource": format!("communications/presences/{uid}"), "resourceData": {"id": uid}})
            })
            .collect();
        let body = serde_json::json!({ "value": items })
            .to_string()
            .into_bytes();
        let (status, _, _) = w.post_to_connector(&format!("{PREFIX}/subscriptions"), body);
        assert_eq!(status, 202);
    };
    let from = w.fake.requests().len();
    // Ten notifications of two users each arrive before Graph answers any read, and the
    // first user is notified a second time while its read is in flight.
    for chunk in ids.chunks(2) {
        post(&mut w, chunk);
    }
    post(&mut w, &ids[..1]);
    w.pump();
    let reads = presence_reads(&w, from);
    // Four reads in flight at once; everything notified meanwhile goes into the next one.
    assert_eq!(reads.len(), 5, "{reads:?}");
    assert_eq!(reads[4].len(), 13, "{reads:?}");
    // Notified again while being read: read once more afterwards, not at the same time.
    assert!(reads[0].contains(&ids[0]) && reads[4].contains(&ids[0]));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(w.pbx_activity(i).as_deref(), Some("dnd"), "{id}");
    }
    assert!(
        w.env
            .kv_text(&format!("inbox/presence/{}", ids[0]))
            .is_none(),
        "every notification read"
    );
    assert_eq!(w.status()["presence"]["reads"]["idle"], true);
}
