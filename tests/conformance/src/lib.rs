//! A host-conformance suite for connector hosts, written once as data.
//!
//! Each file in `scripts/` is one [`Script`]: a sequence of [`Step`]s (inbound HTTP, WebSocket
//! open/message/close, completions from a local upstream, timers, restart, hot swap) with the
//! effects a correct host must show. A runner per host turns the steps into real traffic
//! ([`real`], for `apphost` and the Node host over loopback) or into virtual time
//! ([`sim`], for the simulation host). All of them drive the test guest in `tests/test-guest`.
#![deny(missing_docs)]

pub mod apphost;
pub mod node;
pub mod real;
pub mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The instance every runner configures: `/<DOMAIN>/<INSTANCE>/...`.
pub const DOMAIN: &str = "test.local";
/// Instance name.
pub const INSTANCE: &str = "t";
/// Instance password (a setting the guest sees as `instance.password`).
pub const PASSWORD: &str = "pw-t";

/// The settings every runner gives the instance, as the guest must see them in `config`.
pub fn settings() -> BTreeMap<String, String> {
    [
        ("greeting", "hello"),
        ("instance.domain", DOMAIN),
        ("instance.name", INSTANCE),
        ("instance.password", PASSWORD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One conformance script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// What the script proves, in one sentence.
    pub about: String,
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// File stem, filled in by [`load_scripts`].
    #[serde(skip)]
    pub name: String,
}

/// One step of a script.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// An inbound HTTP request to `path` (below the instance prefix, query included).
    Http {
        /// Method, `GET` by default.
        #[serde(default = "get")]
        method: String,
        /// Path and query below `/<domain>/<instance>`.
        path: String,
        /// Request body (text).
        #[serde(default)]
        body: String,
        /// Name under which a request sent without waiting is awaited later.
        #[serde(default, rename = "as")]
        name: Option<String>,
        /// The answer a correct host gives; absent when `as` is set (see [`Step::Await`]).
        #[serde(default)]
        expect: Option<Expect>,
    },
    /// Waits for the answer to a request sent earlier with `as`.
    Await {
        /// The request's name.
        name: String,
        /// The answer a correct host gives.
        expect: Expect,
    },
    /// A WebSocket client connects to `path` below the instance prefix.
    WsOpen {
        /// Connection name.
        name: String,
        /// Path below the instance prefix.
        path: String,
    },
    /// The client sends a frame.
    WsSend {
        /// Connection name.
        name: String,
        /// A text frame...
        #[serde(default)]
        text: Option<String>,
        /// ...or a binary frame, hex.
        #[serde(default)]
        binary_hex: Option<String>,
    },
    /// The next frame the client receives (pings and pongs aside).
    WsExpect {
        /// Connection name.
        name: String,
        /// A text frame with exactly this text...
        #[serde(default)]
        text: Option<String>,
        /// ...or a binary frame with these bytes (hex)...
        #[serde(default)]
        binary_hex: Option<String>,
        /// ...or a close frame with this code.
        #[serde(default)]
        close: Option<u16>,
    },
    /// The client closes the connection (code 1000).
    WsClose {
        /// Connection name.
        name: String,
    },
    /// Every request the local upstream received so far, in order, as `METHOD path x-test`.
    UpstreamSeen {
        /// Exactly these lines.
        requests: Vec<String>,
    },
    /// Every text frame the upstream WebSocket server received so far, in order.
    UpstreamWsSeen {
        /// Exactly these frames.
        frames: Vec<String>,
    },
    /// RSA-OAEP through the host's `keys`: the runner fetches the public key of `key`, encrypts
    /// each plaintext to it (plus one garbage ciphertext), and the guest decrypts the batch with
    /// `keys.rsa-oaep-decrypt`; every plaintext must come back in order, the garbage as an error.
    OaepDecrypt {
        /// Key pair name (generated earlier in the script).
        key: String,
        /// `sha1` or `sha256`.
        hash: String,
        /// Texts to encrypt.
        plaintexts: Vec<String>,
    },
    /// The guest instance is replaced by a fresh one that starts from KV (`init(restart)`);
    /// host-owned timers, sockets and pending requests stay.
    Restart,
    /// Hot swap between two events to the test guest v2 (`init(upgrade)`).
    Swap,
    /// Lets time pass (virtual time in the simulation host).
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
}

fn get() -> String {
    "GET".into()
}

/// What an answer to an inbound request must look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exact status code.
    pub status: u16,
    /// Exact body text.
    #[serde(default)]
    pub body: Option<String>,
    /// The body starts with this.
    #[serde(default)]
    pub body_prefix: Option<String>,
    /// The body ends with this.
    #[serde(default)]
    pub body_suffix: Option<String>,
    /// The body must not be this (e.g. a response the guest queued in a failed event).
    #[serde(default)]
    pub body_not: Option<String>,
    /// The body (bytes) starts with these bytes, hex (e.g. `3082` for DER).
    #[serde(default)]
    pub body_hex_prefix: Option<String>,
    /// The answer came at least this long after the request was sent.
    #[serde(default)]
    pub min_elapsed_ms: Option<u64>,
}

/// An answer as a runner saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Time from sending the request to the answer (virtual in the simulation host).
    pub elapsed_ms: u64,
}

impl Expect {
    /// Exactly this status and body.
    pub fn exact(status: u16, body: &str) -> Expect {
        Expect {
            status,
            body: Some(body.to_string()),
            body_prefix: None,
            body_suffix: None,
            body_not: None,
            body_hex_prefix: None,
            min_elapsed_ms: None,
        }
    }

    /// Checks an answer; the error says what differed.
    pub fn check(&self, answer: &Answer) -> Result<()> {
        let text = String::from_utf8_lossy(&answer.body);
        let got = || format!("got {} {:?}", answer.status, text);
        if answer.status != self.status {
            bail!("expected status {}, {}", self.status, got());
        }
        if let Some(body) = &self.body
            && text != *body
        {
            bail!("expected body {body:?}, {}", got());
        }
        if let Some(prefix) = &self.body_prefix
            && !text.starts_with(prefix.as_str())
        {
            bail!("expected body starting with {prefix:?}, {}", got());
        }
        if let Some(suffix) = &self.body_suffix
            && !text.ends_with(suffix.as_str())
        {
            bail!("expected body ending with {suffix:?}, {}", got());
        }
        if let Some(not) = &self.body_not
            && text == *not
        {
            bail!("body must not be {not:?}");
        }
        if let Some(hex) = &self.body_hex_prefix
            && !answer.body.starts_with(&unhex(hex))
        {
            bail!("expected body bytes starting with {hex}, {}", got());
        }
        if let Some(min) = self.min_elapsed_ms
            && answer.elapsed_ms < min
        {
            bail!(
                "answered after {} ms, expected at least {min} ms",
                answer.elapsed_ms
            );
        }
        Ok(())
    }
}

/// Addresses a script may name, substituted into paths and bodies before a step runs.
#[derive(Debug, Clone)]
pub struct Vars {
    /// `${upstream}`: the local HTTP upstream, on the allow-list (`http://127.0.0.1:<port>`).
    pub upstream: String,
    /// `${denied}`: the same upstream under a host name not on the allow-list (`localhost`).
    pub denied: String,
    /// `${closed}`: an allowed address where nothing listens (connection refused).
    pub closed: String,
    /// `${upstream_ws}`: the local WebSocket upstream, allowed.
    pub upstream_ws: String,
    /// `${denied_ws}`: the WebSocket upstream under a denied host name.
    pub denied_ws: String,
}

impl Vars {
    /// Replaces every `${name}` in `text`.
    pub fn apply(&self, text: &str) -> String {
        text.replace("${upstream_ws}", &self.upstream_ws)
            .replace("${denied_ws}", &self.denied_ws)
            .replace("${upstream}", &self.upstream)
            .replace("${denied}", &self.denied)
            .replace("${closed}", &self.closed)
    }
}

/// The upstream's answer to `METHOD path` with the guest's `x-test` header: it tells the guest
/// what the upstream saw, so a script can check both sides with one body.
pub fn upstream_body(method: &str, path: &str, x_test: &str) -> String {
    format!("upstream saw {method} {path} x-test={x_test}")
}

/// How long the upstream waits before answering `path`: `/slow/<ms>` waits `<ms>`.
pub fn upstream_delay_ms(path: &str) -> u64 {
    path.strip_prefix("/slow/")
        .and_then(|ms| ms.split(['/', '?']).next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// For [`Step::OaepDecrypt`]: the request body (one hex ciphertext per line, the last one
/// garbage) and the exact answer a correct host gives.
pub fn oaep_batch(spki_der: &[u8], hash: &str, plaintexts: &[String]) -> Result<(String, String)> {
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_der(spki_der).context("public key DER")?;
    let mut rng = rand::thread_rng();
    let mut lines = Vec::new();
    for text in plaintexts {
        let ct = match hash {
            "sha1" => key.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), text.as_bytes())?,
            "sha256" => key.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), text.as_bytes())?,
            other => bail!("unknown OAEP hash {other}"),
        };
        lines.push(hex(&ct));
    }
    lines.push("00ff".into());
    let mut want: Vec<String> = plaintexts.iter().map(|p| hex(p.as_bytes())).collect();
    want.push("error".into());
    Ok((lines.join("\n"), want.join("\n")))
}

/// Hex text of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory holding the scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// Loads every `*.json` script in `dir`, sorted by name.
pub fn load_scripts(dir: &Path) -> Result<Vec<Script>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut scripts = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let mut script: Script =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        script.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        scripts.push(script);
    }
    if scripts.is_empty() {
        bail!("no scripts in {}", dir.display());
    }
    Ok(scripts)
}

/// `<workspace>/tests/artifacts/test-guest-<version>.wasm`, or an error that says how to build it.
pub fn test_guest(version: &str) -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../artifacts")
        .join(format!("test-guest-{version}.wasm"));
    if !path.exists() {
        bail!(
            "{} is missing: run `make test-guests` first",
            path.display()
        );
    }
    Ok(path)
}

/// Bytes from hex text (invalid pairs are skipped).
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Runs every script with `run_one`, collecting failures; fails with all of them at the end.
pub fn report(results: Vec<(String, Result<()>)>, host: &str) -> Result<()> {
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("  {name}: {e:#}")))
        .collect();
    let passed = results.len() - failures.len();
    eprintln!(
        "conformance on {host}: {passed} of {} scripts pass",
        results.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        bail!(
            "{host} fails {} script(s):\n{}",
            failures.len(),
            failures.join("\n")
        )
    }
}
