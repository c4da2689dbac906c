//! `keys`: private keys stay in the host, sealed at rest in the instance's tree (written through
//! the transaction, so a trapped event leaves no key behind).

use std::sync::Arc;

use crate::bindings::connector::host::keys::{Host, KeyError, OaepHash, PublicKey};
use crate::guest_state::GuestState;
use crate::instance::RSA_KEY_PREFIX;
use crate::keys::{PublicKeyInput, RsaPrivateKey, generate_rsa, verify_rs256};

fn record_key(name: &str) -> Vec<u8> {
    [RSA_KEY_PREFIX, name.as_bytes()].concat()
}

fn failed(e: anyhow::Error) -> KeyError {
    KeyError::Failed(format!("{e:#}"))
}

impl GuestState {
    fn private_key(
        &mut self,
        name: &str,
    ) -> wasmtime::Result<Result<Arc<RsaPrivateKey>, KeyError>> {
        let Some(sealed) = self
            .tx
            .get(&*self.ctx.kv, &record_key(name))
            .map_err(wasmtime::Error::from_anyhow)?
        else {
            return Ok(Err(KeyError::NotFound));
        };
        Ok(self
            .ctx
            .key_cache
            .get(&self.ctx.master, &sealed)
            .map_err(failed))
    }
}

impl Host for GuestState {
    fn generate_rsa(&mut self, name: String, bits: u32) -> wasmtime::Result<Result<(), KeyError>> {
        let pkcs8 = match generate_rsa(bits) {
            Ok(k) => k,
            Err(e) => return Ok(Err(KeyError::Invalid(format!("{e:#}")))),
        };
        let sealed = self.ctx.master.seal(&pkcs8);
        self.tx.put(record_key(&name), Some(sealed));
        Ok(Ok(()))
    }

    fn exists(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self
            .tx
            .get(&*self.ctx.kv, &record_key(&name))
            .map_err(wasmtime::Error::from_anyhow)?
            .is_some())
    }

    fn delete(&mut self, name: String) -> wasmtime::Result<()> {
        self.tx.put(record_key(&name), None);
        Ok(())
    }

    fn public_key_der(&mut self, name: String) -> wasmtime::Result<Result<Vec<u8>, KeyError>> {
        Ok(self
            .private_key(&name)?
            .and_then(|k| k.public_key_der().map_err(failed)))
    }

    fn self_signed_certificate(
        &mut self,
        name: String,
        common_name: String,
        days: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, KeyError>> {
        Ok(self.private_key(&name)?.and_then(|k| {
            k.self_signed_certificate(&common_name, days)
                .map_err(|e| KeyError::Invalid(format!("{e:#}")))
        }))
    }

    fn rsa_oaep_decrypt(
        &mut self,
        name: String,
        hash: OaepHash,
        ciphertexts: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<Result<Vec<u8>, KeyError>>, KeyError>> {
        let key = match self.private_key(&name)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let sha256 = matches!(hash, OaepHash::Sha256);
        Ok(Ok(key
            .decrypt_batch(sha256, &ciphertexts)
            .into_iter()
            .map(|r| r.map_err(|e| KeyError::Invalid(format!("{e:#}"))))
            .collect()))
    }

    fn sign_rs256(
        &mut self,
        name: String,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, KeyError>> {
        Ok(self
            .private_key(&name)?
            .and_then(|k| k.sign_rs256(&data).map_err(failed)))
    }

    fn verify_rs256(
        &mut self,
        key: PublicKey,
        data: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        let input = match &key {
            PublicKey::Rsa((n, e)) => PublicKeyInput::Rsa(n, e),
            PublicKey::SpkiDer(der) => PublicKeyInput::Der(der),
        };
        Ok(verify_rs256(input, &data, &signature))
    }

    fn seal(&mut self, plaintext: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.ctx.master.seal(&plaintext))
    }

    fn unseal(&mut self, sealed: Vec<u8>) -> wasmtime::Result<Result<Vec<u8>, KeyError>> {
        Ok(self
            .ctx
            .master
            .unseal(&sealed)
            .map_err(|e| KeyError::Invalid(format!("{e:#}"))))
    }
}
