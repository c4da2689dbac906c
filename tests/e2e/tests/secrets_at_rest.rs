//! Secrets at rest (issue #9, product.md F5): the real host runs the connector with every kind
//! of secret configured - the instance password, a Teams account password in the host's
//! config, and, saved through the admin API, another account's password and three client
//! secrets. After the accounts signed in and the host restarted (so sled has flushed
//! everything), every file of the data directory is read as raw bytes and none holds any
//! secret in any encoding tried (plain, hex, base64 at every alignment, UTF-16, JSON- and
//! form-escaped); neither does any line of the host log (debug, guest targets at trace, every
//! admin trace switch on while the secrets travel) nor the admin page's live log.
//!
//! The scanner proves it can see: it finds the replicated PBX user names, which are stored in
//! the clear, and a planted secret in each encoding.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use e2e::people::{people, synced_stack};
use e2e::{Stack, TeamsAccount};
use serde_json::{Value, json};

const INSTANCE_PASSWORD: &str = "Inst4nce-Pw!secret-9981";
const CONFIG_ACCOUNT_PASSWORD: &str = "T0ml-acc0unt pw&=+%-7731";
const SAVED_ACCOUNT_USER: &str = "teams.saved@contoso.onmicrosoft.com";
const SAVED_ACCOUNT_PASSWORD: &str = "Sav3d-acc0unt-pw/\"quoted\"-4412";
const CLIENT_SECRETS: [(&str, &str); 3] = [
    ("presence-out.client-secret", "cs~presence0ut-Secret.8842_x"),
    ("calendar.client-secret", "cs~cal3ndar-Secret.1199_y"),
    ("contact-search.client-secret", "cs~c0ntacts-Secret.5523_z"),
];

fn secrets() -> Vec<&'static str> {
    let mut s = vec![
        INSTANCE_PASSWORD,
        CONFIG_ACCOUNT_PASSWORD,
        SAVED_ACCOUNT_PASSWORD,
    ];
    s.extend(CLIENT_SECRETS.iter().map(|(_, v)| *v));
    s
}

// ---- encodings

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// The base64 characters that depend only on the secret when it sits `offset` bytes into a
/// 3-byte group: whatever surrounds it, an encoded copy contains this run.
fn base64_core(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(secret);
    let full_groups = padded.len() / 3;
    let first = if offset == 0 { 0 } else { 1 };
    let enc = base64(&padded[..full_groups * 3], alphabet);
    enc[first * 4..].to_vec()
}

fn hex(bytes: &[u8], upper: bool) -> Vec<u8> {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect::<String>()
        .into_bytes()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every form of `secret` looked for, with a name for the report.
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let raw = secret.as_bytes();
    let mut out = vec![
        ("plain".to_string(), raw.to_vec()),
        ("hex".into(), hex(raw, false)),
        ("HEX".into(), hex(raw, true)),
        (
            "utf-16le".into(),
            secret.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        ),
        (
            "utf-16be".into(),
            secret.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ),
        (
            "json".into(),
            serde_json::to_string(secret)
                .unwrap()
                .trim_matches('"')
                .into(),
        ),
        ("form".into(), form_encode(secret).into_bytes()),
    ];
    for offset in 0..3 {
        out.push((format!("base64@{offset}"), base64_core(raw, offset, STD)));
        out.push((format!("base64url@{offset}"), base64_core(raw, offset, URL)));
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Which secrets (and how encoded) `bytes` contains. One pass over the bytes: every needle is
/// indexed by its first non-zero byte, so the zero-filled stretches of sled files cost nothing.
fn leaks(bytes: &[u8], secrets: &[&str]) -> Vec<String> {
    let mut needles = Vec::new();
    for s in secrets {
        for (how, needle) in encodings(s) {
            needles.push((format!("{s:?} as {how}"), needle));
        }
    }
    let mut by_byte: Vec<Vec<(usize, usize)>> = vec![Vec::new(); 256];
    for (i, (_, n)) in needles.iter().enumerate() {
        if let Some(j) = n.iter().position(|b| *b != 0) {
            by_byte[n[j] as usize].push((i, j));
        }
    }
    let mut found = vec![false; needles.len()];
    for (pos, b) in bytes.iter().enumerate() {
        for &(i, j) in &by_byte[*b as usize] {
            let Some(start) = pos.checked_sub(j) else {
                continue;
            };
            let n = &needles[i].1;
            if !found[i] && bytes.get(start..start + n.len()) == Some(n.as_slice()) {
                found[i] = true;
            }
        }
    }
    needles
        .into_iter()
        .zip(found)
        .filter(|(_, f)| *f)
        .map(|((what, _), _)| what)
        .collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

// ---- the admin API, as the page uses it

struct Admin {
    url: String,
    cookie: String,
    csrf: String,
}

fn curl(args: &[&str]) -> Result<(u16, String, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/stderr", "-w", ""])
        .args(args)
        .output()
        .context("running curl")?;
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let body = String::from_utf8_lossy(&out.stderr).to_string();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from curl {args:?}: {headers} {body}"))?;
    Ok((status, headers, body))
}

fn sha256_hex(text: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

impl Admin {
    fn login(url: &str, password: &str) -> Result<Admin> {
        let (_, _, body) = curl(&["-X", "POST", &format!("{url}/admin/api/challenge")])?;
        let ch: Value = serde_json::from_str(&body)?;
        let s = |k: &str| ch[k].as_str().unwrap_or("").to_string();
        let digest = sha256_hex(&format!(
            "{}:{}::::{}:{password}",
            s("app"),
            s("domain"),
            s("challenge")
        ))?;
        let attempt = json!({"challenge": s("challenge"), "digest": digest}).to_string();
        let (status, headers, body) = curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            &attempt,
            &format!("{url}/admin/api/login"),
        ])?;
        ensure!(status == 200, "admin login refused: {status} {body}");
        let cookie = headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.trim().split(';').next().unwrap_or("").to_string())
            })
            .context("no session cookie")?;
        let csrf = serde_json::from_str::<Value>(&body)?["csrf"]
            .as_str()
            .context("no csrf token")?
            .to_string();
        Ok(Admin {
            url: url.to_string(),
            cookie,
            csrf,
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        let (status, _, text) = curl(&[
            "-H",
            &format!("cookie: {}", self.cookie),
            &format!("{}/admin/api{path}", self.url),
        ])?;
        ensure!(status == 200, "GET {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let (status, _, text) = curl(&[
            "-X",
            method,
            "-H",
            "content-type: application/json",
            "-H",
            &format!("cookie: {}", self.cookie),
            "-H",
            &format!("x-csrf-token: {}", self.csrf),
            "--data",
            &body.to_string(),
            &format!("{}/admin/api{path}", self.url),
        ])?;
        ensure!(status == 200, "{method} {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }
}

#[test]
fn the_scanner_sees_every_encoding() {
    let secret = "Planted secret/é+1";
    for (how, needle) in encodings(secret) {
        let mut file = b"<<".to_vec();
        file.extend_from_slice(&needle);
        file.extend_from_slice(b">>");
        assert!(!leaks(&file, &[secret]).is_empty(), "{how} not found");
    }
    // Base64 of a longer text, the secret at every alignment, by a whole-text encoder.
    for alphabet in [STD, URL] {
        for pad in 0..3 {
            let mut text = vec![b'k'; pad];
            text.extend_from_slice(secret.as_bytes());
            text.extend_from_slice(b"tail");
            let file = base64(&text, alphabet);
            assert!(
                !leaks(&file, &[secret]).is_empty(),
                "base64 at {pad} not found"
            );
        }
    }
    assert!(leaks(b"nothing to see here", &[secret]).is_empty());
}

#[test]
fn data_directory_and_log_hold_no_secret() -> Result<()> {
    let persons = people(4, 31);
    let mut options = synced_stack(
        &persons,
        vec![TeamsAccount::Password {
            name: "teams1".into(),
            username: "teams.config@contoso.onmicrosoft.com".into(),
            password: CONFIG_ACCOUNT_PASSWORD.into(),
        }],
    );
    options.instance_password = INSTANCE_PASSWORD.into();
    // Chatty logs: more lines that must not carry a secret.
    options.log_filter = "debug,guest=trace".into();
    let m365 = options.m365.as_mut().context("synced stack has M365")?;
    m365.users.push(json!({
        "displayName": "Teams Saved", "userPrincipalName": SAVED_ACCOUNT_USER,
        "password": SAVED_ACCOUNT_PASSWORD, "teams": true,
    }));
    Stack::run(options, |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_for_status("teams1 signed in", |st| {
            st.account("teams1").is_some_and(|a| a.state == "ready")
        })?;

        // Secrets saved from the admin page.
        let url = stack.connector().url;
        let admin = Admin::login(&url, INSTANCE_PASSWORD)?;
        // Every trace switch on (App, Database, HTTP client, Webserver, ...) before the secrets
        // travel: the most a log can say.
        let trace = admin.get("/trace")?;
        let mut switched = 0;
        for switch in trace["switches"].as_array().context("trace switches")? {
            let on = json!({"target": switch["target"], "on": true});
            // Host-side switches (TLS, TCP) follow the host's log filter (`log_filter`).
            match admin.send("PUT", "/trace", &on) {
                Ok(_) => switched += 1,
                Err(e) if e.to_string().contains("traced by the host") => {}
                Err(e) => return Err(e),
            }
        }
        ensure!(
            switched >= 3,
            "only {switched} trace switches could be turned on"
        );
        let mut values = serde_json::Map::new();
        for (name, secret) in CLIENT_SECRETS {
            values.insert(name.into(), json!(secret));
        }
        admin.send("PUT", "/settings", &json!({"values": values}))?;
        admin.send(
            "POST",
            "/accounts",
            &json!({"name": "teams2", "username": SAVED_ACCOUNT_USER,
                    "password": SAVED_ACCOUNT_PASSWORD}),
        )?;
        // The saved password works (so it really is stored), before and after a restart.
        stack.wait_for_status("teams2 signed in", |st| {
            st.account("teams2").is_some_and(|a| a.state == "ready")
        })?;
        // The admin page's live log and audit trail (in memory until the restart).
        let live = admin.get("/log")?.to_string();
        ensure!(
            live.contains("[trace]") || live.len() > 1000,
            "the live log is nearly empty"
        );
        let found = leaks(live.as_bytes(), &secrets());
        ensure!(
            found.is_empty(),
            "the admin live log holds {}",
            found.join(", ")
        );
        stack.restart_host()?;
        stack.wait_for_status("both accounts signed in after the restart", |st| {
            ["teams1", "teams2"]
                .iter()
                .all(|n| st.account(n).is_some_and(|a| a.state == "ready"))
        })?;

        let mut all = Vec::new();
        files(&stack.dir().join("data"), &mut all)?;
        ensure!(!all.is_empty(), "the data directory is empty");
        let secrets = secrets();
        let mut plain_names_seen = false;
        let mut bytes_read = 0;
        for f in &all {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            bytes_read += bytes.len();
            let found = leaks(&bytes, &secrets);
            if !found.is_empty() {
                bail!("{} holds {}", f.display(), found.join(", "));
            }
            plain_names_seen =
                plain_names_seen || persons.iter().all(|p| find(&bytes, p.h323.as_bytes()));
        }
        ensure!(
            plain_names_seen,
            "the scan read {} files ({bytes_read} bytes) but not even the PBX user names, \
             which are stored in the clear: it cannot be trusted",
            all.len()
        );

        let log = stack.host_log();
        ensure!(log.lines().count() > 20, "the host log is nearly empty");
        for (n, line) in log.lines().enumerate() {
            let found = leaks(line.as_bytes(), &secrets);
            ensure!(
                found.is_empty(),
                "host log line {}: {}",
                n + 1,
                found.join(", ")
            );
        }
        Ok(())
    })
}
