//! Sans-IO tests of the fake PBX core, one group per test-double item.

mod common;

use common::*;
use fake_pbx::pbx::{LoginFault, Output};
use fake_pbx::switches::{AlienNonLocal, CallPresence, GatedReply, UnknownSubscription};
use fake_pbx::{Clock, PopulateSpec, Visibility};
use serde_json::{Value, json};

// ---- items 1-4: client role, challenge, digest, login outcomes

#[test]
fn dials_app_url_and_starts_with_app_challenge() {
    let (mut p, _) = pbx();
    p.tick();
    let out = p.drain();
    let urls: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Dial { url, .. } => Some(url.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        urls,
        vec![
            APP_URL.replace("https://", "wss://"),
            APP_URL.replace("https://", "wss://")
        ]
    );
    let Output::Dial { conn, .. } = out[0].clone() else {
        panic!()
    };
    p.on_connected(conn);
    assert_eq!(sent(&mut p), vec![(conn, json!({"mt":"AppChallenge"}))]);
}

#[test]
fn dial_url_override_for_sub_path_keeps_app_name() {
    let (mut p, _) = pbx();
    p.node_config_mut("master").unwrap().dial_url =
        Some("http://127.0.0.1:1/example.com/m365/sub/path".into());
    p.tick();
    let out = p.drain();
    assert!(out.contains(&Output::Dial {
        conn: 1,
        node: "master".into(),
        url: "ws://127.0.0.1:1/example.com/m365/sub/path".into()
    }));
    p.on_connected(1);
    p.drain();
    p.on_frame(1, r#"{"mt":"AppChallengeResult","challenge":"abc"}"#);
    let f = sent(&mut p);
    assert_eq!(f[0].1["app"], "innovaphone-microsoft365");
}

#[test]
fn object_login_has_pbx_shape_and_verifies() {
    let (mut p, _) = pbx();
    p.tick();
    p.drain();
    p.on_connected(1);
    p.drain();
    p.on_frame(
        1,
        r#"{"mt":"AppChallengeResult","challenge":"3141592653589793"}"#,
    );
    let out = p.drain();
    let Output::Send { text, .. } = &out[0] else {
        panic!()
    };
    assert!(verify_login(text, "3141592653589793", PASSWORD));
    assert!(!verify_login(text, "3141592653589793", "other"));
    let v: Value = serde_json::from_str(text).unwrap();
    assert!(v.get("pbxObj").is_none());
    assert_eq!(v["sip"], "m365");
    assert_eq!(v["dn"], "Microsoft 365");
    assert_eq!(v["domain"], "example.com");
    let info = fake_pbx::digest::raw_field(text, "info").unwrap();
    assert!(info.starts_with(r#"{"appobj":"m365","appdn":"Microsoft 365","appurl":"https://ap.example.com/example.com/m365/innovaphone-microsoft365","pbx":"master","cn":"Microsoft 365","unlicensed":true,"apps":[]}"#));
}

#[test]
fn no_api_traffic_before_login_and_pbxinfo_after_ok() {
    let (mut p, _) = pbx();
    p.tick();
    p.drain();
    p.on_connected(1);
    p.drain();
    // KeepAlive is fine at any time.
    p.on_frame(1, r#"{"mt":"KeepAlive"}"#);
    assert!(p.violations().is_empty());
    // Connector sends API traffic too early: flagged, ignored.
    p.on_frame(1, r#"{"api":"PbxApi","mt":"SubscribePresence","sip":"x"}"#);
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.violations().len(), 1);
    p.on_frame(1, r#"{"mt":"AppChallengeResult","challenge":"1"}"#);
    let f = sent(&mut p);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1["mt"], "AppLogin");
    p.on_frame(1, r#"{"mt":"AppLoginResult","ok":true}"#);
    let f = sent(&mut p);
    assert_eq!(
        f[0].1,
        json!({"mt":"PbxInfo","domain":"example.com","pbx":"master","pbxDns":"master.example.com",
            "apis":["PbxApi","PbxTableUsers","PbxAdminApi","PbxImpersonation"],"version":"14r2","build":"143104"})
    );
    assert!(p.is_logged_in("master"));
}

#[test]
fn challenge_reuse_and_invalid_challenge_are_violations() {
    let (mut p, _) = pbx();
    login(&mut p, "master", "samechallenge");
    assert!(p.violations().is_empty());
    login(&mut p, "slave", "samechallenge");
    assert!(p.violations()[0].contains("reused"));
    let (mut p, _) = pbx();
    p.tick();
    p.drain();
    p.on_connected(1);
    p.on_frame(
        1,
        r#"{"mt":"AppChallengeResult","challenge":"01234567890123456789"}"#,
    );
    assert!(p.violations()[0].contains("invalid challenge"));
}

#[test]
fn wrong_password_not_logged_in_and_reconnects_with_backoff() {
    let (mut p, clock) = pbx();
    p.node_config_mut("master").unwrap().app.password = "wrong".into();
    let mut delays = vec![];
    let mut last_close = 0;
    for i in 0..4 {
        p.tick();
        let conn = p
            .drain()
            .into_iter()
            .find_map(|o| match o {
                Output::Dial { conn, node, .. } if node == "master" => Some(conn),
                _ => None,
            })
            .expect("redial");
        if i > 0 {
            delays.push(clock.now_ms() - last_close);
        }
        p.on_connected(conn);
        p.on_frame(
            conn,
            &json!({"mt":"AppChallengeResult","challenge":format!("c{i}")}).to_string(),
        );
        let out = p.drain();
        let Output::Send { text, .. } = &out[1] else {
            panic!()
        };
        assert!(!verify_login(text, &format!("c{i}"), PASSWORD));
        p.on_frame(
            conn,
            r#"{"mt":"AppLoginResult","ok":false,"error":"digest"}"#,
        );
        assert!(p.drain().contains(&Output::Close { conn }));
        assert!(!p.is_logged_in("master"));
        last_close = clock.now_ms();
        // Not redialled immediately.
        p.tick();
        assert!(
            !p.drain()
                .iter()
                .any(|o| matches!(o, Output::Dial { node, .. } if node == "master"))
        );
        let due = p.next_deadline().unwrap();
        assert!(due > clock.now_ms());
        clock.set(due);
    }
    // Backoff grows.
    assert!(delays[2] > delays[0], "{delays:?}");
}

#[test]
fn stale_challenge_digest_uses_previous_challenge() {
    let (mut p, clock) = pbx();
    let c = login(&mut p, "master", "first");
    p.on_closed(c);
    p.inject_login_fault("master", LoginFault::StaleChallenge);
    clock.set(p.next_deadline().unwrap());
    p.tick();
    let conn = p.node_conn("master").unwrap();
    p.drain();
    p.on_connected(conn);
    p.drain();
    p.on_frame(conn, r#"{"mt":"AppChallengeResult","challenge":"second"}"#);
    let out = p.drain();
    let Output::Send { text, .. } = &out[0] else {
        panic!()
    };
    assert!(verify_login(text, "first", PASSWORD));
    assert!(!verify_login(text, "second", PASSWORD));
    // A careless service says ok: recorded.
    p.on_frame(conn, r#"{"mt":"AppLoginResult","ok":true}"#);
    assert!(p.violations().iter().any(|v| v.contains("bad digest")));
}

#[test]
fn garbage_before_login_fault_is_sent_first() {
    let (mut p, _) = pbx();
    p.inject_login_fault("master", LoginFault::GarbageBeforeLogin);
    p.tick();
    let conn = p.node_conn("master").unwrap();
    p.drain();
    p.on_connected(conn);
    p.drain();
    p.on_frame(conn, r#"{"mt":"AppChallengeResult","challenge":"x"}"#);
    let f = sent(&mut p);
    assert!(f[0].1.is_string());
    assert_eq!(f[1].1["mt"], "AppLogin");
}

// ---- items 5-6: API gating, src discipline

#[test]
fn api_not_in_pbxinfo_gets_no_answer_or_error() {
    let (mut p, _) = pbx();
    p.node_config_mut("master").unwrap().apis = vec!["PbxTableUsers".into()];
    let c = login(&mut p, "master", "c1");
    let req = json!({"api":"PbxApi","mt":"SubscribePresence","sip":"a","src":"s"});
    assert!(send(&mut p, c, req.clone()).is_empty());
    p.switches.gated_reply = GatedReply::Error;
    let r = send(&mut p, c, req);
    assert_eq!(r[0]["mt"], "SubscribePresenceResult");
    assert_eq!(r[0]["src"], "s");
    assert!(r[0]["error"].is_number());
}

#[test]
fn unanswered_api_fault_drops_requests() {
    let (mut p, _) = pbx();
    let c = login(&mut p, "master", "c1");
    p.unanswered_apis.insert("PbxAdminApi".into());
    assert!(
        send(
            &mut p,
            c,
            json!({"api":"PbxAdminApi","mt":"GetAppLics","src":"x"})
        )
        .is_empty()
    );
}

#[test]
fn src_echoed_and_responses_reordered_on_request() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"S1"}),
    );
    assert!(r.iter().all(|m| m["src"] == "S1"), "{r:?}");
    p.switches.reorder_responses = true;
    let r1 = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetAppLics","src":"A"}),
    );
    assert!(r1.is_empty());
    let r2 = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetPbxLicenses","src":"B"}),
    );
    assert_eq!(r2[0]["src"], "B");
    assert_eq!(r2[1]["src"], "A");
    // Unsolicited frames without src can be injected at any time.
    assert!(p.inject_frame("master", r#"{"mt":"AppInfo","app":"x"}"#));
}

// ---- items 8-9: replication

fn replicate_all(p: &mut fake_pbx::Pbx, c: u64, start: Value) -> (Value, Vec<Value>) {
    let r = send(p, c, start);
    let start_result = r[0].clone();
    let mut rows = vec![];
    for _ in 0..100_000 {
        let r = send(
            p,
            c,
            json!({"api":"PbxTableUsers","mt":"ReplicateNext","src":"r1"}),
        );
        let last = r.last().unwrap().clone();
        assert_eq!(last["mt"], "ReplicateNextResult");
        assert_eq!(last["src"], "r1");
        if last.get("columns").is_none() {
            return (start_result, rows);
        }
        rows.push(last);
    }
    panic!("no end marker")
}

#[test]
fn replication_loop_ends_with_next_result_without_columns() {
    let (mut p, _) = pbx();
    p.add_users(fake_pbx::users::populate(&PopulateSpec {
        users: 50,
        pseudo_objects: 6,
        ..Default::default()
    }));
    let c = login(&mut p, "master", "c1");
    let (sr, rows) = replicate_all(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","add":true,"del":true,
        "columns":{"guid":{},"h323":{},"cn":{},"loc":{},"emails":{}}}),
    );
    assert_eq!(sr["mt"], "ReplicateStartResult");
    assert_eq!(sr["src"], "r1");
    assert!(sr["guid"].is_string() && sr["usn"].is_u64());
    assert_eq!(rows.len(), 50, "pseudo objects filtered out by default");
    for r in &rows {
        let cols = r["columns"].as_object().unwrap();
        assert!(
            cols.keys()
                .all(|k| ["guid", "h323", "cn", "loc", "emails"].contains(&k.as_str()))
        );
        assert!(r["usn"].is_u64());
    }
    // pseudo filter selects other object types.
    let (_, rows) = replicate_all(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","columns":{"guid":{},"pseudo":{}},
        "pseudo":["waiting","vm"]}),
    );
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]["columns"]["pseudo"]
            .as_str()
            .unwrap()
            .starts_with("<pseudo type=")
    );
}

#[test]
fn replication_pushes_add_update_del_also_during_initial_load() {
    let (mut p, _) = pbx();
    for i in 0..5 {
        p.upsert_user(user(&format!("g{i}"), &format!("u{i}"), "master"));
    }
    let c = login(&mut p, "master", "c1");
    send(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","columns":{"guid":{},"cn":{}}}),
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateNext","src":"r1"}),
    );
    assert_eq!(r[0]["columns"]["guid"], "g0");
    // During the initial load.
    p.upsert_user(user("new", "newbie", "master"));
    p.delete_user("g3");
    let mut u1 = p.user("g1").unwrap().clone();
    u1.cn = "Changed".into();
    p.upsert_user(u1);
    let pushed = sent(&mut p);
    let pm: Vec<_> = pushed
        .iter()
        .map(|(_, v)| v["mt"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        pm,
        vec!["ReplicateAdd", "ReplicateDel"],
        "pending row g1 comes in the loop"
    );
    assert_eq!(pushed[1].1["columns"], json!({"guid":"g3"}));
    let mut rest = vec![];
    loop {
        let r = send(
            &mut p,
            c,
            json!({"api":"PbxTableUsers","mt":"ReplicateNext","src":"r1"}),
        );
        if r[0].get("columns").is_none() {
            break;
        }
        rest.push(r[0]["columns"].clone());
    }
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert!(rest.contains(&json!({"guid":"g1","cn":"Changed"})));
    // After the load: full-row update.
    let mut u2 = p.user("g2").unwrap().clone();
    u2.cn = "Two".into();
    p.upsert_user(u2);
    let f = sent(&mut p);
    assert_eq!(f[0].1["mt"], "ReplicateUpdate");
    assert_eq!(f[0].1["columns"], json!({"guid":"g2","cn":"Two"}));
    assert_eq!(f[0].1["src"], "r1");
}

#[test]
fn replication_resume_with_guid_usn_and_reload_on_new_db_guid() {
    let (mut p, _) = pbx();
    for i in 0..5 {
        p.upsert_user(user(&format!("g{i}"), &format!("u{i}"), "master"));
    }
    let c = login(&mut p, "master", "c1");
    let start =
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","columns":{"guid":{}}});
    let (sr, rows) = replicate_all(&mut p, c, start.clone());
    assert_eq!(rows.len(), 5);
    let (guid, usn) = (
        sr["guid"].clone(),
        rows.last().unwrap()["usn"].as_u64().unwrap(),
    );
    p.upsert_user(user("g9", "u9", "master"));
    p.delete_user("g0");
    p.on_closed(c);
    let c2 = login(&mut p, "master", "c2");
    let mut resume = start.clone();
    resume["guid"] = guid.clone();
    resume["usn"] = json!(usn);
    let r = send(&mut p, c2, resume.clone());
    assert_eq!(mts(&r), vec!["ReplicateStartResult", "ReplicateDel"]);
    let (_, rows) = replicate_all(
        &mut p,
        c2,
        json!({"api":"PbxTableUsers","mt":"ReplicateNext","src":"r1"})
            .as_object()
            .map(|_| resume.clone())
            .unwrap(),
    );
    assert_eq!(rows.len(), 1, "only newer rows");
    assert_eq!(rows[0]["columns"]["guid"], "g9");
    p.reset_db_guid();
    let (_, rows) = replicate_all(&mut p, c2, resume);
    assert_eq!(rows.len(), 5, "full reload after database guid change");
}

#[test]
fn realistic_rows_have_documented_columns() {
    let (mut p, _) = pbx();
    p.add_users(fake_pbx::users::populate(&PopulateSpec {
        users: 300,
        ..Default::default()
    }));
    let c = login(&mut p, "master", "c1");
    let (_, rows) = replicate_all(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","columns":{"guid":{},"h323":{},"cn":{},"dn":{},"e164":{},"emails":{},"loc":{},"node":{},"apps":{},"grps":{},"devices":{},"hide":{}}}),
    );
    let cols: Vec<&Value> = rows.iter().map(|r| &r["columns"]).collect();
    assert!(cols.iter().any(|c| c["loc"] == "slave"));
    assert!(cols.iter().any(|c| c.get("emails").is_none()));
    assert!(cols.iter().any(|c| c.get("grps").is_some()));
    assert!(
        cols.iter().all(|c| c.get("hide").is_none()),
        "false booleans omitted"
    );
    assert!(
        cols.iter()
            .all(|c| c["apps"].as_str().unwrap().contains(','))
    );
    assert!(cols.iter().any(|c| !c["cn"].as_str().unwrap().is_ascii()));
}

// ---- items 10-13: presence

fn subscribed(p: &mut fake_pbx::Pbx, node: &str, ch: &str) -> u64 {
    let c = login(p, node, ch);
    let r = send(
        p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"ga"}),
    );
    assert_eq!(
        mts(&r),
        vec!["SubscribePresenceResult", "PresenceState", "PresenceUpdate"]
    );
    c
}

#[test]
fn set_presence_replaces_same_contact_and_moves_it_first() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = subscribed(&mut p, "master", "c1");
    p.set_user_presence("aa", "away", "back at 3");
    sent(&mut p);
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","src":"s1","guid":"aa","contact":"teams:","activity":"busy","note":"In a Teams call"}),
    );
    assert_eq!(
        r[0],
        json!({"api":"PbxApi","mt":"SetPresenceResult","src":"s1"})
    );
    assert_eq!(r[1]["mt"], "PresenceUpdate");
    assert_eq!(r[1]["src"], "ga");
    let contacts = |v: &Value| -> Vec<String> {
        v["presence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["contact"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(contacts(&r[1]), vec!["teams:", "tel:"]);
    p.set_user_presence("aa", "dnd", "");
    let r = sent(&mut p);
    assert_eq!(contacts(&r[0].1), vec!["tel:", "teams:"]);
    // SetPresence by sip replaces only the teams: item and moves it first.
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","src":"s2","sip":"alice","contact":"teams:","activity":"meeting","note":""}),
    );
    assert_eq!(contacts(&r[1]), vec!["teams:", "tel:"]);
    assert_eq!(r[1]["presence"][0]["activity"], "meeting");
    assert_eq!(r[1]["presence"][1]["activity"], "dnd");
    assert_eq!(p.stored_presence("aa").len(), 2);
}

#[test]
fn unset_removes_item_by_default_or_keeps_it_empty() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = subscribed(&mut p, "master", "c1");
    send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","guid":"aa","contact":"teams:","activity":"busy","note":""}),
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","guid":"aa","contact":"teams:","activity":"","note":""}),
    );
    assert_eq!(r[1]["presence"], json!([]));
    p.switches.unset_removes_item = false;
    send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","guid":"aa","contact":"teams:","activity":"busy","note":""}),
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","guid":"aa","contact":"teams:","activity":"","note":""}),
    );
    assert_eq!(
        r[1]["presence"],
        json!([{"contact":"teams:","status":"open","activity":"","note":""}])
    );
}

#[test]
fn set_presence_unknown_user_and_on_the_phone_switch() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","src":"x","sip":"nobody","contact":"teams:","activity":"busy"}),
    );
    assert!(r[0]["error"].is_number() && r[0]["errorText"].is_string());
    let otp = json!({"api":"PbxApi","mt":"SetPresence","src":"y","sip":"alice","contact":"teams:","activity":"on-the-phone"});
    let r = send(&mut p, c, otp.clone());
    assert!(r[0].get("error").is_none());
    assert_eq!(p.stored_presence("aa")[0].activity, "on-the-phone");
    p.switches.accept_set_on_the_phone = false;
    let r = send(&mut p, c, otp);
    assert!(r[0]["error"].is_number());
}

#[test]
fn monitoring_state_updates_and_unsubscribe() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    let num = p.user("aa").unwrap().e164.clone();
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","num":num,"src":"ga"}),
    );
    assert_eq!(
        r[1],
        json!({"api":"PbxApi","mt":"PresenceState","src":"ga","up":true,"sip":"alice","num":num,"dn":"alice Long","email":"alice@example.com"})
    );
    assert_eq!(r[2]["presence"], json!([]));
    p.set_user_presence("aa", "away", "");
    assert_eq!(sent(&mut p)[0].1["presence"][0]["activity"], "away");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"UnsubscribePresence","num":num,"src":"u"}),
    );
    assert_eq!(mts(&r), vec!["UnsubscribePresenceResult"]);
    p.set_user_presence("aa", "busy", "");
    assert!(sent(&mut p).is_empty());
    // Unknown user: up:false (default) or error.
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"ghost","src":"g"}),
    );
    assert_eq!(r[1]["up"], false);
    p.switches.unknown_subscription = UnknownSubscription::ResultError;
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"ghost","src":"g"}),
    );
    assert_eq!(r.len(), 1);
    assert!(r[0]["error"].is_number());
}

#[test]
fn visibility_hides_presence_and_lists_unallowed() {
    let (mut p, _) = pbx();
    let mut a = user("aa", "alice", "master");
    a.visibility = Visibility {
        presence: false,
        otf: false,
        note: false,
    };
    p.upsert_user(a);
    let c = login(&mut p, "master", "c1");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"ga"}),
    );
    assert_eq!(mts(&r), vec!["SubscribePresenceResult", "PresenceState"]);
    assert_eq!(r[1]["up"], false);
    p.set_user_presence("aa", "away", "x");
    assert!(sent(&mut p).is_empty());
    assert_eq!(p.unallowed().len(), 1);
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"MonitorUnallowed","src":"m"}),
    );
    assert_eq!(r[0]["unallowed"][0]["sip"], "alice");
    // Granting presence without notes.
    p.set_visibility(
        "aa",
        Visibility {
            presence: true,
            otf: true,
            note: false,
        },
    );
    let r = sent(&mut p);
    assert_eq!(r[0].1["mt"], "PresenceState");
    assert_eq!(r[0].1["up"], true);
    assert_eq!(r[1].1["presence"][0]["note"], "");
    assert!(p.unallowed().is_empty());
}

#[test]
fn on_the_phone_only_on_users_loc_pbx() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "slave"));
    let cm = subscribed(&mut p, "master", "c1");
    let cs = subscribed(&mut p, "slave", "c2");
    p.start_call("aa");
    let f = sent(&mut p);
    assert_eq!(f.len(), 1, "only the slave connection sees the call: {f:?}");
    assert_eq!(f[0].0, cs);
    assert_eq!(
        f[0].1["presence"][0],
        json!({"contact":"tel:","status":"open","activity":"on-the-phone","note":""})
    );
    assert_ne!(f[0].0, cm);
    p.end_call("aa");
    let f = sent(&mut p);
    assert_eq!(f[0].1["presence"], json!([]));
    // Separate-item variant and otf visibility.
    p.switches.call_presence = CallPresence::SeparateItem("phone:".into());
    p.set_user_presence("aa", "away", "");
    sent(&mut p);
    p.start_call("aa");
    let f = sent(&mut p);
    assert_eq!(f[0].1["presence"][0]["contact"], "phone:");
    assert_eq!(f[0].1["presence"][1]["contact"], "tel:");
    p.set_visibility(
        "aa",
        Visibility {
            presence: true,
            otf: false,
            note: true,
        },
    );
    let f = sent(&mut p);
    assert_eq!(f.iter().filter(|(c, _)| *c == cs).count(), 1);
    assert_eq!(f[0].1["presence"][0]["activity"], "away");
}

// ---- item 14: alien calls

#[test]
fn alien_call_via_impersonation_shows_on_the_phone_until_deleted() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = subscribed(&mut p, "master", "c1");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxImpersonation","mt":"CreateApi","src":"i1","sip":"alice","target":"PbxApi"}),
    );
    assert_eq!(
        r[0],
        json!({"api":"PbxImpersonation","mt":"CreateApiResult","src":"i1","target":"PbxApi.0"})
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi.0","mt":"AddAlienCall","src":"c1"}),
    );
    assert_eq!(r[0]["mt"], "AddAlienCallResult");
    assert_eq!(r[0]["api"], "PbxApi.0");
    let id = r[0]["id"].as_u64().unwrap();
    assert_eq!(r[1]["presence"][0]["activity"], "on-the-phone");
    let r2 = send(
        &mut p,
        c,
        json!({"api":"PbxApi.0","mt":"AddAlienCall","src":"c2"}),
    );
    assert_ne!(r2[0]["id"].as_u64().unwrap(), id, "ids unique");
    assert_eq!(p.alien_calls().len(), 2);
    send(
        &mut p,
        c,
        json!({"api":"PbxApi.0","mt":"DelAlienCall","src":"d","id":id}),
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi.0","mt":"DelAlienCall","src":"d2","id":r2[0]["id"]}),
    );
    assert_eq!(
        r[0],
        json!({"api":"PbxApi.0","mt":"DelAlienCallResult","src":"d2"})
    );
    assert_eq!(r[1]["presence"], json!([]));
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxImpersonation","mt":"DeleteApi","src":"x","target":"PbxApi.0"}),
    );
    assert_eq!(r[0]["ok"], true);
    // Without impersonation the App object is no user.
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"AddAlienCall","src":"c3","sip":"alice"}),
    );
    assert!(r[0]["error"].is_number());
    p.switches.alien_accepts_user_fields = true;
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"AddAlienCall","src":"c3","sip":"alice"}),
    );
    assert!(r[0]["id"].is_u64());
}

#[test]
fn alien_call_non_local_rejected_and_dropped_on_close() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "slave"));
    let c = login(&mut p, "master", "c1");
    send(
        &mut p,
        c,
        json!({"api":"PbxImpersonation","mt":"CreateApi","src":"i1","sip":"alice","target":"PbxApi"}),
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi.0","mt":"AddAlienCall","src":"c1"}),
    );
    assert!(r[0]["error"].is_number());
    p.switches.alien_non_local = AlienNonLocal::Ignore;
    assert!(
        send(
            &mut p,
            c,
            json!({"api":"PbxApi.0","mt":"AddAlienCall","src":"c1"})
        )
        .is_empty()
    );
    let cs = subscribed(&mut p, "slave", "c2");
    send(
        &mut p,
        cs,
        json!({"api":"PbxImpersonation","mt":"CreateApi","src":"i1","sip":"alice","target":"PbxApi"}),
    );
    let r = send(
        &mut p,
        cs,
        json!({"api":"PbxApi.0","mt":"AddAlienCall","src":"c1"}),
    );
    assert!(r[0]["id"].is_u64());
    assert_eq!(p.alien_calls().len(), 1);
    let cm2 = p.node_conn("master").unwrap();
    let _ = cm2;
    p.on_closed(cs);
    assert!(p.alien_calls().is_empty());
    assert!(!p.on_the_phone("aa", "slave"));
}

// ---- item 15: licences

#[test]
fn check_app_lic_head_match_pool_and_testmode() {
    let (mut p, _) = pbx();
    let mut a = user("aa", "alice", "master");
    a.lics = vec!["App(innovaphone-microsoft365)".into()];
    let mut b = user("bb", "bob", "master");
    b.lics = vec!["App(innovaphone-microsoft365)".into()];
    let mut h = user("hh", "head", "master");
    h.lics = vec!["App(innovaphone)".into()];
    p.upsert_user(a);
    p.upsert_user(b);
    p.upsert_user(h);
    p.upsert_user(user("cc", "carol", "master"));
    p.set_licence("App(innovaphone-microsoft365)", 1);
    p.set_licence("App(innovaphone)", 5);
    let c = login(&mut p, "master", "c1");
    let chk = |p: &mut fake_pbx::Pbx, who: Value| {
        let mut m = json!({"api":"PbxAdminApi","mt":"CheckAppLic","src":"l","lic":"App(innovaphone-microsoft365)"});
        for (k, v) in who.as_object().unwrap() {
            m[k] = v.clone();
        }
        let r = send(p, c, m);
        assert_eq!(r[0]["mt"], "CheckAppLicResult");
        assert_eq!(r[0]["src"], "l");
        r[0]["ok"].as_bool().unwrap()
    };
    assert!(chk(&mut p, json!({"h323":"alice"})));
    assert!(!chk(&mut p, json!({"guid":"bb"})), "pool of 1 exhausted");
    assert!(chk(&mut p, json!({"cn":"head Long"})), "head match");
    assert!(!chk(&mut p, json!({"h323":"carol"})));
    assert!(!chk(&mut p, json!({"h323":"nobody"})));
    // Runtime change: alice loses the licence, bob moves up.
    p.assign_licence("aa", "App(innovaphone-microsoft365)", false);
    assert!(!chk(&mut p, json!({"h323":"alice"})));
    assert!(chk(&mut p, json!({"h323":"bob"})));
    assert_eq!(p.licence_checks().len(), 7);
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetAppLics","src":"g"}),
    );
    let l = r[0]["lic"].as_array().unwrap();
    assert!(
        l.iter()
            .any(|x| x["name"] == "App(innovaphone-microsoft365)"
                && x["count"] == "1"
                && x["used"] == "1")
    );
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetPbxLicenses","src":"g"}),
    );
    assert!(r[0]["lic"].is_array());
    p.switches.testmode = true;
    assert!(chk(&mut p, json!({"h323":"carol"})));
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetAppLics","src":"g"}),
    );
    assert!(r[0].get("lic").is_none(), "test mode: no lic");
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxAdminApi","mt":"GetPbxLicenses","src":"g"}),
    );
    assert!(r[0].get("lic").is_none());
}

#[test]
fn login_info_carries_lics_and_testmode() {
    let (mut p, _) = pbx();
    p.node_config_mut("master").unwrap().app.lics = Some(4);
    p.switches.testmode = true;
    p.tick();
    p.drain();
    p.on_connected(1);
    p.drain();
    p.on_frame(1, r#"{"mt":"AppChallengeResult","challenge":"x"}"#);
    let f = sent(&mut p);
    assert_eq!(f[0].1["info"]["lics"], 4);
    assert_eq!(f[0].1["info"]["testmode"], true);
}

// ---- item 16: master and slave

#[test]
fn slave_connection_independent_of_master() {
    let (mut p, clock) = pbx();
    p.upsert_user(user("aa", "alice", "slave"));
    let cm = login(&mut p, "master", "m1");
    let cs = subscribed(&mut p, "slave", "s1");
    assert_ne!(cm, cs);
    p.kill("master");
    assert!(!p.is_logged_in("master"));
    assert!(p.is_logged_in("slave"));
    p.start_call("aa");
    assert_eq!(sent(&mut p)[0].0, cs);
    clock.advance(1_000_000);
    p.tick();
    assert!(
        !p.drain().iter().any(|o| matches!(o, Output::Dial { .. })),
        "killed stays down"
    );
    p.restore("master");
    let cm2 = login(&mut p, "master", "m2");
    assert_ne!(cm2, cm);
    // Reconnected master has no old subscriptions; slave's stay.
    assert!(p.subscriptions("master").is_empty());
    assert_eq!(p.subscriptions("slave").len(), 1);
    let st = p.node_status();
    assert_eq!(st[0].logins, 2);
    assert_eq!(st[1].logins, 1);
}

// ---- item 20: robustness

#[test]
fn keepalive_garbage_unknown_and_large_messages_ignored() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    assert!(send(&mut p, c, json!({"mt":"KeepAlive"})).is_empty());
    p.on_frame(c, "not json {{");
    p.on_frame(c, "[1,2]");
    assert!(sent(&mut p).is_empty());
    assert!(send(&mut p, c, json!({"mt":"Whatever","x":1})).is_empty());
    assert!(send(&mut p, c, json!({"api":"PbxApi","mt":"Whatever"})).is_empty());
    let big = "x".repeat(64 * 1024 - 200);
    let r = send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SetPresence","src":"s","sip":"alice","contact":"teams:","activity":"busy","note":big,"extra":{"unknown":true}}),
    );
    assert!(r[0].get("error").is_none());
    assert_eq!(p.stored_presence("aa")[0].note.len(), big.len());
    assert!(p.is_logged_in("master"));
}

#[test]
fn burst_of_thousands_of_updates() {
    let (mut p, _) = pbx();
    p.add_users(fake_pbx::users::populate(&PopulateSpec {
        users: 3000,
        locs: vec!["master".into()],
        ..Default::default()
    }));
    let c = login(&mut p, "master", "c1");
    let guids: Vec<String> = p
        .users()
        .filter(|u| u.pseudo.is_none())
        .map(|u| u.guid.clone())
        .collect();
    for g in &guids {
        let sip = p.user(g).unwrap().h323.clone();
        p.on_frame(
            c,
            &json!({"api":"PbxApi","mt":"SubscribePresence","sip":sip,"src":g}).to_string(),
        );
    }
    sent(&mut p);
    for g in &guids {
        p.set_user_presence(g, "away", "");
    }
    assert_eq!(sent(&mut p).len(), guids.len());
}

#[test]
fn close_mid_message_fault_emits_output_and_reconnects() {
    let (mut p, clock) = pbx();
    let c = login(&mut p, "master", "c1");
    p.close_mid_message("master");
    assert!(p.drain().contains(&Output::CloseMidMessage { conn: c }));
    clock.advance(60_000);
    p.tick();
    assert!(
        p.drain()
            .iter()
            .any(|o| matches!(o, Output::Dial { node, .. } if node == "master"))
    );
}

// ---- item 7: AppInfo

#[test]
fn app_info_sent_and_result_validated() {
    let (mut p, _) = pbx();
    let c = login(&mut p, "master", "c1");
    assert!(p.send_app_info("master", "innovaphone-microsoft365api"));
    assert_eq!(
        sent(&mut p)[0].1,
        json!({"mt":"AppInfo","app":"innovaphone-microsoft365api"})
    );
    p.on_frame(c, r#"{"mt":"AppInfoResult","app":"innovaphone-microsoft365api","info":{"hidden":true,"apis":{"com.innovaphone.search":{"info":{}}}}}"#);
    assert!(p.violations().is_empty());
    assert_eq!(p.app_info_results().len(), 1);
    p.on_frame(c, r#"{"mt":"AppInfoResult","app":"innovaphone-microsoft365api","info":{"hidden":false,"apis":{}}}"#);
    assert_eq!(p.violations().len(), 2);
}

// ---- additions: login timeout, unsolicited AppInfo, duplicates, scale

#[test]
fn login_timeout_closes_and_reconnects() {
    let (mut p, clock) = pbx();
    p.tick();
    p.drain();
    let c = p.node_conn("master").unwrap();
    p.on_connected(c);
    p.drain();
    // The service never answers the AppChallenge.
    assert_eq!(p.next_deadline(), Some(clock.now_ms() + 20_000));
    clock.advance(19_999);
    p.tick();
    assert!(!p.drain().contains(&Output::Close { conn: c }));
    clock.advance(1);
    p.tick();
    assert!(p.drain().contains(&Output::Close { conn: c }));
    assert_eq!(p.node_conn("master"), None);
    assert!(p.next_deadline().unwrap() > clock.now_ms());
}

#[test]
fn app_info_after_login_is_unsolicited_without_src() {
    let (mut p, _) = pbx();
    p.switches.app_info_after_login = vec!["innovaphone-microsoft365api".into()];
    p.tick();
    p.drain();
    let c = p.node_conn("master").unwrap();
    p.on_connected(c);
    p.on_frame(c, r#"{"mt":"AppChallengeResult","challenge":"x"}"#);
    p.drain();
    p.on_frame(c, r#"{"mt":"AppLoginResult","ok":true}"#);
    let f = sent(&mut p);
    assert_eq!(
        mts(&f.iter().map(|x| x.1.clone()).collect::<Vec<_>>()),
        vec!["PbxInfo", "AppInfo"]
    );
    assert!(f[1].1.get("src").is_none());
}

#[test]
fn duplicate_subscription_is_a_violation() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = login(&mut p, "master", "c1");
    send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"a"}),
    );
    // Same src again replaces silently.
    send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"a"}),
    );
    assert!(p.violations().is_empty());
    send(
        &mut p,
        c,
        json!({"api":"PbxApi","mt":"SubscribePresence","sip":"alice","src":"b"}),
    );
    assert!(p.violations()[0].contains("duplicate"));
}

#[test]
fn large_pbx_of_10000_users_replicates_fully_and_storms() {
    let (mut p, _) = pbx();
    let users = fake_pbx::users::populate(&PopulateSpec {
        users: 10_000,
        pseudo_objects: 50,
        seed: 99,
        ..Default::default()
    });
    p.add_users(users);
    let c = login(&mut p, "master", "c1");
    let (_, rows) = replicate_all(
        &mut p,
        c,
        json!({"api":"PbxTableUsers","mt":"ReplicateStart","src":"r1","columns":{"guid":{},"h323":{},"loc":{}}}),
    );
    assert_eq!(rows.len(), 10_000);
    for r in rows.iter().take(2000) {
        let sip = r["columns"]["h323"].as_str().unwrap().to_string();
        p.on_frame(
            c,
            &json!({"api":"PbxApi","mt":"SubscribePresence","sip":sip,"src":r["columns"]["guid"]})
                .to_string(),
        );
    }
    sent(&mut p);
    p.presence_storm(5000);
    let updates = sent(&mut p);
    assert!(!updates.is_empty());
    assert!(updates.iter().all(|(_, m)| m["mt"] == "PresenceUpdate"));
}

#[test]
fn deleted_user_monitor_goes_down() {
    let (mut p, _) = pbx();
    p.upsert_user(user("aa", "alice", "master"));
    let c = subscribed(&mut p, "master", "c1");
    p.delete_user("aa");
    let f = sent(&mut p);
    assert!(f.iter().any(|(cc, m)| *cc == c
        && m["mt"] == "PresenceState"
        && m["up"] == false
        && m["src"] == "ga"));
}

#[test]
fn alternative_info_key_order_still_verifies_over_raw_text() {
    let (mut p, _) = pbx();
    p.switches.info_key_order = vec!["apps".into(), "pbx".into()];
    p.tick();
    p.drain();
    p.on_connected(1);
    p.drain();
    p.on_frame(1, r#"{"mt":"AppChallengeResult","challenge":"k"}"#);
    let out = p.drain();
    let Output::Send { text, .. } = &out[0] else {
        panic!()
    };
    assert!(
        fake_pbx::digest::raw_field(text, "info")
            .unwrap()
            .starts_with(r#"{"apps":[],"pbx":"master","appobj""#)
    );
    assert!(verify_login(text, "k", PASSWORD));
}

#[test]
fn seeded_presence_has_im_and_tel_items() {
    let (mut p, _) = pbx();
    p.add_users(fake_pbx::users::populate(&PopulateSpec {
        users: 200,
        ..Default::default()
    }));
    p.seed_presence();
    let all: Vec<_> = p
        .users()
        .map(|u| u.guid.clone())
        .collect::<Vec<_>>()
        .iter()
        .flat_map(|g| p.stored_presence(g))
        .collect();
    assert!(
        all.iter()
            .any(|i| i.contact == "im:" && i.status == "closed")
    );
    assert!(all.iter().any(|i| i.contact == "im:" && i.status == "open"));
    assert!(
        all.iter()
            .any(|i| i.contact == "tel:" && !i.activity.is_empty())
    );
}
