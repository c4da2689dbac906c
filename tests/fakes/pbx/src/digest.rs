//! AppWebsocket cryptography (spec §2.3, §2.5): login digest, session key, RC4 `encrypt`/`decrypt`
//! and `hash`. Pure functions so the test vectors can pin them.

use sha2::{Digest, Sha256};

/// Lowercase hex of SHA-256 over `data`.
pub fn sha256_hex(data: &str) -> String {
    hex(&Sha256::digest(data.as_bytes()))
}

/// Lowercase hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Decodes lowercase/uppercase hex; `None` on odd length or bad digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The fields that enter an AppLogin digest. `info` is the JSON text *as sent* (never
/// re-serialized: key order matters), `None` when the message carries no `info` at all.
#[derive(Debug, Clone, Default)]
pub struct DigestInput<'a> {
    /// `app` (last URL segment / HTML name).
    pub app: &'a str,
    /// `domain` (PBX system name).
    pub domain: &'a str,
    /// `sip` of the logging-in object or user.
    pub sip: &'a str,
    /// `guid` of the logging-in object or user.
    pub guid: &'a str,
    /// `dn` of the logging-in object or user.
    pub dn: &'a str,
    /// Compact `info` JSON text as sent, if present.
    pub info: Option<&'a str>,
}

/// The string that is hashed: `app:domain:sip:guid:dn[:info]:challenge:password`.
/// Without `info` both the field and its colon are omitted (an empty `{}` counts as present).
pub fn digest_string(i: &DigestInput<'_>, challenge: &str, password: &str) -> String {
    let mut s = format!("{}:{}:{}:{}:{}:", i.app, i.domain, i.sip, i.guid, i.dn);
    if let Some(info) = i.info {
        s.push_str(info);
        s.push(':');
    }
    s.push_str(challenge);
    s.push(':');
    s.push_str(password);
    s
}

/// `lowercase_hex(SHA256(digest_string))`.
pub fn login_digest(i: &DigestInput<'_>, challenge: &str, password: &str) -> String {
    sha256_hex(&digest_string(i, challenge, password))
}

/// Session key: `hex(SHA256("innovaphoneAppSessionKey:" + challenge + ":" + password))`.
pub fn session_key(challenge: &str, password: &str) -> String {
    sha256_hex(&format!("innovaphoneAppSessionKey:{challenge}:{password}"))
}

/// Plain RC4 keystream applied to `data` (encryption and decryption are the same operation).
pub fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s: [u8; 256] = std::array::from_fn(|i| i as u8);
    let mut j: u8 = 0;
    for i in 0..256 {
        j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
        s.swap(i, j as usize);
    }
    let (mut i, mut j) = (0u8, 0u8);
    data.iter()
        .map(|b| {
            i = i.wrapping_add(1);
            j = j.wrapping_add(s[i as usize]);
            s.swap(i as usize, j as usize);
            b ^ s[s[i as usize].wrapping_add(s[j as usize]) as usize]
        })
        .collect()
}

/// `encrypt(seed, data)` = hex(RC4(key = seed ":" sessionKey, data)).
pub fn encrypt(seed: &str, session_key: &str, data: &str) -> String {
    hex(&rc4(
        format!("{seed}:{session_key}").as_bytes(),
        data.as_bytes(),
    ))
}

/// Inverse of [`encrypt`]; `None` if the text is not hex or not UTF-8.
pub fn decrypt(seed: &str, session_key: &str, hex_data: &str) -> Option<String> {
    let bytes = unhex(hex_data)?;
    String::from_utf8(rc4(format!("{seed}:{session_key}").as_bytes(), &bytes)).ok()
}

/// `hash(seed, data)` = hex(SHA256(seed ":" sessionKey ":" data)).
pub fn hash(seed: &str, session_key: &str, data: &str) -> String {
    sha256_hex(&format!("{seed}:{session_key}:{data}"))
}

/// Builds a compact JSON object text with keys in exactly the given order. The PBX sends `info`
/// in its own key order and the digest is computed over that text, so we never go through a map.
/// `serde_json` output matches `JSON.stringify` here: no escaping of `/` or non-ASCII.
pub fn ordered_object(pairs: &[(&str, serde_json::Value)]) -> String {
    let raw: Vec<(&str, String)> = pairs
        .iter()
        .map(|(k, v)| (*k, serde_json::to_string(v).expect("value")))
        .collect();
    ordered_object_raw(&raw)
}

/// Like [`ordered_object`] but with values given as JSON texts (for nested ordered objects).
pub fn ordered_object_raw(pairs: &[(&str, String)]) -> String {
    let mut s = String::from("{");
    for (n, (k, v)) in pairs.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        s.push_str(&serde_json::to_string(k).expect("string"));
        s.push(':');
        s.push_str(v);
    }
    s.push('}');
    s
}

/// Extracts the raw text of the top-level `"info"` value from a compact JSON message, exactly as
/// sent (what a verifier must hash). Returns `None` if there is no top-level `info` key.
pub fn raw_field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    // Walk the top-level object with a tiny scanner that tracks strings and nesting depth.
    let b = msg.as_bytes();
    let mut i = msg.find('{')? + 1;
    loop {
        i = skip_ws(b, i);
        if i >= b.len() || b[i] == b'}' {
            return None;
        }
        let kstart = i;
        let kend = skip_value(b, i)?;
        let k: String = serde_json::from_str(&msg[kstart..kend]).ok()?;
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let vend = skip_value(b, i)?;
        if k == key {
            return Some(&msg[i..vend]);
        }
        i = skip_ws(b, vend);
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let start = i;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return Some(i);
                    }
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                b',' if depth == 0 => return Some(i),
                _ => {}
            }
        }
        i += 1;
    }
    if i > start { Some(i) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "0123456789abcdef";

    fn pbxadmin(info: Option<&str>) -> String {
        let i = DigestInput {
            app: "pbxadminapi",
            info,
            ..Default::default()
        };
        login_digest(&i, CH, "pwd")
    }

    #[test]
    fn digest_vector_d1_without_info() {
        assert_eq!(
            digest_string(
                &DigestInput {
                    app: "pbxadminapi",
                    ..Default::default()
                },
                CH,
                "pwd"
            ),
            "pbxadminapi:::::0123456789abcdef:pwd"
        );
        assert_eq!(
            pbxadmin(None),
            "a205299ed2ef2786c311e0be1b14db343f2cadd906a6ae7b564eee34bda5e9a1"
        );
    }

    #[test]
    fn digest_vector_d2_empty_info_counts() {
        assert_eq!(
            pbxadmin(Some(&ordered_object(&[]))),
            "57b23fe824b9222a7ac879597cb509bcdc865a1bfeb057d9d12118cef0c3ba34"
        );
    }

    #[test]
    fn digest_vector_d3_info_cn() {
        let info = ordered_object(&[("cn", "Test User".into())]);
        assert_eq!(info, r#"{"cn":"Test User"}"#);
        assert_eq!(
            pbxadmin(Some(&info)),
            "96db3c3f657230c2b68194becc6d2a77f05de9f79f01fc81e9ca0fb196b10d9d"
        );
    }

    #[test]
    fn digest_vector_d4_user_login() {
        let info = ordered_object(&[
            ("appobj", "users".into()),
            (
                "apps",
                serde_json::json!([{"name":"users"},{"name":"profile"}]),
            ),
            (
                "appurl",
                "https://1.2.3.4/example.com/usersapp/innovaphone-users".into(),
            ),
            ("unlicensed", true.into()),
        ]);
        let i = DigestInput {
            app: "innovaphone-users",
            domain: "example.com",
            sip: "administrator",
            guid: "0123456789abcdef0123456789abcdef",
            dn: "Administrator User",
            info: Some(&info),
        };
        assert_eq!(
            login_digest(&i, CH, "pwd"),
            "ef1b811ffaa8f9255c39c653d8fb26b4687b2d8c4d9ac91b4821bff6bae3ff44"
        );
    }

    #[test]
    fn session_key_and_rc4_vectors() {
        let k = session_key(CH, "pwd");
        assert_eq!(
            k,
            "d58c77eae0c1c1f37a9f545e207643c926ad9ea4932016a83a4a01029de37760"
        );
        assert_eq!(encrypt("seed1", &k, "secret"), "8c0a8a363ecb");
        assert_eq!(decrypt("seed1", &k, "8c0a8a363ecb").unwrap(), "secret");
        assert_eq!(
            hash("seed1", &k, "data"),
            "7b95ce920b030209be11cd7ef5e7bbe892e49dbb751963222579e37de6aae9a1"
        );
    }

    #[test]
    fn raw_field_keeps_text_as_sent() {
        let m = r#"{"mt":"AppLogin", "info" : {"b":1,"a":"x/ü","c":[1,{"d":"}"}]},"digest":"z"}"#;
        assert_eq!(
            raw_field(m, "info"),
            Some(r#"{"b":1,"a":"x/ü","c":[1,{"d":"}"}]}"#)
        );
        assert_eq!(raw_field(m, "digest"), Some(r#""z""#));
        assert_eq!(raw_field(m, "nope"), None);
    }
}
