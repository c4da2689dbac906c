//! The `keys` interface in memory. Key pairs are generated from the run's seed, so a run replays
//! identically; they live beside the KV store and survive a guest crash or swap.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand08::SeedableRng;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::bindings::connector::host::keys::{KeyError, OaepHash, PublicKey};

/// The simulator's key ring plus the sealing key.
pub struct KeyRing {
    rng: ChaCha20Rng,
    pairs: BTreeMap<String, RsaPrivateKey>,
    seal_key: [u8; 32],
}

impl KeyRing {
    /// A key ring whose generated keys depend only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut seal_key = [0u8; 32];
        seal_key[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0x6b65_7973),
            pairs: BTreeMap::new(),
            seal_key,
        }
    }

    fn pair(&self, name: &str) -> Result<&RsaPrivateKey, KeyError> {
        self.pairs.get(name).ok_or(KeyError::NotFound)
    }

    /// `keys.generate-rsa`.
    pub fn generate(&mut self, name: String, bits: u32) -> Result<(), KeyError> {
        if !(2048..=4096).contains(&bits) {
            return Err(KeyError::Invalid(format!("{bits} bits: use 2048..4096")));
        }
        let key = RsaPrivateKey::new(&mut self.rng, bits as usize)
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        self.pairs.insert(name, key);
        Ok(())
    }

    /// `keys.exists`.
    pub fn exists(&self, name: &str) -> bool {
        self.pairs.contains_key(name)
    }

    /// `keys.delete`.
    pub fn delete(&mut self, name: &str) {
        self.pairs.remove(name);
    }

    /// `keys.public-key-der`.
    pub fn public_key_der(&self, name: &str) -> Result<Vec<u8>, KeyError> {
        let der = RsaPublicKey::from(self.pair(name)?)
            .to_public_key_der()
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        Ok(der.as_bytes().to_vec())
    }

    /// `keys.self-signed-certificate`: signed with the pair itself (RSA PKCS#1 v1.5 is
    /// deterministic, so the certificate is too, apart from its validity dates).
    pub fn certificate(&self, name: &str, cn: &str, days: u32) -> Result<Vec<u8>, KeyError> {
        let pkcs8 = self
            .pair(name)?
            .to_pkcs8_der()
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        let der = rustls_pki_der(pkcs8.as_bytes());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![cn.to_string()])
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        let now = rcgen::date_time_ymd(2026, 1, 1);
        params.not_before = now;
        params.not_after = now
            + std::time::Duration::from_secs(u64::from(days.max(1)) * 86_400 + 365 * 86_400 * 2);
        let cert = params
            .self_signed(&kp)
            .map_err(|e| KeyError::Failed(e.to_string()))?;
        Ok(cert.der().to_vec())
    }

    /// `keys.rsa-oaep-decrypt`.
    pub fn decrypt(
        &self,
        name: &str,
        hash: OaepHash,
        ciphertexts: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        let key = self.pair(name)?;
        Ok(ciphertexts
            .iter()
            .map(|c| {
                let padding = match hash {
                    OaepHash::Sha1 => Oaep::new::<sha1::Sha1>(),
                    OaepHash::Sha256 => Oaep::new::<Sha256>(),
                };
                key.decrypt(padding, c)
                    .map_err(|e| KeyError::Invalid(e.to_string()))
            })
            .collect())
    }

    /// `keys.sign-rs256`.
    pub fn sign(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signer = SigningKey::<Sha256>::new(self.pair(name)?.clone());
        Ok(signer.sign(data).to_vec())
    }

    /// `keys.verify-rs256`.
    pub fn verify(key: PublicKey, data: &[u8], signature: &[u8]) -> bool {
        let public = match key {
            PublicKey::Rsa((n, e)) => {
                RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).ok()
            }
            PublicKey::SpkiDer(der) => {
                use rsa::pkcs8::DecodePublicKey;
                RsaPublicKey::from_public_key_der(&der).ok()
            }
        };
        let (Some(public), Ok(sig)) = (public, Signature::try_from(signature)) else {
            return false;
        };
        VerifyingKey::<Sha256>::new(public)
            .verify(data, &sig)
            .is_ok()
    }

    /// `keys.seal`: a keystream from SHA-256 in counter mode plus an HMAC tag. Deterministic
    /// for a given plaintext, which a simulator wants and a real host must not do.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.keystream_xor(plaintext);
        out.extend_from_slice(&self.tag(&out));
        out
    }

    /// `keys.unseal`.
    pub fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < 32 {
            return Err(KeyError::Invalid("sealed data too short".into()));
        }
        let (body, tag) = sealed.split_at(sealed.len() - 32);
        if self.tag(body) != tag {
            return Err(KeyError::Invalid(
                "sealed data was altered or sealed elsewhere".into(),
            ));
        }
        Ok(self.keystream_xor(body))
    }

    fn keystream_xor(&self, data: &[u8]) -> Vec<u8> {
        data.chunks(32)
            .enumerate()
            .flat_map(|(i, chunk)| {
                let block = Sha256::new()
                    .chain_update(self.seal_key)
                    .chain_update((i as u64).to_le_bytes())
                    .finalize();
                chunk
                    .iter()
                    .zip(block)
                    .map(|(a, b)| a ^ b)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn tag(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.seal_key).expect("any key length");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

fn rustls_pki_der(bytes: &[u8]) -> rustls_pki_types::PrivatePkcs8KeyDer<'static> {
    rustls_pki_types::PrivatePkcs8KeyDer::from(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn oaep_sha1_round_trip_and_rs256_verify() {
        let mut ring = KeyRing::new(7);
        ring.generate("k".into(), 2048).unwrap();
        let public = RsaPublicKey::from(ring.pair("k").unwrap());
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let c = public
            .encrypt(
                &mut rng,
                Oaep::new::<sha1::Sha1>(),
                b"thirty-two bytes of key material",
            )
            .unwrap();
        let out = ring
            .decrypt("k", OaepHash::Sha1, vec![c, vec![1, 2, 3]])
            .unwrap();
        assert_eq!(
            out[0].as_deref().unwrap(),
            b"thirty-two bytes of key material"
        );
        assert!(out[1].is_err());
        let sig = ring.sign("k", b"data").unwrap();
        let jwk = PublicKey::Rsa((public.n().to_bytes_be(), public.e().to_bytes_be()));
        assert!(KeyRing::verify(jwk, b"data", &sig));
        let jwk = PublicKey::Rsa((public.n().to_bytes_be(), public.e().to_bytes_be()));
        assert!(!KeyRing::verify(jwk, b"other", &sig));
        assert!(!ring.certificate("k", "sim", 30).unwrap().is_empty());
    }

    #[test]
    fn sealed_data_is_not_plaintext_and_tamper_fails() {
        let ring = KeyRing::new(1);
        let sealed = ring.seal(b"client secret value");
        assert!(!sealed.windows(6).any(|w| w == b"client"));
        assert_eq!(ring.unseal(&sealed).unwrap(), b"client secret value");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(ring.unseal(&bad).is_err());
        assert!(KeyRing::new(2).unseal(&sealed).is_err());
    }
}
