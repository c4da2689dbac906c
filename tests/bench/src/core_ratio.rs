//! wasm/native ratio: the connector's sans-IO core driven natively (`TestEnv`, as
//! `guest/examples/core_bench.rs` does) against the built component inside an in-process
//! apphost, with the same event sequence: PBX AppWebsocket login, then `n` replicated user
//! rows (`ReplicateNextResult`). Only the rows are timed.
//!
//! Inside the host the frames are delivered straight into the instance's queue (no socket), so
//! the host side costs wasm execution plus what the host adds per event: the actor queue,
//! batching (up to 64 events per `handle`), the KV transaction and its durable commit. That is
//! "the core inside the host"; sockets are measured by the host-overhead row.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apphost::bindings::{Event, WsDirection, WsFrame, WsOpen};
use apphost::instance::WsHandle;
use apphost::ws_conn::WsCommand;
use microsoft365::event::{
    InboundRequest, InitInfo, WsDirection as NDirection, WsFrame as NFrame, WsOpen as NOpen,
};
use microsoft365::pbx::login::digest;
use microsoft365::testenv::TestEnv;
use microsoft365::{Connector, Event as NEvent};
use std::sync::atomic::Ordering;

use crate::hosted::{self, TempDir};
use crate::http::{self, client};
use crate::plan::Plan;
use crate::table::{Row, dur};

const DOMAIN: &str = "example.com";
const INSTANCE: &str = "m365";
const PASSWORD: &str = "pwd";
const INFO: &str = r#"{"appobj":"m365","appdn":"M365","appurl":"https://ap/example.com/m365/innovaphone-microsoft365","pbx":"master","cn":"M365","apps":[]}"#;

/// The frames both sides get, in order: after login, the PBX info, the replication start,
/// then one frame per user.
pub fn replication_frames(rows: u32) -> (Vec<String>, Vec<String>) {
    let setup = vec![
        r#"{"mt":"PbxInfo","pbx":"master","apis":["PbxApi","PbxTableUsers","PbxAdminApi"]}"#
            .to_string(),
        r#"{"api":"PbxTableUsers","mt":"ReplicateStartResult","src":"users","guid":"db","usn":1}"#
            .to_string(),
    ];
    let rows = (0..rows)
        .map(|i| {
            format!(
                r#"{{"api":"PbxTableUsers","mt":"ReplicateNextResult","src":"users","usn":{i},"columns":{{"guid":"{i:032x}","h323":"user{i}","cn":"User {i}","dn":"User {i}","e164":"{i}","loc":"master","emails":[{{"email":"user{i}@example.com"}}],"node":"root","hide":false}}}}"#
            )
        })
        .collect();
    (setup, rows)
}

fn login_frame(challenge: &str) -> String {
    let d = digest(
        "innovaphone-microsoft365",
        DOMAIN,
        "m365",
        "g",
        "M365",
        Some(INFO),
        challenge,
        PASSWORD,
    );
    format!(
        r#"{{"mt":"AppLogin","app":"innovaphone-microsoft365","domain":"{DOMAIN}","sip":"m365","guid":"g","dn":"M365","digest":"{d}","info":{INFO}}}"#
    )
}

fn challenge_of(frame: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    v["challenge"].as_str().map(str::to_string)
}

/// Users the connector's `/status` reports for the first PBX connection.
fn users_in_status(status: &serde_json::Value) -> u64 {
    status["pbx"][0]["users"].as_u64().unwrap_or(0)
}

/// Native: time per row and the users the core then reports.
pub fn native(rows: u32) -> Result<(Duration, u64)> {
    let (setup, frames) = replication_frames(rows);
    let mut env = TestEnv::new();
    let mut c = Connector::new();
    c.handle(&mut env, NEvent::Init(InitInfo::default_start()));
    c.handle(
        &mut env,
        NEvent::WsOpen(NOpen {
            id: 1,
            direction: NDirection::Inbound,
            path: "/".into(),
            headers: vec![],
            peer: "bench".into(),
        }),
    );
    let text = |t: &str| NEvent::WsMessage(1, NFrame::Text(t.to_string()));
    c.handle(&mut env, text(r#"{"mt":"AppChallenge"}"#));
    let challenge = env
        .sent_text(1)
        .iter()
        .find_map(|t| challenge_of(t))
        .context("native core sent no challenge")?;
    env.clear_sent();
    c.handle(&mut env, text(&login_frame(&challenge)));
    for f in &setup {
        c.handle(&mut env, text(f));
    }
    env.clear_sent();
    // Warm-up on a separate connection would change the state; instead, frames are prebuilt
    // and the loop only hands them over, as the host side does.
    let t = Instant::now();
    for f in frames {
        c.handle(&mut env, NEvent::WsMessage(1, NFrame::Text(f)));
        env.clear_sent();
    }
    let per_row = t.elapsed() / rows.max(1);
    c.handle(
        &mut env,
        NEvent::HttpRequest(
            1,
            InboundRequest {
                method: "GET".into(),
                path: "/status".into(),
                query: String::new(),
                headers: vec![],
                body: vec![],
                peer: "127.0.0.1:1".into(),
            },
        ),
    );
    let status = env
        .responses
        .last()
        .map(|(_, r)| serde_json::from_slice(&r.body).unwrap_or_default())
        .unwrap_or_default();
    Ok((per_row, users_in_status(&status)))
}

/// Inside an in-process apphost: time per row (delivery of the first row until the host has
/// handled the last) and the users the guest then reports over HTTP.
pub async fn in_host(rows: u32) -> Result<Hosted> {
    let dir = TempDir::new("core")?;
    let wasm = hosted::artifact("plugins/microsoft365.wasm")?;
    let config = hosted::prepare(&dir.0, &wasm, DOMAIN, INSTANCE, PASSWORD)?;
    let host = hosted::start(&config).await?;
    let result = drive(&host, rows).await;
    hosted::stop(host).await;
    result
}

async fn drive(host: &apphost::Host, rows: u32) -> Result<Hosted> {
    let ctx = host.instance(INSTANCE).context("instance missing")?;
    let (setup, frames) = replication_frames(rows);
    // A WebSocket without a socket: the guest's frames arrive on our channel.
    let id = ctx.next_id();
    let open = WsOpen {
        id,
        direction: WsDirection::Inbound,
        path: "/".into(),
        headers: vec![],
        peer: "bench".into(),
    };
    let (commands, mut sent) = tokio::sync::mpsc::unbounded_channel();
    ctx.websockets.lock().expect("websockets").insert(
        id,
        WsHandle {
            commands,
            open: open.clone(),
        },
    );
    ctx.deliver(Event::WsOpen(open));
    let text = |t: String| Event::WsMessage((id, WsFrame::Text(t)));
    ctx.deliver(text(r#"{"mt":"AppChallenge"}"#.into()));
    let challenge = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(cmd) = sent.recv().await {
            if let WsCommand::Text(t) = cmd
                && let Some(c) = challenge_of(&t)
            {
                return Some(c);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the guest sent no AppChallenge answer")?;
    ctx.deliver(text(login_frame(&challenge)));
    for f in setup {
        ctx.deliver(text(f));
    }
    let settled = |ctx: &apphost::instance::InstanceContext| {
        ctx.metrics.queue_depth.load(Ordering::Relaxed) <= 0
    };
    http::wait_for(Duration::from_secs(10), || settled(&ctx)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = ctx.metrics.events.load(Ordering::Relaxed);
    let batches_before = ctx.metrics.batches.load(Ordering::Relaxed);
    let target = before + u64::from(rows);

    let t = Instant::now();
    for f in frames {
        ctx.deliver(text(f));
    }
    // Drain the guest's answers meanwhile so the channel does not grow.
    let done = http::wait_for(Duration::from_secs(120), || {
        while sent.try_recv().is_ok() {}
        ctx.metrics.events.load(Ordering::Relaxed) >= target
    })
    .await;
    let elapsed = t.elapsed();
    let batches = ctx.metrics.batches.load(Ordering::Relaxed) - batches_before;
    if !done {
        bail!("the host handled only part of the rows within 120 s");
    }
    let url = format!("http://{}/{DOMAIN}/{INSTANCE}/status", host.http_addr);
    let (status, body) = http::get(&client(), &url).await?;
    if status != 200 {
        bail!("/status answered {status}");
    }
    let status: serde_json::Value = serde_json::from_slice(&body)?;
    // What the rows left in the store, to replay its commits on their own (see commit_cost).
    let stored = ctx.kv.scan_prefix(b"", None).collect::<Result<Vec<_>>>()?;
    Ok(Hosted {
        per_row: elapsed / rows.max(1),
        users: users_in_status(&status),
        batches,
        stored,
    })
}

/// The host's durable commits on their own: the entries the rows left in the store, written
/// into a fresh sled database (opened as the host opens it) in `batches` atomic batches, each
/// flushed, through the host's own `SledStore`. Returns the total time.
pub fn commit_cost(stored: &[apphost::kv::KvPair], batches: u64) -> Result<Duration> {
    use apphost::kv::{KvStore, SledStore};
    let dir = TempDir::new("commit")?;
    let db = sled::Config::new().path(dir.0.join("kv")).open()?;
    let store = SledStore::open(&db, INSTANCE)?;
    let per_batch = stored.len().div_ceil(batches.max(1) as usize).max(1);
    let t = Instant::now();
    for chunk in stored.chunks(per_batch) {
        store.apply_batch(
            chunk
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        )?;
        store.flush()?;
    }
    Ok(t.elapsed())
}

/// What a round inside the host measured.
#[derive(Debug, Clone)]
pub struct Hosted {
    /// Time per replicated row.
    pub per_row: Duration,
    /// Users the guest reports afterwards.
    pub users: u64,
    /// `handle` calls (each one transaction with a durable commit) the rows took.
    pub batches: u64,
    /// The store's entries afterwards.
    pub stored: Vec<apphost::kv::KvPair>,
}

/// The ratio row. Both sides must end with every user replicated, or the row fails.
pub async fn measure(plan: &Plan) -> Result<Vec<Row>> {
    let rows = plan.core_rows;
    // Warm-up of the native side (allocator, caches); the host side warms up in its login.
    let _ = tokio::task::spawn_blocking(move || native(rows.min(1_000))).await??;
    // Alternating rounds (native, host, ...); medians, since the machines are noisy.
    let (mut natives, mut hosts, mut batch_counts) = (Vec::new(), Vec::new(), Vec::new());
    let mut commit_times = Vec::new();
    let rounds = plan.core_rounds.max(1);
    for _ in 0..rounds {
        let (native_row, native_users) =
            tokio::task::spawn_blocking(move || native(rows)).await??;
        let hosted = in_host(rows).await?;
        if native_users != u64::from(rows) || hosted.users != u64::from(rows) {
            bail!(
                "replication incomplete: native {native_users}, in host {} of {rows} users",
                hosted.users
            );
        }
        let commits = tokio::task::spawn_blocking(move || {
            commit_cost(&hosted.stored, hosted.batches).map(|t| (t, hosted.stored.len()))
        })
        .await??;
        natives.push(native_row);
        hosts.push(hosted.per_row);
        batch_counts.push(hosted.batches);
        commit_times.push(commits);
    }
    commit_times.sort();
    let (commit_total, entries) = commit_times[rounds / 2];
    let commit_per_event = commit_total / rows.max(1);
    batch_counts.sort();
    let batches = batch_counts[rounds / 2];
    natives.sort();
    hosts.sort();
    let (native_row, host_row) = (natives[rounds / 2], hosts[rounds / 2]);
    let ratio = host_row.as_secs_f64() / native_row.as_secs_f64();
    Ok(vec![Row::check(
        "wasm/native: guest core inside apphost ÷ native core",
        format!(
            "{ratio:.2}x ({} vs {} per event)",
            dur(host_row),
            dur(native_row)
        ),
        "<= 2x",
        ratio <= 2.0,
        &format!(
            "PBX login + {rows} replicated user rows, median of {rounds} alternating rounds; native `TestEnv` vs `plugins/microsoft365.wasm` in apphost (events queued directly, batches, KV commit included); the host needed {batches} `handle` calls, {:.1} events per transaction and durable commit. Split: the same commits replayed alone ({entries} stored entries in {batches} sled batches, each flushed) cost {} per event, so wasm execution + queue ≈ {} per event = {:.2}x native",
            f64::from(rows) / batches.max(1) as f64,
            dur(commit_per_event),
            dur(host_row.saturating_sub(commit_per_event)),
            host_row.saturating_sub(commit_per_event).as_secs_f64() / native_row.as_secs_f64()
        ),
    )])
}
