//! Operations (issue #9): what an operator scraping the host's `/metrics` sees of the connector
//! after a Teams presence change reached the PBX - Graph calls by status, the presence
//! subscription active, notifications received, the write into the PBX counted by direction
//! and the audit trail's size.

use anyhow::{Context, Result, ensure};
use e2e::http::request;
use e2e::people::{people, synced_stack};
use e2e::{Stack, TeamsAccount};

/// Sum of the series of `name` whose labels contain every one of `labels`.
fn figure(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn metrics(stack: &Stack) -> Result<String> {
    let reply = request("GET", &format!("{}/metrics", stack.host_url()), None)?;
    ensure!(reply.status == 200, "/metrics answered {}", reply.status);
    Ok(reply.body)
}

#[test]
fn metrics_show_calls_subscriptions_notifications_and_writes() -> Result<()> {
    let persons = people(4, 55);
    let options = synced_stack(
        &persons,
        vec![TeamsAccount::Password {
            name: "teams1".into(),
            username: "teams.ops@contoso.onmicrosoft.com".into(),
            password: "0ps-Passw0rd!".into(),
        }],
    );
    Stack::run(options, |stack| {
        stack.wait_for_pbx_logins()?;
        stack.wait_until("the presence subscription is active in /metrics", |s| {
            let m = metrics(s)?;
            let active = figure(
                &m,
                "graph_subscriptions",
                &[r#"feature="presence""#, r#"state="active""#],
            );
            Ok((active == 1.0).then_some(()))
        })?;

        let who = &persons[0];
        stack
            .m365()
            .set_teams_presence(&who.email, "DoNotDisturb", "DoNotDisturb")?;
        stack.wait_until("the PBX shows dnd", |s| {
            let p = s.pbx().presence(&who.guid)?;
            let dnd = p["stored"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["contact"] == "teams:" && i["activity"] == "dnd")
            });
            Ok(dnd.then_some(()))
        })?;

        let m = stack.wait_until("the write is counted", |s| {
            let m = metrics(s)?;
            let writes = figure(
                &m,
                "presence_writes_total",
                &[r#"direction="teams->pbx""#, r#"result="sent""#],
            );
            Ok((writes >= 1.0).then_some(m))
        })?;
        let ok_calls: f64 = ["200", "201", "202", "204"]
            .iter()
            .map(|s| figure(&m, "graph_calls_total", &[&format!("status=\"{s}\"")]))
            .sum();
        ensure!(ok_calls >= 3.0, "successful Graph calls: {ok_calls}\n{m}");
        ensure!(
            figure(&m, "graph_notifications_total", &[]) >= 1.0,
            "no notification counted\n{m}"
        );
        ensure!(
            figure(&m, "audit_entries", &[]) >= 1.0,
            "audit trail empty\n{m}"
        );
        ensure!(
            figure(&m, "graph_subscriptions", &[r#"state="expired""#]) == 0.0,
            "an expired subscription\n{m}"
        );
        let series = m
            .lines()
            .find(|l| l.starts_with("presence_writes_total"))
            .context("no presence_writes_total line")?;
        ensure!(
            series.contains(r#"instance=""#),
            "no instance label: {series}"
        );
        Ok(())
    })
}

/// The shipped `deploy/apphost.toml` passes `apphost --check` once its absolute paths point at a
/// scratch directory, and `deploy/apphost.service` passes `systemd-analyze verify` (where
/// systemd is installed) with `ExecStart` pointing at the built binary.
#[test]
fn deploy_files_are_valid() -> Result<()> {
    let bin = e2e::Binaries::get()?;
    let root = e2e::binaries::workspace_root();
    let scratch = std::env::temp_dir().join(format!("deploy-check-{}", std::process::id()));
    let plugins = scratch.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&bin.guest_wasm, plugins.join("microsoft365.wasm"))?;
    let config = std::fs::read_to_string(root.join("deploy/apphost.toml"))?
        .replace("/opt/apphost/plugins", &plugins.display().to_string())
        .replace("/etc/apphost", &scratch.join("etc").display().to_string())
        .replace(
            "/var/lib/apphost",
            &scratch.join("data").display().to_string(),
        );
    for installed in ["\"/opt/", "\"/etc/", "\"/var/"] {
        ensure!(
            !config.contains(installed),
            "a path under {installed} was not redirected"
        );
    }
    let config_path = scratch.join("apphost.toml");
    std::fs::write(&config_path, config)?;
    let out = std::process::Command::new(&bin.apphost)
        .arg("--check")
        .arg("--config")
        .arg(&config_path)
        .output()?;
    ensure!(
        out.status.success(),
        "apphost --check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let unit = std::fs::read_to_string(root.join("deploy/apphost.service"))?
        .replace("/usr/local/bin/apphost", &bin.apphost.display().to_string());
    let unit_path = scratch.join("apphost.service");
    std::fs::write(&unit_path, unit)?;
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Ok(out) => ensure!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("systemd-analyze not available ({e}); unit not verified"),
    }
    std::fs::remove_dir_all(&scratch)?;

    // The container builds with the pinned toolchain.
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml"))?;
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .context("no channel in rust-toolchain.toml")?
        .trim_matches('"');
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile"))?;
    ensure!(
        dockerfile.contains(&format!("FROM rust:{channel}-"))
            && dockerfile.contains(&format!("rustup toolchain install {channel} ")),
        "deploy/Dockerfile does not build with Rust {channel}"
    );
    Ok(())
}
