//! Host overhead: requests/s of a trivial guest handler (test guest `GET /hello` through an
//! in-process apphost: HTTP parse, queue hop to the instance actor, one wasm `handle` call,
//! transaction commit, response) against a plain hyper handler answering the same body, with
//! the same client and concurrency on the same runtime. Ratio = plain / guest.

use anyhow::Result;

use crate::hosted::{self, TempDir};
use crate::http::{self, client, requests_per_sec};
use crate::plan::Plan;
use crate::table::{Row, thousands};

/// Measures both sides, alternating guest and plain twice to spread machine noise.
pub async fn measure(plan: &Plan) -> Result<Vec<Row>> {
    let dir = TempDir::new("overhead")?;
    let wasm = hosted::artifact("tests/artifacts/test-guest-v1.wasm")?;
    let config = hosted::prepare(&dir.0, &wasm, "bench", "t", "pw")?;
    let host = hosted::start(&config).await?;
    let guest_url = format!("http://{}/bench/t/hello", host.http_addr);
    let plain_url = format!("http://{}/", http::plain_hyper("test-guest v1").await?);
    let client = client();
    let (n, c) = (plan.http_requests, plan.clients);

    // Warm-up: connections, caches, the guest's first calls.
    requests_per_sec(&client, &guest_url, n / 4, c).await?;
    requests_per_sec(&client, &plain_url, n / 4, c).await?;
    let mut guest = 0.0;
    let mut plain = 0.0;
    for _ in 0..2 {
        guest += requests_per_sec(&client, &guest_url, n / 2, c).await?;
        plain += requests_per_sec(&client, &plain_url, n / 2, c).await?;
    }
    let (guest, plain) = (guest / 2.0, plain / 2.0);
    hosted::stop(host).await;
    let ratio = plain / guest;
    Ok(vec![Row::check(
        "host overhead: plain hyper req/s ÷ guest req/s",
        format!(
            "{ratio:.2}x (guest {} /s, plain hyper {} /s)",
            thousands(guest),
            thousands(plain)
        ),
        "<= 2x",
        ratio <= 2.0,
        &format!(
            "test guest `GET /hello` via in-process apphost vs plain hyper, {c} keep-alive clients, {n} requests each side after warm-up, client in the same process"
        ),
    )])
}
