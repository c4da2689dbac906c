//! AppLogin: challenges and the shared-secret digest (innovaphone.md §2.2, §2.3).
//!
//! `digest = hex(sha256(app:domain:sip:guid:dn:info:challenge:password))`, where `info` is the
//! JSON text of the `info` value **as the client sent it** (compacted), and `info:` is left out
//! when the message has no `info`. The PBX hashes `JSON.stringify` output in its own key order,
//! so re-serialising a parsed map would change the text and fail valid logins; that is why the
//! frame is parsed with `RawValue`.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// An `AppLogin` message; `info` keeps its raw text.
#[derive(Debug, Deserialize)]
pub struct AppLogin<'a> {
    /// App name (last segment of the App URL).
    #[serde(default)]
    pub app: String,
    /// PBX system name.
    #[serde(default)]
    pub domain: String,
    /// SIP name of the object or user logging in.
    #[serde(default)]
    pub sip: String,
    /// GUID of the object or user.
    #[serde(default)]
    pub guid: String,
    /// Display name.
    #[serde(default)]
    pub dn: String,
    /// The proof, 64 hex digits.
    #[serde(default)]
    pub digest: String,
    /// Present on user logins brokered by myApps (the App object that granted access).
    #[serde(default, rename = "pbxObj")]
    pub pbx_obj: Option<String>,
    /// The `info` object exactly as received.
    #[serde(borrow, default)]
    pub info: Option<&'a RawValue>,
}

/// The fields of `info` the connector uses.
#[derive(Debug, Default, Deserialize)]
pub struct LoginInfo {
    /// SIP name of the App object granting access.
    #[serde(default)]
    pub appobj: Option<String>,
    /// Name of the PBX the login comes from.
    #[serde(default)]
    pub pbx: Option<String>,
    /// URL of the App object the login came through (the instance base plus the app name).
    #[serde(default)]
    pub appurl: Option<String>,
    /// Present and true if the user has no app licence.
    #[serde(default)]
    pub unlicensed: Option<bool>,
    /// PBX in licence test mode.
    #[serde(default)]
    pub testmode: Option<bool>,
}

/// Removes insignificant whitespace from JSON text, leaving string contents (including their
/// escapes) byte for byte as received.
pub fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// The lowercase hex SHA-256 digest an AppLogin must carry.
#[allow(clippy::too_many_arguments)]
pub fn digest(
    app: &str,
    domain: &str,
    sip: &str,
    guid: &str,
    dn: &str,
    info: Option<&str>,
    challenge: &str,
    password: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [app, domain, sip, guid, dn] {
        h.update(part.as_bytes());
        h.update(b":");
    }
    if let Some(info) = info {
        h.update(info.as_bytes());
        h.update(b":");
    }
    h.update(challenge.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex(&h.finalize())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Compares two strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AppLogin<'_> {
    /// The compacted `info` text that the digest covers, if the message had `info`.
    pub fn info_text(&self) -> Option<String> {
        self.info.map(|r| compact_json(r.get()))
    }

    /// Whether the digest proves knowledge of `password` for `challenge`.
    pub fn verify(&self, challenge: &str, password: &str) -> bool {
        let info = self.info_text();
        let expected = digest(
            &self.app,
            &self.domain,
            &self.sip,
            &self.guid,
            &self.dn,
            info.as_deref(),
            challenge,
            password,
        );
        // Clients send lowercase; accept uppercase hex too, it is the same proof.
        constant_time_eq(
            expected.as_bytes(),
            self.digest.to_ascii_lowercase().as_bytes(),
        )
    }

    /// Whether this is the PBX's own App-object login rather than a myApps user's.
    ///
    /// `pbxObj` is not covered by the digest, so a user could drop it; `info` is covered, and
    /// only the App object logs in with `sip` equal to `info.appobj` (PBX names are unique).
    pub fn is_object_login(&self) -> bool {
        self.pbx_obj.is_none() && self.info().appobj.as_deref() == Some(self.sip.as_str())
    }

    /// The parsed `info` fields the connector uses (defaults if absent or unreadable).
    pub fn info(&self) -> LoginInfo {
        self.info
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default()
    }
}

/// A fresh challenge: 16 lowercase hex digits from 64 random bits.
pub fn new_challenge(random: u64) -> String {
    format!("{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "0123456789abcdef";

    #[test]
    fn vector_d1_no_info() {
        assert_eq!(
            digest("pbxadminapi", "", "", "", "", None, CH, "pwd"),
            "a205299ed2ef2786c311e0be1b14db343f2cadd906a6ae7b564eee34bda5e9a1"
        );
    }

    #[test]
    fn vector_d2_empty_info_counts_as_present() {
        assert_eq!(
            digest("pbxadminapi", "", "", "", "", Some("{}"), CH, "pwd"),
            "57b23fe824b9222a7ac879597cb509bcdc865a1bfeb057d9d12118cef0c3ba34"
        );
    }

    #[test]
    fn vector_d3_info_with_space_in_string() {
        assert_eq!(
            digest(
                "pbxadminapi",
                "",
                "",
                "",
                "",
                Some(r#"{"cn":"Test User"}"#),
                CH,
                "pwd"
            ),
            "96db3c3f657230c2b68194becc6d2a77f05de9f79f01fc81e9ca0fb196b10d9d"
        );
    }

    #[test]
    fn vector_d4_parsed_from_a_frame() {
        let frame = r#"{"mt":"AppLogin","app":"innovaphone-users","domain":"example.com","sip":"administrator","guid":"0123456789abcdef0123456789abcdef","dn":"Administrator User","info":{"appobj":"users","apps":[{"name":"users"},{"name":"profile"}],"appurl":"https://1.2.3.4/example.com/usersapp/innovaphone-users","unlicensed":true},"digest":"ef1b811ffaa8f9255c39c653d8fb26b4687b2d8c4d9ac91b4821bff6bae3ff44"}"#;
        let login: AppLogin = serde_json::from_str(frame).unwrap();
        assert!(login.verify(CH, "pwd"));
        assert!(!login.verify(CH, "pwd2"));
        assert!(!login.verify("0123456789abcdee", "pwd"));
        assert_eq!(login.info().unlicensed, Some(true));
    }

    #[test]
    fn d1_from_a_frame_without_info() {
        let frame = r#"{"mt":"AppLogin","app":"pbxadminapi","digest":"a205299ed2ef2786c311e0be1b14db343f2cadd906a6ae7b564eee34bda5e9a1"}"#;
        let login: AppLogin = serde_json::from_str(frame).unwrap();
        assert!(login.info.is_none());
        assert!(login.verify(CH, "pwd"));
    }

    /// Real PBX App-object login captured by go-myapps (password `go`).
    const CAPTURE_PBX: &str = r#"{"mt":"AppLogin","sip":"go-search","guid":"3954ae7854c96301c9dd009033400109","dn":"go-search",
 "digest":"130f168773ff760701b74e629eca2544c6e62d5354e92e6f821001a982eb8951","domain":"fritz.box","app":"searchapi",
 "info":{"appobj":"go-search","appdn":"go-search","appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi",
 "pbx":"pbx-main","cn":"go-search","unlicensed":true,"apps":[]}}"#;

    /// Real myApps user login captured by go-myapps (password `go`).
    const CAPTURE_USER: &str = r#"{"mt":"AppLogin","app":"searchapi","domain":"fritz.box","sip":"rico","guid":"f48b06484a8a61015853009033400109",
 "dn":"Schulte, Rico","info":{"appobj":"go-search","appdn":"go-search",
 "appurl":"http://192.168.178.29:5000/fritz.box/go/instance/searchapi","pbx":"pbx-main","cn":"rico",
 "testmode":true,"groups":[],"apps":[]},"digest":"378b82aa7508eb53866e3f4de054cdc0f7b5229e9742593e9359db3845681eb6",
 "pbxObj":"go-search"}"#;

    #[test]
    fn real_capture_pbx_object_login() {
        let login: AppLogin = serde_json::from_str(CAPTURE_PBX).unwrap();
        assert!(login.verify("16d7dbbcccb63612", "go"));
        assert!(!login.verify("16d7dbbcccb63612", "Go"));
        assert_eq!(login.info().pbx.as_deref(), Some("pbx-main"));
        assert!(login.pbx_obj.is_none());
        assert!(login.is_object_login());
    }

    #[test]
    fn real_capture_user_login() {
        let login: AppLogin = serde_json::from_str(CAPTURE_USER).unwrap();
        assert!(login.verify("7c4fc2e477f69233", "go"));
        assert!(!login.verify("7c4fc2e477f69233", "wrong"));
        assert_eq!(login.pbx_obj.as_deref(), Some("go-search"));
        assert_eq!(login.info().testmode, Some(true));
        assert!(!login.is_object_login());
        // Dropping pbxObj (not covered by the digest) does not make it a PBX login.
        let stripped = CAPTURE_USER.replace(",\n \"pbxObj\":\"go-search\"", "");
        let login: AppLogin = serde_json::from_str(&stripped).unwrap();
        assert!(login.pbx_obj.is_none());
        assert!(login.verify("7c4fc2e477f69233", "go"));
        assert!(!login.is_object_login());
    }

    #[test]
    fn reserialising_info_would_fail_so_raw_text_is_used() {
        // The capture's info keys are not sorted: a parsed-and-reserialised (sorted) map hashes
        // differently, which is exactly the bug the raw text avoids.
        let login: AppLogin = serde_json::from_str(CAPTURE_PBX).unwrap();
        let sorted: serde_json::Value = serde_json::from_str(login.info.unwrap().get()).unwrap();
        let resorted = serde_json::to_string(&sorted).unwrap();
        assert_ne!(resorted, login.info_text().unwrap());
        let wrong = digest(
            &login.app,
            &login.domain,
            &login.sip,
            &login.guid,
            &login.dn,
            Some(&resorted),
            "16d7dbbcccb63612",
            "go",
        );
        assert_ne!(wrong, login.digest);
    }

    #[test]
    fn non_ascii_and_escapes_are_hashed_as_sent() {
        let info = r#"{"cn":"J\u00fcrgen \"J\" Müller","appurl":"https://x/a/b"}"#;
        let d = digest("app", "dom", "sip", "g", "Jürgen", Some(info), "c", "p");
        let frame = format!(
            r#"{{"mt":"AppLogin","app":"app","domain":"dom","sip":"sip","guid":"g","dn":"Jürgen","info": {info} ,"digest":"{d}"}}"#
        );
        let login: AppLogin = serde_json::from_str(&frame).unwrap();
        assert!(login.verify("c", "p"));
    }

    #[test]
    fn compaction_keeps_string_whitespace() {
        assert_eq!(
            compact_json("{ \"a\" : \"x y\\\" z\" ,\n \"b\": [ 1, 2 ] }"),
            "{\"a\":\"x y\\\" z\",\"b\":[1,2]}"
        );
    }

    #[test]
    fn uppercase_digest_accepted_truncated_refused() {
        let d = digest("a", "", "", "", "", None, "c", "p");
        let up = format!(r#"{{"app":"a","digest":"{}"}}"#, d.to_uppercase());
        assert!(
            serde_json::from_str::<AppLogin>(&up)
                .unwrap()
                .verify("c", "p")
        );
        let short = format!(r#"{{"app":"a","digest":"{}"}}"#, &d[..63]);
        assert!(
            !serde_json::from_str::<AppLogin>(&short)
                .unwrap()
                .verify("c", "p")
        );
    }

    #[test]
    fn challenge_is_16_hex_chars() {
        assert_eq!(new_challenge(0), "0000000000000000");
        assert_eq!(new_challenge(u64::MAX).len(), 16);
    }
}
