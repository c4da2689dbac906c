//! Start-up: from `Host::start` (config already parsed, in-process, so process exec is not
//! included) to the first answered request (`GET /status` of the connector guest), with an empty
//! data directory (Cranelift compiles the component) and with a data directory holding the
//! precompiled artifact from an earlier start (the host loads the `.cwasm`). Median of several.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::hosted::{self, TempDir};
use crate::http::{self, client};
use crate::plan::Plan;
use crate::table::{Row, dur};

const DOMAIN: &str = "example.com";
const INSTANCE: &str = "m365";

async fn cold_start(dir: &Path) -> Result<Duration> {
    let wasm = hosted::artifact("plugins/microsoft365.wasm")?;
    let config = hosted::prepare(dir, &wasm, DOMAIN, INSTANCE, "pwd")?;
    let config = apphost::HostConfig::load(&config)?;
    let t = Instant::now();
    let host = apphost::Host::start(config).await?;
    let url = format!("http://{}/{DOMAIN}/{INSTANCE}/status", host.http_addr);
    // A fresh client: connecting is part of serving the first request.
    let (status, _) = http::get(&client(), &url).await?;
    let took = t.elapsed();
    hosted::stop(host).await;
    if status != 200 {
        bail!("first request answered {status}");
    }
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// The two start-up rows.
pub async fn measure(plan: &Plan) -> Result<Vec<Row>> {
    let runs = plan.startup_runs.max(1);
    let mut compile = Vec::new();
    let seed = TempDir::new("startup-seed")?;
    // The first start fills the cache the cached runs copy; it also warms the page cache.
    cold_start(&seed.0).await?;
    let cache = seed.0.join("data/compiled");
    if !cache.is_dir() {
        bail!("no precompiled cache at {}", cache.display());
    }
    let mut cached = Vec::new();
    for _ in 0..runs {
        let dir = TempDir::new("startup-compile")?;
        compile.push(cold_start(&dir.0).await?);
        let dir = TempDir::new("startup-cached")?;
        copy_dir(&cache, &dir.0.join("data/compiled"))?;
        cached.push(cold_start(&dir.0).await?);
    }
    let (compile, cached) = (median(compile), median(cached));
    let how = format!(
        "in-process `Host::start` -> first `GET /status` answered, connector guest, median of {runs}"
    );
    Ok(vec![
        Row::check(
            "cold start with precompiled cache",
            dur(cached),
            "<= 100 ms",
            cached <= Duration::from_millis(100),
            &how,
        ),
        Row::info(
            "cold start without cache (compiles)",
            dur(compile),
            "— (reference)",
            &how,
        ),
    ])
}
