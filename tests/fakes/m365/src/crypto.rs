//! Rich-notification encryption exactly as Graph does it (graph.md 3.9) and the rotating signing
//! key set for `validationTokens` (3.10).

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::core::Fake;

/// One DER TLV: (tag, content, whole element, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    Some((tag, &b[hdr..end], &b[..end], &b[end..]))
}

/// Extract the SubjectPublicKeyInfo of an X.509 certificate (DER).
pub fn spki_from_cert(der: &[u8]) -> Option<&[u8]> {
    let (t, cert, _, _) = tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let (t, tbs, _, _) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest)?.3;
    }
    // serial, signature, issuer, validity, subject
    for _ in 0..5 {
        rest = tlv(rest)?.3;
    }
    let (t, _, whole, _) = tlv(rest)?;
    (t == 0x30).then_some(whole)
}

/// RSA public key of a base64 certificate; checks RSA 2048-4096 as Graph does.
pub fn cert_public_key(der: &[u8]) -> Result<RsaPublicKey, String> {
    let spki = spki_from_cert(der)
        .ok_or("The encryption certificate is not a valid X.509 certificate.")?;
    let k = RsaPublicKey::from_public_key_der(spki)
        .map_err(|_| "The encryption certificate must carry an RSA public key.".to_string())?;
    let bits = k.size() * 8;
    if !(2048..=4096).contains(&bits) {
        return Err(format!(
            "The encryption certificate key size {bits} is not supported (RSA 2048-4096)."
        ));
    }
    Ok(k)
}

/// SHA-1 thumbprint of a DER certificate, upper-case hex.
pub fn thumbprint(der: &[u8]) -> String {
    Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Encrypt `plaintext` for a rich notification: random 32-byte key, RSA-OAEP(SHA-1) `dataKey`,
/// AES-256-CBC/PKCS7 with IV = key[0..16] `data`, HMAC-SHA256(key, ciphertext) `dataSignature`.
pub fn encrypt_content(
    cert_der: &[u8],
    cert_id: &str,
    plaintext: &[u8],
    rng: &mut StdRng,
) -> Result<Value, String> {
    let pk = cert_public_key(cert_der)?;
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let data_key = pk
        .encrypt(rng, Oaep::new::<Sha1>(), &key)
        .map_err(|e| e.to_string())?;
    let ct = cbc::Encryptor::<Aes256>::new((&key).into(), key[..16].into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(&ct);
    let sig = mac.finalize().into_bytes();
    Ok(
        json!({"data": STANDARD.encode(&ct), "dataSignature": STANDARD.encode(sig), "dataKey": STANDARD.encode(data_key),
              "encryptionCertificateId": cert_id, "encryptionCertificateThumbprint": thumbprint(cert_der)}),
    )
}

struct SignKey {
    kid: String,
    key: RsaPrivateKey,
}

/// Rotating RSA signing keys published as a JWKS. Keys are generated lazily (RSA key generation
/// is the slowest thing the fake does) and deterministically from the seed.
pub struct KeySet {
    seed: u64,
    keys: Vec<SignKey>,
    last_rotation: Option<i64>,
    generated: u64,
}

impl KeySet {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            keys: vec![],
            last_rotation: None,
            generated: 0,
        }
    }

    fn gen_key(&mut self) -> SignKey {
        self.generated += 1;
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(self.generated));
        let key = RsaPrivateKey::new(&mut rng, 2048).expect("rsa keygen");
        let n = key.n().to_bytes_be();
        let kid = URL_SAFE_NO_PAD.encode(&Sha1::digest(&n)[..]);
        SignKey { kid, key }
    }

    fn ensure(&mut self, now: i64) {
        if self.keys.is_empty() {
            let k = self.gen_key();
            self.keys.push(k);
            self.last_rotation = Some(now);
        }
    }

    /// Start signing with a new key; the previous key stays published (clients with a cached set
    /// see an unknown `kid` and must refetch), older ones are removed.
    pub fn rotate(&mut self, now: i64) {
        self.ensure(now);
        let k = self.gen_key();
        self.keys.push(k);
        while self.keys.len() > 2 {
            self.keys.remove(0);
        }
        self.last_rotation = Some(now);
    }

    pub(crate) fn maybe_rotate(&mut self, now: i64, period: i64) {
        if let Some(t) = self.last_rotation
            && period > 0
            && now - t >= period
        {
            self.rotate(now);
        }
    }

    /// Current signing key id.
    pub fn current_kid(&mut self, now: i64) -> String {
        self.ensure(now);
        self.keys.last().map(|k| k.kid.clone()).unwrap_or_default()
    }

    /// JWKS document.
    pub fn jwks(&mut self, now: i64) -> Value {
        self.ensure(now);
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({"kty": "RSA", "use": "sig", "kid": k.kid, "x5t": k.kid, "alg": "RS256",
                       "n": URL_SAFE_NO_PAD.encode(k.key.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(k.key.e().to_bytes_be()),
                       "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"})
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Sign claims as an RS256 JWT with the current key.
    pub fn sign_jwt(&mut self, claims: &Value, now: i64) -> String {
        self.ensure(now);
        let k = self.keys.last().expect("key");
        let head = json!({"typ": "JWT", "alg": "RS256", "kid": k.kid, "x5t": k.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&head).unwrap_or_default()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let sk = SigningKey::<Sha256>::new(k.key.clone());
        let sig = sk.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

impl Fake {
    /// The JWKS served at `/common/discovery/v2.0/keys`.
    pub fn jwks(&mut self) -> Value {
        let now = self.now();
        self.keys.jwks(now)
    }

    /// Rotate the validation-token signing key now.
    pub fn rotate_signing_key(&mut self) {
        let now = self.now();
        self.keys.rotate(now);
    }

    pub(crate) fn openid_configuration(&self, tenant: &str) -> Value {
        let login = self
            .cfg
            .login_base
            .clone()
            .unwrap_or_else(|| self.cfg.cloud.login_host().to_string());
        json!({"issuer": format!("{login}/{{tenantid}}/v2.0"), "jwks_uri": format!("{login}/{tenant}/discovery/v2.0/keys"),
               "token_endpoint": format!("{login}/{tenant}/oauth2/v2.0/token"),
               "device_authorization_endpoint": format!("{login}/{tenant}/oauth2/v2.0/devicecode"),
               "id_token_signing_alg_values_supported": ["RS256"], "tenant_region_scope": "EU"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_rejects_garbage() {
        assert!(spki_from_cert(b"not a cert").is_none());
        assert!(cert_public_key(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }
}
