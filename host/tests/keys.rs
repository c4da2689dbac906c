//! Keys held by the host: checked against an independent RSA implementation (RustCrypto `rsa`),
//! and sealed secrets checked against the raw bytes of the data directory.

mod common;

use common::*;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

async fn raw_get(url: &str) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_oaep_decryption_matches_an_independent_implementation() {
    let h = TestHost::start().await;
    assert_eq!(
        get(&h.t("/keys/generate?name=wrap&bits=2048")).await,
        (200, "generated".into())
    );
    assert_eq!(get(&h.t("/keys/exists?name=wrap")).await.1, "true");
    let (status, der) = raw_get(&h.t("/keys/public?name=wrap")).await;
    assert_eq!(status, 200);
    let public = RsaPublicKey::from_public_key_der(&der).expect("SPKI DER");
    let mut rng = rand::thread_rng();

    for (hash, label) in [("sha1", 0), ("sha256", 1)] {
        let secrets: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i ^ label; 32]).collect();
        let mut lines: Vec<String> = secrets
            .iter()
            .map(|s| {
                let padding = if hash == "sha1" {
                    Oaep::new::<sha1::Sha1>()
                } else {
                    Oaep::new::<sha2::Sha256>()
                };
                hex(&public.encrypt(&mut rng, padding, s).unwrap())
            })
            .collect();
        // One damaged ciphertext fails alone; the others still decrypt.
        lines.push(hex(&[0u8; 256]));
        let (status, body) = post(
            &h.t(&format!("/keys/decrypt?name=wrap&hash={hash}")),
            lines.join("\n"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let got: Vec<&str> = body.lines().collect();
        assert_eq!(got.len(), secrets.len() + 1);
        for (line, secret) in got.iter().zip(&secrets) {
            assert_eq!(unhex(line), *secret, "{hash}");
        }
        assert_eq!(*got.last().unwrap(), "error");
    }

    let (_, text) = post(&h.t("/keys/sign-verify?name=wrap"), "header.payload").await;
    assert!(text.starts_with("valid=true tampered=false sig="), "{text}");
    // The RS256 signature verifies with the independent implementation too.
    let sig = unhex(text.rsplit('=').next().unwrap());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(b"header.payload");
    public
        .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig)
        .expect("signature verifies");
    let (status, cert) = raw_get(&h.t("/keys/cert?name=wrap&cn=connector")).await;
    assert_eq!(status, 200);
    assert_eq!(cert[0], 0x30, "DER certificate");
    assert!(
        cert.windows(9).any(|w| w == b"connector"),
        "common name in the certificate"
    );
    assert_eq!(get(&h.t("/keys/public?name=missing")).await.0, 404);
    assert_eq!(get(&h.t("/keys/delete?name=wrap")).await.0, 200);
    assert_eq!(get(&h.t("/keys/exists?name=wrap")).await.1, "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_cannot_be_read_from_the_data_directory() {
    let h = TestHost::start().await;
    let secret = "correct-horse-battery-staple-0123456789";
    assert_eq!(post(&h.t("/keys/seal?name=token"), secret).await.0, 200);
    assert_eq!(
        get(&h.t("/keys/unseal?name=token")).await,
        (200, secret.into())
    );
    assert_eq!(get(&h.t("/keys/unseal-tampered")).await.1, "true");
    // Also store the plaintext under a known key once, to prove the grep would find it.
    assert_eq!(
        post(&h.t("/kv/set?k=plain"), "visible-marker-987654321")
            .await
            .0,
        200
    );

    let data = h.dir.join("data");
    let mut found_marker = false;
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "plaintext secret found in {}",
                path.display()
            );
            found_marker |= bytes.windows(24).any(|w| w == b"visible-marker-987654321");
        }
    }
    assert!(found_marker, "the scan sees what the store wrote");
    assert!(!h.dir.join("secrets/master.key").starts_with(&data));
    assert!(h.dir.join("secrets/master.key").exists());
}
