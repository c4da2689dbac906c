//! The physical bound of Teams -> PBX: native RSA-2048 OAEP private-key operations per second on
//! all cores. Every rich notification item carries one wrapped key, so no pipeline can beat
//! this (shared spec, "Keys").

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};

use crate::machine::cores;
use crate::plan::Plan;
use crate::table::{Row, thousands};

/// The RSA rows and the bound later rows are compared with.
pub struct RsaResult {
    /// Rows to print.
    pub rows: Vec<Row>,
    /// aws-lc-rs decryptions/s on all cores (what the host's `keys` uses), if measured.
    pub bound: Option<f64>,
}

/// Measures aws-lc-rs in-process and, if `openssl` is installed, `openssl speed -multi`.
pub async fn measure(plan: &Plan) -> RsaResult {
    let cores = cores();
    let time = plan.rsa_time;
    let aws = tokio::task::spawn_blocking(move || aws_lc_decryptions_per_sec(cores, time))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    let mut rows = Vec::new();
    let bound = match aws {
        Ok(rate) => {
            rows.push(Row::info(
                "native RSA-2048 OAEP decryptions/s, all cores (aws-lc-rs)",
                format!(
                    "{} /s ({} /s/core)",
                    thousands(rate),
                    thousands(rate / cores as f64)
                ),
                "bound for Teams -> PBX rich",
                &format!(
                    "{cores} threads decrypt one OAEP-SHA1 wrapped 32-byte key in a loop for {:.0} s after warm-up; same library as the host's `keys`",
                    time.as_secs_f64()
                ),
            ));
            Some(rate)
        }
        Err(e) => {
            rows.push(Row::failed(
                "native RSA-2048 OAEP (aws-lc-rs)",
                &format!("{e:#}"),
            ));
            None
        }
    };
    if plan.openssl {
        let secs = time.as_secs().max(1);
        let speed = tokio::task::spawn_blocking(move || openssl_speed(cores, secs))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        rows.push(match speed {
            Ok(Some((rate, what))) => Row::info(
                "native RSA-2048 private-key ops/s, all cores (openssl speed)",
                format!("{} /s", thousands(rate)),
                "bound (reference)",
                &format!("`openssl speed -multi {cores} -seconds {secs} rsa2048`, {what}"),
            ),
            Ok(None) => Row::info(
                "native RSA-2048 private-key ops/s (openssl speed)",
                "openssl not installed".into(),
                "bound (reference)",
                "",
            ),
            Err(e) => Row::failed("native RSA-2048 (openssl speed)", &format!("{e:#}")),
        });
    }
    RsaResult { rows, bound }
}

/// RSA-2048 OAEP (SHA-1, as Graph wraps keys) decryptions per second over `threads` threads,
/// measured for `time` after a warm-up of a tenth of it.
pub fn aws_lc_decryptions_per_sec(threads: usize, time: Duration) -> Result<f64> {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow!("RSA key generation failed"))?;
    let public =
        OaepPublicEncryptingKey::new(private.public_key()).map_err(|_| anyhow!("public key"))?;
    let key = OaepPrivateDecryptingKey::new(private).map_err(|_| anyhow!("private key"))?;
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let aes_key = [7u8; 32];
    let wrapped = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, &aes_key, &mut wrapped, None)
        .map_err(|_| anyhow!("encrypt"))?
        .to_vec();

    let counting = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let measured = std::thread::scope(|s| -> Result<Duration> {
        let mut workers = Vec::new();
        for _ in 0..threads {
            workers.push(s.spawn(|| -> Result<()> {
                let mut out = vec![0u8; key.min_output_size()];
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let plain = key
                        .decrypt(&OAEP_SHA1_MGF1SHA1, &wrapped, &mut out, None)
                        .map_err(|_| anyhow!("decrypt"))?;
                    if plain != aes_key {
                        bail!("decrypted the wrong key");
                    }
                    // Only operations that finish inside the measured window count.
                    if counting.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }));
        }
        start.wait();
        std::thread::sleep(time / 10);
        counting.store(true, Ordering::Relaxed);
        let t = Instant::now();
        std::thread::sleep(time);
        counting.store(false, Ordering::Relaxed);
        let measured = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().map_err(|_| anyhow!("worker panicked"))??;
        }
        Ok(measured)
    })?;
    Ok(count.load(Ordering::Relaxed) as f64 / measured.as_secs_f64())
}

/// Runs `openssl speed -multi <cores> -seconds <secs> rsa2048`; `None` if openssl is missing.
/// Returns the private-key rate (decr./s if this OpenSSL prints it, else sign/s, the same
/// operation) and which column it is.
pub fn openssl_speed(cores: usize, secs: u64) -> Result<Option<(f64, &'static str)>> {
    let out = match std::process::Command::new("openssl")
        .args(["speed", "-multi", &cores.to_string(), "-seconds"])
        .arg(secs.to_string())
        .arg("rsa2048")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running openssl speed"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    parse_openssl_speed(&text)
        .map(Some)
        .with_context(|| format!("unexpected `openssl speed` output:\n{text}"))
}

/// Parses the summary of `openssl speed rsa2048` (1.1 to 3.x formats).
pub fn parse_openssl_speed(text: &str) -> Option<(f64, &'static str)> {
    let header = text.lines().rev().find(|l| l.contains("sign/s"))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048"))?;
    // Per-second columns are the numbers without an `s` suffix after "bits".
    let rates: Vec<f64> = line
        .split_whitespace()
        .skip_while(|w| *w != "bits")
        .skip(1)
        .filter(|w| !w.ends_with('s'))
        .filter_map(|w| w.parse().ok())
        .collect();
    if header.contains("decr./s") && rates.len() >= 4 {
        Some((rates[3], "decr./s column"))
    } else {
        rates
            .first()
            .map(|r| (*r, "sign/s column (same private-key op)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_3_0_and_3_2_summaries() {
        let v30 = "                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.000412s 0.000024s   2428.6  41849.0\n";
        assert_eq!(parse_openssl_speed(v30).unwrap().0, 2428.6);
        let v32 = "                   sign    verify    encrypt   decrypt   sign/s verify/s  encr./s  decr./s\nrsa  2048 bits 0.000870s 0.000025s 0.000025s 0.000858s   1149.6  39774.5  39774.2   1165.0\n";
        assert_eq!(parse_openssl_speed(v32).unwrap().0, 1165.0);
    }
}
