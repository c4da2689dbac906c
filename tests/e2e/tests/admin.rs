//! The admin page (F5) in a real browser: headless Chromium, driven by
//! `tests/browser/admin.test.js` (Node + playwright-core), against the real host, the guest and
//! the fakes. The browser logs in (a wrong password is refused), configures the F1 client id and
//! a Teams account, watches the lights go green, reads the matching preview, sees a Teams
//! presence change arrive in the audit trail and checks that no response carries a secret.
//! Screenshots land in `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use e2e::people::{people, synced_stack};
use e2e::{Stack, StackOptions};
use serde_json::json;

/// A GUID client id, as Entra issues them (the page refuses anything else).
const CLIENT_ID: &str = "7f3c2a10-4b5d-4e6f-8a9b-0c1d2e3f4a5b";
const ACCOUNT_USER: &str = "teams.admin@contoso.onmicrosoft.com";
const ACCOUNT_PASSWORD: &str = "Adm1n-Pa$$ word&+%";
const DEVICE_USER: &str = "teams.mfa@contoso.onmicrosoft.com";
/// Typed into the F3 client secret field; must never come back or reach a log.
const CLIENT_SECRET: &str = "cAl~Secr3t.Value_42";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn admin_page_in_a_browser() -> Result<()> {
    let browser_dir = repo().join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        bail!("tests/browser has no node_modules: run `npm ci` there (make test does)");
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        bail!("no Chromium at {chromium}: `apt-get install -y chromium` (or set CHROMIUM)");
    }
    let persons = people(6, 77);
    let mut options: StackOptions = synced_stack(&persons, Vec::new());
    // One PBX user nobody in the tenant matches: the preview must say why.
    let stranger = people(7, 77).pop().expect("seven people");
    let pbx = options.pbx.as_mut().expect("synced stack has a PBX");
    pbx.extra_users.push(stranger.pbx_user("master"));
    pbx.licences = Some(persons.len() as u32 + 1);
    let m365 = options.m365.as_mut().expect("synced stack has M365");
    m365.apps.push(json!({
        "clientId": CLIENT_ID,
        "displayName": "Connector presence (admin page)",
        "publicClient": true,
        "delegated": ["Presence.Read.All", "User.Read.All", "offline_access"],
    }));
    m365.users.push(json!({
        "displayName": "Teams Admin Sync", "userPrincipalName": ACCOUNT_USER,
        "password": ACCOUNT_PASSWORD, "teams": true,
    }));
    // Signs in by device code only (MFA), approved in the fake with the code the page shows.
    m365.users.push(json!({
        "displayName": "Teams MFA Sync", "userPrincipalName": DEVICE_USER,
        "password": "Mfa-Passw0rd!", "teams": true, "mfaRequired": true,
    }));
    let password = options.instance_password.clone();
    Stack::run(options, |stack| {
        stack.wait_for_pbx_logins()?;
        // The harness's own app registration refuses sign-ins (AADSTS700016, unknown app), so
        // an account can only sign in if the client id saved on the page is really used.
        stack.m365().call(
            "POST",
            "/aadsts",
            Some(json!({"clientId": e2e::stack::CLIENT_ID, "code": 700016})),
        )?;
        let screenshots = repo().join("target/screenshots");
        let out = Command::new("node")
            .arg("admin.test.js")
            .current_dir(&browser_dir)
            .env("ADMIN_URL", format!("{}/admin/", stack.connector().url))
            .env("ADMIN_PASSWORD", &password)
            .env("CLIENT_ID", CLIENT_ID)
            .env("ACCOUNT_USER", ACCOUNT_USER)
            .env("ACCOUNT_PASSWORD", ACCOUNT_PASSWORD)
            .env("M365_CONTROL", &stack.m365().control_url)
            .env("PERSON_EMAIL", &persons[0].email)
            .env("PERSON_NAME", &persons[0].h323)
            .env("DEVICE_USER", DEVICE_USER)
            .env("UNMATCHED_NAME", &stranger.h323)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("SCREENSHOTS", &screenshots)
            .env("CHROMIUM", &chromium)
            .output()
            .context("running node (Node.js 20 is required)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        if !out.status.success() {
            bail!("the browser test failed:\n{text}");
        }
        // What the browser saw is what the connector did: the account is signed in.
        let status = stack.connector().status()?;
        let account = status.account("teams1").context("teams1 not in /status")?;
        anyhow::ensure!(account.state == "ready", "teams1 is {}", account.state);
        let device = status.account("teams2").context("teams2 not in /status")?;
        anyhow::ensure!(device.state == "ready", "teams2 is {}", device.state);
        // Neither the public status page, the provisioning view nor the host log shows the
        // secrets typed into the page.
        let public = format!(
            "{}{}",
            stack.connector().status_json()?,
            stack.connector().get("/provisioning")?.ok_json()?
        );
        for secret in [ACCOUNT_PASSWORD, CLIENT_SECRET, password.as_str()] {
            anyhow::ensure!(!public.contains(secret), "a public page shows a secret");
        }
        let log = stack.host_log();
        for secret in [ACCOUNT_PASSWORD, CLIENT_SECRET, password.as_str()] {
            anyhow::ensure!(!log.contains(secret), "the host log shows a secret");
        }
        anyhow::ensure!(screenshots.join("admin-7-status-green.png").exists());
        Ok(())
    })
}
