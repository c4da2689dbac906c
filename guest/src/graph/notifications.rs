//! Inbound change notifications (graph.md §3.2-3.4, §3.6, §3.9, §3.10), sans-IO: the
//! validation handshake, the notification collection, decryption of rich notifications and the
//! checks of their `validationTokens`.
//!
//! Nothing here acts on a notification; callers decide after every check passed. Forged input
//! yields errors, never panics.

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::env::PublicKey;

/// App id of "Microsoft Graph Change Tracking", the caller of every webhook (graph.md §3.10).
pub const CHANGE_TRACKING_APP: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

/// Percent-decodes a query component (`+` is a space in form encoding).
pub fn url_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                // A stray `%` is kept as is: the token must come back unaltered.
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL-decoded `validationToken` of a handshake request, if the query carries one.
pub fn validation_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "validationToken").then(|| url_decode(v))
    })
}

/// One item of a notification collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// `subscriptionId`.
    pub subscription_id: String,
    /// `clientState` as received.
    pub client_state: String,
    /// `tenantId`.
    pub tenant_id: String,
    /// `lifecycleEvent` for lifecycle notifications.
    pub lifecycle_event: Option<String>,
    /// The user id the change is about (`resourceData.id`, else the last `resource` segment).
    pub resource_id: String,
    /// Encrypted content of a rich notification.
    pub encrypted: Option<Encrypted>,
}

/// `encryptedContent` (base64 fields, decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encrypted {
    /// AES-CBC ciphertext.
    pub data: Vec<u8>,
    /// HMAC-SHA256 of `data`.
    pub signature: Vec<u8>,
    /// RSA-OAEP encrypted symmetric key.
    pub data_key: Vec<u8>,
    /// Which of our certificates.
    pub certificate_id: String,
}

/// A parsed notification POST.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collection {
    /// The items.
    pub items: Vec<Item>,
    /// `validationTokens` (`None` when absent or null).
    pub validation_tokens: Option<Vec<String>>,
}

fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn b64(v: &Value, k: &str) -> Option<Vec<u8>> {
    STANDARD.decode(v.get(k)?.as_str()?.trim()).ok()
}

/// Parses a notification body; `None` for anything that is not a collection.
pub fn parse(body: &[u8]) -> Option<Collection> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let items = v.get("value")?.as_array()?;
    let mut out = Collection {
        validation_tokens: v
            .get("validationTokens")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
        ..Default::default()
    };
    for it in items {
        let resource_id = it
            .get("resourceData")
            .map(|r| text(r, "id"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let r = text(it, "resource");
                let tail = r.rsplit('/').next().unwrap_or("");
                // `users('id')/presence` style resources carry the id in quotes.
                tail.trim_matches(|c| c == '\'' || c == '(' || c == ')')
                    .to_string()
            });
        let encrypted = it.get("encryptedContent").and_then(|e| {
            Some(Encrypted {
                data: b64(e, "data")?,
                signature: b64(e, "dataSignature")?,
                data_key: b64(e, "dataKey")?,
                certificate_id: text(e, "encryptionCertificateId"),
            })
        });
        out.items.push(Item {
            subscription_id: text(it, "subscriptionId"),
            client_state: text(it, "clientState"),
            tenant_id: text(it, "tenantId"),
            lifecycle_event: it
                .get("lifecycleEvent")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource_id,
            encrypted,
        });
    }
    Some(out)
}

/// Compares secrets without an early exit on the first differing byte.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Why decrypting an item failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptError {
    /// The symmetric key is not 32 bytes.
    BadKey,
    /// HMAC mismatch: tampered.
    Signature,
    /// Padding or cipher error.
    Cipher,
}

/// Checks the HMAC and decrypts `data` with the (already RSA-decrypted) symmetric key:
/// HMAC-SHA256 over the ciphertext, AES-256-CBC with IV = key[0..16], PKCS7.
pub fn decrypt(sym_key: &[u8], enc: &Encrypted) -> Result<Vec<u8>, DecryptError> {
    if sym_key.len() != 32 {
        return Err(DecryptError::BadKey);
    }
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(sym_key).map_err(|_| DecryptError::BadKey)?;
    mac.update(&enc.data);
    mac.verify_slice(&enc.signature)
        .map_err(|_| DecryptError::Signature)?;
    cbc::Decryptor::<Aes256>::new_from_slices(sym_key, &sym_key[..16])
        .map_err(|_| DecryptError::BadKey)?
        .decrypt_padded_vec_mut::<Pkcs7>(&enc.data)
        .map_err(|_| DecryptError::Cipher)
}

/// A JWT split into what the checks need.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    /// `kid` of the header.
    pub kid: String,
    /// `alg` of the header.
    pub alg: String,
    /// The claims.
    pub claims: Value,
    /// `header.payload` as signed.
    pub signed: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWT; `None` if malformed.
pub fn parse_jwt(token: &str) -> Option<Jwt> {
    let mut parts = token.trim().split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
    Some(Jwt {
        kid: text(&header, "kid"),
        alg: text(&header, "alg"),
        claims,
        signed: format!("{h}.{p}").into_bytes(),
        signature: URL_SAFE_NO_PAD.decode(s).ok()?,
    })
}

/// Checks the claims of a validation token (graph.md §3.10). `Err` says why not.
pub fn check_claims(jwt: &Jwt, client_id: &str, now_ms: u64) -> Result<(), String> {
    if jwt.alg != "RS256" {
        return Err(format!("alg {}", jwt.alg));
    }
    let c = &jwt.claims;
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a.eq_ignore_ascii_case(client_id),
        Some(Value::Array(l)) => l.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(client_id))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err("audience is not our client id".into());
    }
    let caller = c
        .get("azp")
        .or_else(|| c.get("appid"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !caller.eq_ignore_ascii_case(CHANGE_TRACKING_APP) {
        return Err(format!("caller `{caller}` is not Graph change tracking"));
    }
    let now_s = (now_ms / 1000) as i64;
    // Five minutes of leeway for clock skew, as token libraries do.
    let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if exp + 300 < now_s {
        return Err("expired".into());
    }
    if c.get("nbf").and_then(Value::as_i64).unwrap_or(0) > now_s + 300 {
        return Err("not yet valid".into());
    }
    Ok(())
}

/// Reads a JWKS (`{"keys":[{"kid","n","e"}]}`) into `(kid, key)` pairs; odd entries skipped.
pub fn parse_jwks(body: &[u8]) -> Vec<(String, PublicKey)> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    v.get("keys")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|k| {
                    let n = URL_SAFE_NO_PAD.decode(k.get("n")?.as_str()?).ok()?;
                    let e = URL_SAFE_NO_PAD.decode(k.get("e")?.as_str()?).ok()?;
                    Some((text(k, "kid"), PublicKey::Rsa(n, e)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Base64 (standard) encoding, for certificates.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::BlockEncryptMut;
    use serde_json::json;

    #[test]
    fn validation_token_is_decoded_exactly() {
        assert_eq!(
            validation_token("validationToken=Validation%3a+Testing%20client%26x%25").as_deref(),
            Some("Validation: Testing client&x%")
        );
        assert_eq!(
            validation_token("a=1&validationToken=%zz%4"),
            Some("%zz%4".into())
        );
        assert_eq!(validation_token("tenant=x"), None);
        assert_eq!(url_decode("%E2%82%AC"), "€");
    }

    #[test]
    fn collection_parses_and_garbage_does_not() {
        let body = json!({"value":[
            {"subscriptionId":"s1","clientState":"cs","tenantId":"t","changeType":"updated",
             "resource":"communications/presences/u1","resourceData":{"id":"u1"}},
            {"subscriptionId":"s1","clientState":"cs","lifecycleEvent":"reauthorizationRequired"},
            {"subscriptionId":"s2","resource":"communications/presences/u2"}],
            "validationTokens":["a.b.c"]});
        let c = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(c.items.len(), 3);
        assert_eq!(c.items[0].resource_id, "u1");
        assert_eq!(
            c.items[1].lifecycle_event.as_deref(),
            Some("reauthorizationRequired")
        );
        assert_eq!(c.items[2].resource_id, "u2");
        assert_eq!(c.validation_tokens, Some(vec!["a.b.c".to_string()]));
        assert!(parse(b"{").is_none());
        assert!(parse(b"{\"value\":3}").is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }

    fn encrypt(key: &[u8; 32], plain: &[u8]) -> Encrypted {
        let data = cbc::Encryptor::<Aes256>::new(key.into(), key[..16].into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(&data);
        Encrypted {
            signature: mac.finalize().into_bytes().to_vec(),
            data,
            data_key: vec![],
            certificate_id: "k".into(),
        }
    }

    #[test]
    fn rich_content_decrypts_and_tampering_is_caught() {
        let key = [7u8; 32];
        let plain = br#"{"id":"u1","availability":"Busy","activity":"InAMeeting"}"#;
        let enc = encrypt(&key, plain);
        assert_eq!(decrypt(&key, &enc).unwrap(), plain.to_vec());
        let mut bad = enc.clone();
        bad.data[0] ^= 1;
        assert_eq!(decrypt(&key, &bad), Err(DecryptError::Signature));
        assert_eq!(decrypt(&key[..16], &enc), Err(DecryptError::BadKey));
        assert_eq!(decrypt(&[8u8; 32], &enc), Err(DecryptError::Signature));
    }

    fn jwt(claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg":"RS256","kid":"k1"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(b"sig"))
    }

    #[test]
    fn jwt_claims_are_checked() {
        let now = 1_750_000_000_000u64;
        let good =
            json!({"aud":"cid","azp":CHANGE_TRACKING_APP,"exp":1_750_000_600,"nbf":1_749_999_000});
        let j = parse_jwt(&jwt(good.clone())).unwrap();
        assert_eq!(j.kid, "k1");
        assert_eq!(j.signature, b"sig");
        assert_eq!(check_claims(&j, "cid", now), Ok(()));
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(check_claims(&parse_jwt(&jwt(wrong_aud)).unwrap(), "cid", now).is_err());
        let mut v1 = good.clone();
        v1.as_object_mut().unwrap().remove("azp");
        v1["appid"] = json!(CHANGE_TRACKING_APP);
        assert_eq!(
            check_claims(&parse_jwt(&jwt(v1)).unwrap(), "cid", now),
            Ok(())
        );
        let mut other_app = good.clone();
        other_app["azp"] = json!("someone");
        assert!(check_claims(&parse_jwt(&jwt(other_app)).unwrap(), "cid", now).is_err());
        let mut expired = good;
        expired["exp"] = json!(1_749_000_000);
        assert!(check_claims(&parse_jwt(&jwt(expired)).unwrap(), "cid", now).is_err());
        assert!(parse_jwt("a.b").is_none() && parse_jwt("!!.??.x").is_none());
        let jwks = json!({"keys":[{"kid":"k1","n":"AQAB","e":"AQAB"},{"kid":"bad"}]});
        assert_eq!(parse_jwks(jwks.to_string().as_bytes()).len(), 1);
        assert!(parse_jwks(b"x").is_empty());
    }
}
