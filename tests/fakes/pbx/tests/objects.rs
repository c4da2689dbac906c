//! PbxAdminApi object operations (item 21): what a PBX Manager plugin does to create the
//! connector's App objects.

mod common;

use common::*;
use serde_json::{Value, json};

const BASE: &str = "https://ap.example.com/example.com/m365";

fn admin(p: &mut fake_pbx::Pbx, c: u64, mut m: Value) -> Value {
    m["api"] = json!("PbxAdminApi");
    m["src"] = json!("t");
    let r = send(p, c, m);
    assert_eq!(r.len(), 1, "one answer: {r:?}");
    assert_eq!(r[0]["src"], "t");
    r[0].clone()
}

fn api_object(guid: Option<&str>) -> Value {
    let mut m = json!({"mt":"UpdateObject","cn":"microsoft365-api","h323":"microsoft365-api",
        "hide":true,"critical":true,"copyPwd":"m365",
        "pseudo":{"type":"app","app":{"url":format!("{BASE}/innovaphone-microsoft365api"),
            "hidden":true,"websocket":false}}});
    if let Some(g) = guid {
        m["guid"] = json!(g);
    }
    m
}

#[test]
fn app_objects_are_listed_by_url_head_match() {
    let (mut p, _) = pbx();
    let c = login(&mut p, "master", "c1");
    let r = admin(&mut p, c, json!({"mt":"GetAppObjects","uri":BASE}));
    assert_eq!(r["mt"], "GetAppObjectsResult");
    let objs = r["objects"].as_array().unwrap();
    // Both nodes' own App objects (different guids, same URL).
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["sip"], "m365");
    assert_eq!(objs[0]["app"], "innovaphone-microsoft365");
    assert_eq!(objs[0]["connected"], true, "master is logged in");
    assert_eq!(objs[1]["connected"], false, "slave never dialled");
    assert!(objs.iter().all(|o| o.get("pwd").is_none()));
    let none = admin(
        &mut p,
        c,
        json!({"mt":"GetAppObjects","uri":"https://other.example.com/"}),
    );
    assert_eq!(none["objects"], json!([]));
}

#[test]
fn update_object_creates_then_updates_by_guid_with_copied_password() {
    let (mut p, _) = pbx();
    let c = login(&mut p, "master", "c1");
    let r = admin(&mut p, c, api_object(None));
    assert_eq!(r["mt"], "UpdateObjectResult");
    assert!(r.get("error").is_none(), "{r}");
    let guid = r["guid"].as_str().unwrap().to_string();
    assert_eq!(guid.len(), 32);
    assert!(p.object_password_is("microsoft365-api", PASSWORD));

    // Listed now, and readable by cn without its password.
    let list = admin(&mut p, c, json!({"mt":"GetAppObjects","uri":BASE}));
    assert_eq!(list["objects"].as_array().unwrap().len(), 3);
    let got = admin(&mut p, c, json!({"mt":"GetObject","cn":"microsoft365-api"}));
    assert_eq!(got["guid"], guid.as_str());
    assert_eq!(got["pseudo"]["app"]["hidden"], true);
    assert!(got.get("pwd").is_none());

    // The same request by guid: no new object, no guid in the answer, nothing changed.
    let again = admin(&mut p, c, api_object(Some(&guid)));
    assert!(
        again.get("error").is_none() && again.get("guid").is_none(),
        "{again}"
    );
    let apis: Vec<_> = p
        .objects()
        .into_iter()
        .filter(|o| o.h323 == "microsoft365-api")
        .collect();
    assert_eq!(apis.len(), 1);
    assert_eq!(apis[0].updates, 0);

    // A changed URL is an update of the same object.
    let mut moved = api_object(Some(&guid));
    moved["pseudo"]["app"]["url"] = json!("https://ap2.example.com/example.com/m365/x");
    assert!(admin(&mut p, c, moved).get("error").is_none());
    let o = p.objects().into_iter().find(|o| o.guid == guid).unwrap();
    assert_eq!(o.url(), Some("https://ap2.example.com/example.com/m365/x"));
    assert_eq!(o.updates, 1);
}

#[test]
fn names_are_unique_and_bad_requests_are_refused() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    assert!(admin(&mut p, c, api_object(None)).get("error").is_none());
    // Creating it a second time without its guid clashes with the first.
    let dup = admin(&mut p, c, api_object(None));
    assert_eq!(dup["error"], 1);
    assert_eq!(dup["errorText"], "name microsoft365-api already in use");
    // A user's name cannot be taken either.
    let mut as_alice = api_object(None);
    as_alice["h323"] = json!("alice");
    as_alice["cn"] = json!("Alice's app");
    assert!(
        admin(&mut p, c, as_alice)["errorText"]
            .as_str()
            .unwrap()
            .contains("already in use")
    );
    // Unknown guid, unknown copyPwd source, App object without URL.
    let r = admin(
        &mut p,
        c,
        api_object(Some("00000000000000000000000000000000")),
    );
    assert_eq!(r["errorText"], "object not found");
    let mut m = api_object(None);
    m["h323"] = json!("other");
    m["cn"] = json!("other");
    m["copyPwd"] = json!("nobody");
    assert_eq!(
        admin(&mut p, c, m)["errorText"],
        "copyPwd: no object named nobody"
    );
    let m = json!({"mt":"UpdateObject","h323":"x","cn":"x","pseudo":{"type":"app","app":{}}});
    assert_eq!(admin(&mut p, c, m)["errorText"], "App object without url");
    assert_eq!(
        p.objects().iter().filter(|o| o.h323 != "m365").count(),
        1,
        "refused requests changed nothing"
    );
}

#[test]
fn star_guid_addresses_by_cn_and_delete_removes() {
    let (mut p, _) = pbx();
    let c = login(&mut p, "master", "c1");
    let first = admin(&mut p, c, api_object(Some("*")));
    let guid = first["guid"].as_str().expect("created").to_string();
    let second = admin(&mut p, c, api_object(Some("*")));
    assert!(second.get("guid").is_none() && second.get("error").is_none());
    let gone = admin(&mut p, c, json!({"mt":"DeleteObject","guid":guid}));
    assert!(gone.get("error").is_none());
    let missing = admin(&mut p, c, json!({"mt":"GetObject","cn":"microsoft365-api"}));
    assert_eq!(missing["errorText"], "object not found");
}

#[test]
fn object_operations_need_the_admin_api() {
    let (mut p, _) = pbx();
    p.switches.gated_reply = fake_pbx::switches::GatedReply::Error;
    let mut n = node("solo", "33333333333333333333333333333333");
    n.apis = vec!["PbxApi".into()];
    p.add_node(n);
    let c = login(&mut p, "solo", "c1");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetAppObjects","src":"t","uri":BASE}),
    );
    assert_eq!(r[0]["error"], 1);
    assert!(r[0].get("objects").is_none());
}
