//! The Microsoft side through the real host: Teams accounts sign in against the fake Entra ID
//! over HTTPS (the fake's CA trusted through the instance's `extra_ca_file`, the fake's address
//! on the outbound allow-list).

use anyhow::{Context, Result};
use e2e::{M365Options, Stack, StackOptions, TeamsAccount};
use serde_json::json;

const SERVICE_USER: &str = "svc1@contoso.onmicrosoft.com";
const MFA_USER: &str = "svcmfa@contoso.onmicrosoft.com";
/// Every character that breaks naive form encoding.
const AWKWARD_PASSWORD: &str = "P@ss&w+rd%=# <*()";

fn with_accounts(accounts: Vec<TeamsAccount>) -> StackOptions {
    StackOptions {
        m365: Some(M365Options {
            populate: 10,
            accounts,
            // Poll the device-code endpoint every second instead of every five.
            config: Some(json!({"device_code_interval_s": 1})),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn password_account(password: &str) -> TeamsAccount {
    TeamsAccount::Password {
        name: "teams1".into(),
        username: SERVICE_USER.into(),
        password: password.into(),
    }
}

/// The user code the guest logged for a device-code sign-in.
fn logged_device_code(stack: &Stack) -> Option<String> {
    let log = stack.host_log();
    let line = log
        .lines()
        .rfind(|l| l.contains("device-code sign-in started"))?;
    let code = line.split("code ").last()?;
    Some(
        code.split(|c: char| !c.is_ascii_alphanumeric())
            .next()?
            .to_string(),
    )
}

/// A password with `& + % = # ` and a space signs in (ROPC) and the account is ready; the
/// password appears neither in the status page nor in the host's log.
#[test]
fn password_with_awkward_characters_signs_in() -> Result<()> {
    Stack::run(
        with_accounts(vec![password_account(AWKWARD_PASSWORD)]),
        |stack| {
            let status = stack.wait_for_status("account teams1 ready", |st| {
                st.account("teams1").is_some_and(|a| a.state == "ready")
            })?;
            assert_eq!(status.account("teams1").unwrap().advice, None);
            let token_calls = stack
                .m365()
                .requests()?
                .into_iter()
                .filter(|r| r.to_string().contains("oauth2/v2.0/token"))
                .count();
            assert!(token_calls >= 1, "the fake saw no token request");
            assert!(
                !stack
                    .connector()
                    .get("/status")?
                    .body
                    .contains(AWKWARD_PASSWORD)
            );
            assert!(!stack.host_log().contains(AWKWARD_PASSWORD));
            Ok(())
        },
    )
}

/// A wrong password is reported with actionable advice instead of retrying silently.
#[test]
fn wrong_password_fails_with_advice() -> Result<()> {
    // The fake knows the user with the awkward password; the connector is configured with
    // another one.
    let mut options = with_accounts(vec![password_account(AWKWARD_PASSWORD)]);
    let wrong = json!([{"name": "teams1", "username": SERVICE_USER, "password": "almost-right"}]);
    options.settings.push((
        "presence.accounts".into(),
        serde_json::to_string(&wrong.to_string())?,
    ));
    Stack::run(options, |stack| {
        let status = stack.wait_for_status("account teams1 failed", |st| {
            st.account("teams1").is_some_and(|a| a.state == "failed")
        })?;
        let advice = status.account("teams1").unwrap().advice.clone();
        // AADSTS50126: invalid username or password; the advice names the code to look up.
        assert!(
            advice.as_deref().is_some_and(|a| a.contains("50126")),
            "{advice:?}"
        );
        assert!(!stack.host_log().contains("almost-right"));
        Ok(())
    })
}

/// An MFA account signs in by device code: the code is logged, an administrator approves it,
/// the account becomes ready; after a host restart it is ready again from the stored refresh
/// token, without a second device code.
#[test]
fn mfa_account_signs_in_by_device_code_and_survives_a_restart() -> Result<()> {
    Stack::run(
        with_accounts(vec![TeamsAccount::DeviceCode {
            name: "teams-mfa".into(),
            username: MFA_USER.into(),
        }]),
        |stack| {
            stack.wait_for_status("awaiting device sign-in", |st| {
                st.account("teams-mfa")
                    .is_some_and(|a| a.state == "awaiting-device-sign-in")
            })?;
            let code = stack.wait_until("the user code in the host log", |s| {
                Ok(logged_device_code(s))
            })?;
            assert!(
                !stack.connector().get("/status")?.body.contains(&code),
                "the user code must not be on the unauthenticated status page"
            );
            stack
                .m365()
                .approve_device_code(&code, MFA_USER)
                .with_context(|| format!("approving {code}"))?;
            stack.wait_for_status("device-code account ready", |st| {
                st.account("teams-mfa").is_some_and(|a| a.state == "ready")
            })?;

            stack.restart_host()?;
            stack.wait_for_status("account ready again after the restart", |st| {
                st.account("teams-mfa").is_some_and(|a| a.state == "ready")
            })?;
            let codes = stack
                .host_log()
                .matches("device-code sign-in started")
                .count();
            assert_eq!(codes, 1, "the restart reused the stored refresh token");
            Ok(())
        },
    )
}
