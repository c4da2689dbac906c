//! The conformance suite on every host: each script in `scripts/` runs on a fresh host.

use conformance::apphost::AppHost;
use conformance::node::NodeHost;
use conformance::{load_scripts, real, report, scripts_dir, sim};

fn work_dir(host: &str, script: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "conformance-{host}-{}-{script}",
        std::process::id()
    ))
}

#[test]
fn simhost_passes_every_script() {
    let scripts = load_scripts(&scripts_dir()).unwrap();
    let results = scripts
        .iter()
        .map(|s| (s.name.clone(), sim::run_script(s)))
        .collect();
    report(results, "simhost").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apphost_passes_every_script() {
    let scripts = load_scripts(&scripts_dir()).unwrap();
    let mut results = Vec::new();
    for script in &scripts {
        let mut host = AppHost::start(&work_dir("apphost", &script.name))
            .await
            .unwrap();
        let result = real::run_script(&mut host, script).await;
        host.stop().await;
        results.push((script.name.clone(), result));
    }
    report(results, "apphost").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_host_passes_every_script() {
    conformance::node::check_ready().unwrap();
    let scripts = load_scripts(&scripts_dir()).unwrap();
    let mut results = Vec::new();
    for script in &scripts {
        let mut host = NodeHost::start(&work_dir("node", &script.name)).unwrap();
        let result = real::run_script(&mut host, script).await;
        host.stop();
        results.push((script.name.clone(), result));
    }
    report(results, "node").unwrap();
}

#[test]
fn every_script_checks_effects_and_awaits_what_it_sends() {
    use conformance::Step;
    for script in load_scripts(&scripts_dir()).unwrap() {
        let checks = script
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Http {
                        expect: Some(_),
                        ..
                    } | Step::Await { .. }
                        | Step::WsExpect { .. }
                        | Step::UpstreamSeen { .. }
                        | Step::UpstreamWsSeen { .. }
                        | Step::OaepDecrypt { .. }
                )
            })
            .count();
        assert!(checks > 0, "{} checks nothing", script.name);
        assert!(
            !script.about.is_empty(),
            "{} does not say what it proves",
            script.name
        );
        let sent: Vec<&String> = script
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Http { name: Some(n), .. } => Some(n),
                _ => None,
            })
            .collect();
        for name in sent {
            let awaited = script
                .steps
                .iter()
                .any(|s| matches!(s, Step::Await { name: n, .. } if n == name));
            assert!(awaited, "{}: request {name} is never awaited", script.name);
        }
    }
}
