//! Host-held keys: RSA key pairs (private halves sealed at rest, never given to a guest),
//! batch RSA-OAEP decryption spread over cores, RS256, self-signed certificates, and sealing of
//! guest secrets with the master key, which never lives in the data directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;

/// Environment variable that may carry the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "APPHOST_MASTER_KEY";

/// Marks the sealed format so that a future format can be told apart.
const SEAL_VERSION: u8 = 1;

/// The host's AES-256-GCM key for sealing.
pub struct MasterKey {
    key: LessSafeKey,
}

impl MasterKey {
    /// From the environment variable if set, else from `file` (created with a fresh key if absent).
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let engine = base64::engine::general_purpose::STANDARD;
        let bytes = if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            engine
                .decode(text.trim())
                .with_context(|| format!("{MASTER_KEY_ENV} is not base64"))?
        } else if let Some(file) = file {
            if file.exists() {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading master key {}", file.display()))?;
                engine
                    .decode(text.trim())
                    .with_context(|| format!("master key {} is not base64", file.display()))?
            } else {
                let mut fresh = [0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh).map_err(|_| anyhow!("no randomness"))?;
                write_private_file(file, engine.encode(fresh).as_bytes())?;
                tracing::warn!(file = %file.display(), "created a new master key; back it up");
                fresh.to_vec()
            }
        } else {
            bail!("no master key: set storage.master_key_file or {MASTER_KEY_ENV}");
        };
        Self::from_bytes(&bytes)
    }

    /// From raw key bytes (32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            bail!("the master key must be 32 bytes, got {}", bytes.len());
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| anyhow!("bad master key"))?;
        Ok(MasterKey {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts with a random nonce: `version || nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system randomness");
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("AES-GCM seal cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// Reverses [`MasterKey::seal`]; fails on tampering or a different key.
    pub fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_VERSION {
            bail!("not a sealed value");
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| anyhow!("bad nonce"))?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| anyhow!("sealed value altered or sealed under another key"))?;
        Ok(plain.to_vec())
    }
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Generates an RSA key pair and returns its PKCS#8 DER.
pub fn generate_rsa(bits: u32) -> Result<Vec<u8>> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => bail!("unsupported RSA size {other}: use 2048, 3072 or 4096"),
    };
    let pair = KeyPair::generate(size).map_err(|_| anyhow!("RSA key generation failed"))?;
    let der = pair.as_der().map_err(|_| anyhow!("PKCS#8 export failed"))?;
    Ok(der.as_ref().to_vec())
}

/// A parsed private key, ready for every operation.
pub struct RsaPrivateKey {
    pkcs8: Vec<u8>,
    decrypting: OaepPrivateDecryptingKey,
    signing: KeyPair,
}

impl RsaPrivateKey {
    /// Parses PKCS#8 DER.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let decrypting =
            PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| anyhow!("bad private key: {e}"))?;
        Ok(RsaPrivateKey {
            pkcs8: pkcs8.to_vec(),
            decrypting: OaepPrivateDecryptingKey::new(decrypting)
                .map_err(|_| anyhow!("key unusable for OAEP"))?,
            signing: KeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow!("bad private key: {e}"))?,
        })
    }

    /// SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Result<Vec<u8>> {
        let der = self
            .signing
            .public_key()
            .as_der()
            .map_err(|_| anyhow!("public key export failed"))?;
        Ok(der.as_ref().to_vec())
    }

    /// Decrypts one ciphertext.
    pub fn decrypt(&self, sha256: bool, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let alg = if sha256 {
            &OAEP_SHA256_MGF1SHA256
        } else {
            &OAEP_SHA1_MGF1SHA1
        };
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        let plain = self
            .decrypting
            .decrypt(alg, ciphertext, &mut out, None)
            .map_err(|_| anyhow!("RSA-OAEP decryption failed"))?;
        Ok(plain.to_vec())
    }

    /// Decrypts a batch on all cores; results keep input order. The calling thread works too,
    /// and every thread takes the next undone item rather than a fixed share, so a core that is
    /// busy with something else only slows its own items, not a whole half of the batch.
    pub fn decrypt_batch(&self, sha256: bool, ciphertexts: &[Vec<u8>]) -> Vec<Result<Vec<u8>>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Below a few items the thread start-up costs more than it saves.
        if threads == 1 || ciphertexts.len() < 4 {
            return ciphertexts
                .iter()
                .map(|c| self.decrypt(sha256, c))
                .collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = ciphertexts.get(i) else {
                    return done;
                };
                done.push((i, self.decrypt(sha256, c)));
            }
        };
        let mut results: Vec<Option<Result<Vec<u8>>>> = Vec::new();
        results.resize_with(ciphertexts.len(), || None);
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads.min(ciphertexts.len()))
                .map(|_| scope.spawn(work))
                .collect();
            let mine = work();
            let theirs = helpers
                .into_iter()
                .flat_map(|h| h.join().expect("decrypt worker panicked"));
            for (i, r) in mine.into_iter().chain(theirs) {
                results[i] = Some(r);
            }
        });
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("not decrypted"))))
            .collect()
    }

    /// RSASSA-PKCS1-v1_5 SHA-256.
    pub fn sign_rs256(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.signing
            .sign(&signature::RSA_PKCS1_SHA256, &rng, data, &mut sig)
            .map_err(|_| anyhow!("signing failed"))?;
        Ok(sig)
    }

    /// A self-signed X.509 certificate (DER), valid from yesterday for `days` days.
    pub fn self_signed_certificate(&self, common_name: &str, days: u32) -> Result<Vec<u8>> {
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(i64::from(days));
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| anyhow!("no randomness"))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        Ok(params.self_signed(&key)?.der().to_vec())
    }
}

/// A public key handed in by a guest.
pub enum PublicKeyInput<'a> {
    /// Modulus and exponent, big-endian.
    Rsa(&'a [u8], &'a [u8]),
    /// SubjectPublicKeyInfo (or PKCS#1) DER.
    Der(&'a [u8]),
}

/// Verifies an RS256 signature; any malformed input is simply "not valid".
pub fn verify_rs256(key: PublicKeyInput<'_>, data: &[u8], sig: &[u8]) -> bool {
    match key {
        PublicKeyInput::Rsa(n, e) => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, data, sig)
            .is_ok(),
        PublicKeyInput::Der(der) => {
            UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                .verify(data, sig)
                .is_ok()
        }
    }
}

/// Parsed private keys, keyed by their sealed record so that a replaced key is never served
/// from the cache (the record changes with every generation).
#[derive(Default)]
pub struct KeyCache {
    parsed: Mutex<HashMap<Vec<u8>, Arc<RsaPrivateKey>>>,
}

impl KeyCache {
    /// Returns the parsed key for a sealed PKCS#8 record, unsealing and parsing it once.
    pub fn get(&self, master: &MasterKey, sealed: &[u8]) -> Result<Arc<RsaPrivateKey>> {
        if let Some(k) = self.parsed.lock().expect("key cache").get(sealed) {
            return Ok(k.clone());
        }
        let pkcs8 = master.unseal(sealed)?;
        let key = Arc::new(RsaPrivateKey::from_pkcs8(&pkcs8)?);
        let mut map = self.parsed.lock().expect("key cache");
        // Bounded: a guest that rotates keys endlessly must not grow host memory.
        if map.len() >= 32 {
            map.clear();
        }
        map.insert(sealed.to_vec(), key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_decryption_keeps_order_and_reports_bad_items() {
        let pkcs8 = generate_rsa(2048).unwrap();
        let key = RsaPrivateKey::from_pkcs8(&pkcs8).unwrap();
        let public =
            aws_lc_rs::rsa::PublicEncryptingKey::from_der(&key.public_key_der().unwrap()).unwrap();
        let public = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public).unwrap();
        let mut ciphertexts: Vec<Vec<u8>> = (0..37u8)
            .map(|i| {
                let mut out = vec![0u8; public.ciphertext_size()];
                public
                    .encrypt(&OAEP_SHA1_MGF1SHA1, &[i; 32], &mut out, None)
                    .unwrap()
                    .to_vec()
            })
            .collect();
        ciphertexts[5] = vec![1u8; 256];
        let plain = key.decrypt_batch(false, &ciphertexts);
        assert_eq!(plain.len(), 37);
        for (i, p) in plain.iter().enumerate() {
            match i {
                5 => assert!(p.is_err(), "a forged key must fail"),
                _ => assert_eq!(p.as_ref().unwrap(), &vec![i as u8; 32]),
            }
        }
    }

    #[test]
    fn seal_roundtrip_and_tamper() {
        let key = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal(b"secret");
        assert_eq!(key.unseal(&sealed).unwrap(), b"secret");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(key.unseal(&bad).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.unseal(&sealed).is_err());
    }
}
