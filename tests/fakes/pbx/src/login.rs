//! Building AppLogin messages exactly as a real PBX (object login, spec §2.3/§2.7) or a myApps
//! client brokered by the PBX (user login, item 17) does: `info` keys in PBX order, digest over
//! the `info` text as sent, `pbxObj` only on user logins.

use crate::digest::{DigestInput, login_digest, ordered_object, ordered_object_raw};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A PBX App object (pseudo type `app`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppObject {
    /// h323 / SIP name of the object (`sip` of object logins, `info.appobj`).
    pub sip: String,
    /// Display name (`dn`, `info.appdn`, `info.cn`).
    pub dn: String,
    /// Object GUID.
    pub guid: String,
    /// App URL, e.g. `https://ap/example.com/m365/innovaphone-microsoft365`.
    pub url: String,
    /// Shared secret (= instance password).
    pub password: String,
    /// Service licence count (`info.lics`), if any.
    #[serde(default)]
    pub lics: Option<u32>,
    /// Other App objects allowed to access this app (`info.apps` of object logins).
    #[serde(default)]
    pub apps: Vec<(String, String)>,
}

impl AppObject {
    /// `app` of the AppLogin: the last path segment of the App URL.
    pub fn app_name(&self) -> &str {
        app_from_url(&self.url)
    }
}

/// Last path segment of a URL (the HTML name without `.htm`).
pub fn app_from_url(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// An AppLogin ready to send: the whole message text plus its parts, for assertions.
#[derive(Debug, Clone)]
pub struct BuiltLogin {
    /// Complete JSON text of the message.
    pub text: String,
    /// `info` text exactly as embedded in `text`.
    pub info: String,
    /// The digest.
    pub digest: String,
}

/// Inputs of an object login (PBX → service).
#[derive(Debug, Clone)]
pub struct ObjectLogin<'a> {
    /// PBX system name (`domain`).
    pub domain: &'a str,
    /// PBX name (`info.pbx`).
    pub pbx: &'a str,
    /// The App object.
    pub obj: &'a AppObject,
    /// `info.unlicensed` (real captures carry `true` for object logins).
    pub unlicensed: bool,
    /// `info.testmode`.
    pub testmode: bool,
    /// Optional different `info` key order (keys not listed keep PBX order at the end): catches
    /// services that rebuild `info` in a fixed order instead of hashing it as received.
    pub info_order: &'a [String],
}

/// Object login as the PBX sends it: key order `mt,sip,guid,dn,digest,domain,app,info` (as in
/// the captured message), info order `appobj,appdn,appurl,pbx,cn,unlicensed?,testmode?,lics?,apps`.
pub fn object_login(l: &ObjectLogin<'_>, challenge: &str, password: &str) -> BuiltLogin {
    let o = l.obj;
    let mut info: Vec<(&str, Value)> = vec![
        ("appobj", json!(o.sip)),
        ("appdn", json!(o.dn)),
        ("appurl", json!(o.url)),
        ("pbx", json!(l.pbx)),
        ("cn", json!(o.dn)),
    ];
    if l.unlicensed {
        info.push(("unlicensed", json!(true)));
    }
    if l.testmode {
        info.push(("testmode", json!(true)));
    }
    if let Some(n) = o.lics {
        info.push(("lics", json!(n)));
    }
    // `name` before `dn`: serde_json maps would sort the keys, so build the text by hand.
    let apps: Vec<String> = o
        .apps
        .iter()
        .map(|(n, d)| ordered_object(&[("name", json!(n)), ("dn", json!(d))]))
        .collect();
    let mut raw: Vec<(&str, String)> = info
        .iter()
        .map(|(k, v)| (*k, serde_json::to_string(v).expect("value")))
        .collect();
    raw.push(("apps", format!("[{}]", apps.join(","))));
    if !l.info_order.is_empty() {
        let rank = |k: &str| {
            l.info_order
                .iter()
                .position(|o| o == k)
                .unwrap_or(usize::MAX)
        };
        raw.sort_by_key(|(k, _)| rank(k));
    }
    let info = ordered_object_raw(&raw);
    let app = o.app_name();
    let digest = login_digest(
        &DigestInput {
            app,
            domain: l.domain,
            sip: &o.sip,
            guid: &o.guid,
            dn: &o.dn,
            info: Some(&info),
        },
        challenge,
        password,
    );
    let s = |v: &str| serde_json::to_string(v).expect("string");
    let text = format!(
        "{{\"mt\":\"AppLogin\",\"sip\":{},\"guid\":{},\"dn\":{},\"digest\":{},\"domain\":{},\"app\":{},\"info\":{}}}",
        s(&o.sip),
        s(&o.guid),
        s(&o.dn),
        s(&digest),
        s(l.domain),
        s(app),
        info
    );
    BuiltLogin { text, info, digest }
}

/// Inputs of a myApps user login brokered by the PBX (item 17).
#[derive(Debug, Clone)]
pub struct UserLogin<'a> {
    /// PBX system name.
    pub domain: &'a str,
    /// PBX name the user logged in at.
    pub pbx: &'a str,
    /// The App object granting access (its name becomes `pbxObj`, its password signs).
    pub obj: &'a AppObject,
    /// `app`: HTML name of the app the user opens (user app, admin app, API app).
    pub app: &'a str,
    /// User's h323.
    pub sip: &'a str,
    /// User's GUID.
    pub guid: &'a str,
    /// User's display name.
    pub dn: &'a str,
    /// User's Long Name (`info.cn`).
    pub cn: &'a str,
    /// `info.unlicensed`.
    pub unlicensed: bool,
    /// `info.testmode`.
    pub testmode: bool,
    /// `info.groups`.
    pub groups: Vec<String>,
    /// `info.apps` (App object names the user may access).
    pub apps: Vec<String>,
}

/// User login as myApps sends it (key order of the captured message; `key` stripped).
pub fn user_login(l: &UserLogin<'_>, challenge: &str) -> BuiltLogin {
    let o = l.obj;
    let mut info: Vec<(&str, Value)> = vec![
        ("appobj", json!(o.sip)),
        ("appdn", json!(o.dn)),
        ("appurl", json!(o.url)),
        ("pbx", json!(l.pbx)),
        ("cn", json!(l.cn)),
    ];
    if l.unlicensed {
        info.push(("unlicensed", json!(true)));
    }
    if l.testmode {
        info.push(("testmode", json!(true)));
    }
    info.push(("groups", json!(l.groups)));
    let apps: Vec<Value> = l.apps.iter().map(|n| json!({"name": n})).collect();
    info.push(("apps", Value::Array(apps)));
    let info = ordered_object(&info);
    let digest = login_digest(
        &DigestInput {
            app: l.app,
            domain: l.domain,
            sip: l.sip,
            guid: l.guid,
            dn: l.dn,
            info: Some(&info),
        },
        challenge,
        &o.password,
    );
    let s = |v: &str| serde_json::to_string(v).expect("string");
    let text = format!(
        "{{\"mt\":\"AppLogin\",\"app\":{},\"domain\":{},\"sip\":{},\"guid\":{},\"dn\":{},\"info\":{},\"digest\":{},\"pbxObj\":{}}}",
        s(l.app),
        s(l.domain),
        s(l.sip),
        s(l.guid),
        s(l.dn),
        info,
        s(&digest),
        s(&o.sip)
    );
    BuiltLogin { text, info, digest }
}

/// Spec §2.2: a challenge is at most 16 single-byte printable characters (and not empty).
pub fn challenge_is_valid(c: &str) -> bool {
    !c.is_empty() && c.len() <= 16 && c.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_search() -> AppObject {
        AppObject {
            sip: "go-search".into(),
            dn: "go-search".into(),
            guid: "3954ae7854c96301c9dd009033400109".into(),
            url: "http://192.168.178.29:5000/fritz.box/go/instance/searchapi".into(),
            password: "go".into(),
            lics: None,
            apps: vec![],
        }
    }

    #[test]
    fn captured_object_login_round_trips() {
        let obj = go_search();
        let l = object_login(
            &ObjectLogin {
                domain: "fritz.box",
                pbx: "pbx-main",
                obj: &obj,
                unlicensed: true,
                testmode: false,
                info_order: &[],
            },
            "16d7dbbcccb63612",
            "go",
        );
        let captured = r#"{"mt":"AppLogin","sip":"go-search","guid":"3954ae7854c96301c9dd009033400109","dn":"go-search","digest":"130f168773ff760701b74e629eca2544c6e62d5354e92e6f821001a982eb8951","domain":"fritz.box","app":"searchapi","info":{"appobj":"go-search","appdn":"go-search","appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi","pbx":"pbx-main","cn":"go-search","unlicensed":true,"apps":[]}}"#;
        assert_eq!(l.text, captured);
        assert!(!l.text.contains("pbxObj"));
    }

    #[test]
    fn captured_user_login_round_trips() {
        let obj = go_search();
        let l = user_login(
            &UserLogin {
                domain: "fritz.box",
                pbx: "pbx-main",
                obj: &obj,
                app: "searchapi",
                sip: "rico",
                guid: "f48b06484a8a61015853009033400109",
                dn: "Schulte, Rico",
                cn: "rico",
                unlicensed: false,
                testmode: true,
                groups: vec![],
                apps: vec![],
            },
            "7c4fc2e477f69233",
        );
        let captured = r#"{"mt":"AppLogin","app":"searchapi","domain":"fritz.box","sip":"rico","guid":"f48b06484a8a61015853009033400109","dn":"Schulte, Rico","info":{"appobj":"go-search","appdn":"go-search","appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi","pbx":"pbx-main","cn":"rico","testmode":true,"groups":[],"apps":[]},"digest":"378b82aa7508eb53866e3f4de054cdc0f7b5229e9742593e9359db3845681eb6","pbxObj":"go-search"}"#;
        assert_eq!(l.text, captured);
    }

    #[test]
    fn info_variants_keep_order_non_ascii_and_slashes() {
        let mut obj = go_search();
        obj.dn = "Connector für Teams".into();
        obj.url = "https://ap.example.com/example.com/m365/innovaphone-microsoft365".into();
        obj.lics = Some(3);
        obj.apps = vec![("microsoft365-api".into(), "API".into())];
        let l = object_login(
            &ObjectLogin {
                domain: "example.com",
                pbx: "master",
                obj: &obj,
                unlicensed: true,
                testmode: true,
                info_order: &[],
            },
            "1234",
            "pw",
        );
        assert!(l.info.starts_with(r#"{"appobj":"go-search","appdn":"Connector für Teams","appurl":"https://ap.example.com/example.com/m365/innovaphone-microsoft365","pbx":"master","cn":"Connector für Teams","unlicensed":true,"testmode":true,"lics":3,"apps":[{"name":"microsoft365-api","dn":"API"}]}"#));
        // Re-serializing with sorted keys gives a different digest: services must hash as sent.
        let v: serde_json::Value = serde_json::from_str(&l.info).unwrap();
        let sorted = serde_json::to_string(&v).unwrap();
        assert_ne!(sorted, l.info);
        let d2 = login_digest(
            &DigestInput {
                app: "innovaphone-microsoft365",
                domain: "example.com",
                sip: "go-search",
                guid: &obj.guid,
                dn: &obj.dn,
                info: Some(&sorted),
            },
            "1234",
            "pw",
        );
        assert_ne!(d2, l.digest);
        assert_eq!(obj.app_name(), "innovaphone-microsoft365");
        // Alternative key order: different text, still a valid digest over the text as sent.
        let order: Vec<String> = ["pbx", "cn", "appurl"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let l2 = object_login(
            &ObjectLogin {
                domain: "example.com",
                pbx: "master",
                obj: &obj,
                unlicensed: false,
                testmode: false,
                info_order: &order,
            },
            "1234",
            "pw",
        );
        assert!(
            l2.info
                .starts_with(r#"{"pbx":"master","cn":"Connector für Teams","appurl":"#)
        );
        let d3 = login_digest(
            &DigestInput {
                app: "innovaphone-microsoft365",
                domain: "example.com",
                sip: "go-search",
                guid: &obj.guid,
                dn: &obj.dn,
                info: Some(&l2.info),
            },
            "1234",
            "pw",
        );
        assert_eq!(d3, l2.digest);
    }

    #[test]
    fn challenge_validation_rules() {
        assert!(challenge_is_valid("3141592653589793"));
        assert!(challenge_is_valid("0123456789abcdef"));
        assert!(!challenge_is_valid("0123456789abcdef0"));
        assert!(!challenge_is_valid(""));
        assert!(!challenge_is_valid("abc\u{e9}"));
    }
}
