//! Item 32: national clouds.

use fake_m365::{Cloud, Config};
use serde_json::json;

use crate::common::*;

#[test]
fn national_cloud_hosts_and_no_presence_subscriptions() {
    assert_eq!(
        (Cloud::UsGovL4.graph_host(), Cloud::UsGovL4.login_host()),
        (
            "https://graph.microsoft.us",
            "https://login.microsoftonline.us"
        )
    );
    assert_eq!(
        Cloud::UsGovL5.graph_host(),
        "https://dod-graph.microsoft.us"
    );
    assert_eq!(
        (Cloud::China.graph_host(), Cloud::China.login_host()),
        (
            "https://microsoftgraph.chinacloudapi.cn",
            "https://login.partner.microsoftonline.cn"
        )
    );
    let mut cfg = Config::default();
    cfg.cloud = Cloud::UsGovL4;
    let mut t = setup_with(cfg);
    let (d, s) = (t.daemon.clone(), t.daemon_secret.clone());
    // The global .default scope is not this cloud's resource.
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    assert_eq!(r.status, 400);
    let r = t.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.us/.default"),
    ]);
    assert_eq!(r.status, 200);
    let app_tok = r.body_json()["access_token"].as_str().unwrap().to_string();
    let app = t.app.clone();
    let r = t.token(&[
        ("client_id", &app),
        ("grant_type", "password"),
        ("username", "pbx-svc@contoso.com"),
        ("password", SVC_PASSWORD),
        ("scope", "https://graph.microsoft.us/Presence.Read.All"),
    ]);
    let tok = r.body_json()["access_token"].as_str().unwrap().to_string();
    let a = t.alice.id.clone();
    // Presence subscriptions are global-only.
    let r = t
        .send(&tok, "POST", "/subscriptions", presence_sub_body(&[&a]))
        .unwrap_response();
    assert_eq!(r.status, 400);
    // getPresencesByUserId works in L4, setStatusMessage does not.
    assert_eq!(
        t.post(
            &app_tok,
            "/communications/getPresencesByUserId",
            json!({"ids": [a]})
        )
        .status,
        200
    );
    assert_eq!(
        t.post(
            &app_tok,
            &format!("/users/{a}/presence/setStatusMessage"),
            json!({"statusMessage": {"message": {"content": "x", "contentType": "text"}}})
        )
        .status,
        400
    );
    // Tokens are not interchangeable across clouds.
    let mut g = setup();
    let global_tok = g.app_token();
    assert_eq!(t.get(&global_tok, "/users").status, 401);
    // China: no getPresencesByUserId.
    let mut cfg = Config::default();
    cfg.cloud = Cloud::China;
    let mut c = setup_with(cfg);
    let r = c.token(&[
        ("client_id", &d),
        ("client_secret", &s),
        ("grant_type", "client_credentials"),
        ("scope", "https://microsoftgraph.chinacloudapi.cn/.default"),
    ]);
    let tok = r.body_json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        c.post(
            &tok,
            "/communications/getPresencesByUserId",
            json!({"ids": [a]})
        )
        .status,
        400
    );
}
