//! Provisioning (issue #9) through the real host against the fake PBX: the command
//! `deploy/provision.sh` shows the two App objects, then creates `microsoft365-api` through the
//! PbxAdminApi of the connector's App object; running it again updates the same object.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use e2e::{PbxOptions, Stack, StackOptions};
use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/provision.sh")
}

fn provision(stack: &Stack, password: &str, apply: bool) -> Result<Output> {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg(&stack.connector().url);
    if apply {
        cmd.arg("--apply");
    }
    cmd.env("M365_ADMIN_PASSWORD", password)
        .output()
        .context("running deploy/provision.sh (needs bash, curl, sha256sum)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `microsoft365-api` objects in the fake PBX.
fn api_objects(stack: &Stack) -> Result<Vec<Value>> {
    let all = stack.pbx().call("GET", "/objects", None)?;
    Ok(all
        .as_array()
        .context("GET /objects is a list")?
        .iter()
        .filter(|o| o["h323"] == "microsoft365-api")
        .cloned()
        .collect())
}

#[test]
fn provision_command_creates_the_api_object_once() -> Result<()> {
    let options = StackOptions {
        pbx: Some(PbxOptions::default()),
        ..Default::default()
    };
    let password = options.instance_password.clone();
    Stack::run(options, |stack| {
        stack.wait_for_pbx_logins()?;
        let app_url = stack.app_url();

        // Show: both objects, ready to copy, with the URLs the PBX must use.
        let out = provision(stack, &password, false)?;
        ensure!(out.status.success(), "show failed: {}", text(&out));
        let shown: Value = serde_json::from_slice(&out.stdout)?;
        let objects = shown["objects"].as_array().context("objects")?;
        ensure!(objects.len() == 2, "{shown}");
        ensure!(objects[0]["url"] == app_url.as_str(), "{shown}");
        ensure!(objects[1]["sip"] == "microsoft365-api", "{shown}");
        ensure!(
            objects[1]["url"] == format!("{app_url}api").as_str(),
            "{shown}"
        );
        ensure!(shown["can_apply"] == true, "{shown}");
        ensure!(
            !text(&out).contains(&password),
            "the password is never shown"
        );

        // A wrong password creates nothing.
        let out = provision(stack, "not-the-password", true)?;
        ensure!(!out.status.success(), "accepted a wrong password");
        ensure!(text(&out).contains("login refused"), "{}", text(&out));
        ensure!(api_objects(stack)?.is_empty());

        // Apply: created.
        let out = provision(stack, &password, true)?;
        ensure!(out.status.success(), "apply failed: {}", text(&out));
        ensure!(
            text(&out).contains("microsoft365-api created"),
            "{}",
            text(&out)
        );
        let first = api_objects(stack)?;
        ensure!(first.len() == 1, "{first:?}");
        ensure!(first[0]["pseudo"]["app"]["url"] == format!("{app_url}api").as_str());
        ensure!(first[0]["pseudo"]["app"]["hidden"] == true);
        ensure!(first[0]["cn"] == "microsoft365-api");

        // Again: the same object, updated, still one.
        let out = provision(stack, &password, true)?;
        ensure!(out.status.success(), "second apply failed: {}", text(&out));
        ensure!(
            text(&out).contains("microsoft365-api updated"),
            "{}",
            text(&out)
        );
        let second = api_objects(stack)?;
        ensure!(second.len() == 1, "{second:?}");
        ensure!(second[0]["guid"] == first[0]["guid"]);

        let violations = stack.pbx().violations()?;
        ensure!(
            violations.is_empty(),
            "PBX protocol violations: {violations:?}"
        );
        ensure!(
            !stack.host_log().contains(&password),
            "password in the host log"
        );
        Ok(())
    })
}
