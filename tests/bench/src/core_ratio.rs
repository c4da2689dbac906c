//! wasm/native ratio: the connector's sans-IO core driven natively against the built
//! component inside an in-process apphost, with the same event sequence: PBX AppWebsocket
//! login, then `n` replicated user rows (`ReplicateNextResult`). Only the rows are timed.
//!
//! The native core runs twice: on `TestEnv` (in-memory KV, as `guest/examples/core_bench.rs`
//! does) and on [`DurableEnv`], the host's own KV code (transaction overlay, sled store, one
//! atomic batch + flush per 64 events). The second does the same work as the host minus wasm,
//! so the ratio is judged against it; the in-memory figure is shown next to it.
//!
//! Inside the host the frames are delivered straight into the instance's queue (no socket), so
//! the host side costs wasm execution plus what the host adds per event: the actor queue,
//! batching (up to 64 events per `handle`), the KV transaction and its durable commit. That is
//! "the core inside the host"; sockets are measured by the host-overhead row.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apphost::bindings::{Event, WsFrame};
use apphost::instance::GUEST_KV_PREFIX;
use apphost::kv::{KvStore, SledStore};
use apphost::transaction::Transaction;
use apphost::ws_conn::WsCommand;
use microsoft365::env::{Env, KeyError, Level, OaepHash, Page, PublicKey};
use microsoft365::event::{
    Header, HttpRequest, HttpResponse, InboundRequest, InitInfo, RequestId, TimerId,
    WsDirection as NDirection, WsFrame as NFrame, WsId, WsOpen as NOpen,
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

/// Time per event of one side: wall clock, and CPU time of the whole process (every thread:
/// actor, sled's flusher, the bench's own polling), which noise from other processes on a
/// shared machine does not inflate as much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PerEvent {
    /// CPU time per event (first, so that sorting picks the CPU median).
    pub cpu: Duration,
    /// Wall-clock time per event.
    pub wall: Duration,
}

/// CPU time this process has used so far: user + system, all threads (also ended ones),
/// from `getrusage`, which Linux derives from the scheduler's nanosecond clock (unlike the
/// 10 ms ticks of `/proc/self/stat`).
pub fn process_cpu() -> Duration {
    #[repr(C)]
    struct Timeval {
        sec: i64,
        usec: i64,
    }
    #[repr(C)]
    struct Rusage {
        utime: Timeval,
        stime: Timeval,
        rest: [i64; 14],
    }
    unsafe extern "C" {
        fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    }
    const RUSAGE_SELF: i32 = 0;
    let mut usage = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        rest: [0; 14],
    };
    // SAFETY: `usage` is a writable struct laid out as Linux x86_64/aarch64 `struct rusage`.
    if unsafe { getrusage(RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: &Timeval| t.sec as u64 * 1_000_000 + t.usec as u64;
    Duration::from_micros(micros(&usage.utime) + micros(&usage.stime))
}

/// A timed window: wall clock and process CPU.
struct Window(Instant, Duration);

impl Window {
    fn start() -> Window {
        Window(Instant::now(), process_cpu())
    }
    fn per_event(&self, events: u32) -> PerEvent {
        let n = events.max(1);
        PerEvent {
            cpu: process_cpu().saturating_sub(self.1) / n,
            wall: self.0.elapsed() / n,
        }
    }
}

/// Native on `TestEnv` (in-memory KV): time per row and the users the core then reports.
pub fn native(rows: u32) -> Result<(PerEvent, u64)> {
    native_on(rows, &mut TestEnv::new())
}

/// Native on the host's store ([`DurableEnv`]): time per row and the users then reported.
pub fn native_durable(rows: u32) -> Result<(PerEvent, u64)> {
    native_on(rows, &mut DurableEnv::open()?)
}

fn native_on<H: NativeHost>(rows: u32, env: &mut H) -> Result<(PerEvent, u64)> {
    let (setup, frames) = replication_frames(rows);
    let mut c = Connector::new();
    c.handle(env, NEvent::Init(InitInfo::default_start()));
    c.handle(
        env,
        NEvent::WsOpen(NOpen {
            id: 1,
            direction: NDirection::Inbound,
            path: "/".into(),
            headers: vec![],
            peer: "bench".into(),
        }),
    );
    let text = |t: &str| NEvent::WsMessage(1, NFrame::Text(t.to_string()));
    c.handle(env, text(r#"{"mt":"AppChallenge"}"#));
    let challenge = env
        .test()
        .sent_text(1)
        .iter()
        .find_map(|t| challenge_of(t))
        .context("native core sent no challenge")?;
    env.test().clear_sent();
    c.handle(env, text(&login_frame(&challenge)));
    for f in &setup {
        c.handle(env, text(f));
    }
    env.finish()?;
    env.test().clear_sent();
    // Warm-up on a separate connection would change the state; instead, frames are prebuilt
    // and the loop only hands them over, as the host side does.
    let t = Window::start();
    for f in frames {
        c.handle(env, NEvent::WsMessage(1, NFrame::Text(f)));
        env.test().clear_sent();
        env.event_done()?;
    }
    env.finish()?;
    let per_row = t.per_event(rows);
    c.handle(
        env,
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
        .test()
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
    // BENCH_CONNECTOR_WASM measures another build of the connector (e.g. other opt-levels).
    let wasm = match std::env::var_os("BENCH_CONNECTOR_WASM") {
        Some(path) => std::path::PathBuf::from(path),
        None => hosted::artifact("plugins/microsoft365.wasm")?,
    };
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
    let (id, mut sent) = hosted::open_socketless_websocket(&ctx);
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

    let t = Window::start();
    for f in frames {
        ctx.deliver(text(f));
    }
    // Drain the guest's answers meanwhile so the channel does not grow.
    let done = http::wait_for(Duration::from_secs(120), || {
        while sent.try_recv().is_ok() {}
        ctx.metrics.events.load(Ordering::Relaxed) >= target
    })
    .await;
    if !done {
        bail!("the host handled only part of the rows within 120 s");
    }
    // The counter moves when a batch starts; `/status` queues behind the last batch, so its
    // answer is the moment every row has been handled and committed (one event more).
    let url = format!("http://{}/{DOMAIN}/{INSTANCE}/status", host.http_addr);
    let (status, body) = http::get(&client(), &url).await?;
    let per_row = t.per_event(rows);
    let batches = ctx.metrics.batches.load(Ordering::Relaxed) - batches_before - 1;
    if status != 200 {
        bail!("/status answered {status}");
    }
    let status: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(Hosted {
        per_row,
        users: users_in_status(&status),
        batches,
    })
}

/// What a round inside the host measured.
#[derive(Debug, Clone)]
pub struct Hosted {
    /// Time per replicated row.
    pub per_row: PerEvent,
    /// Users the guest reports afterwards.
    pub users: u64,
    /// `handle` calls (each one transaction with a durable commit) the rows took.
    pub batches: u64,
}

/// The ratio row. Every side must end with every user replicated, or the row fails.
pub async fn measure(plan: &Plan) -> Result<Vec<Row>> {
    let rows = plan.core_rows;
    // Warm-up of the native side (allocator, caches); the host side warms up in its login.
    let _ = tokio::task::spawn_blocking(move || native(rows.min(1_000))).await??;
    // Alternating rounds (native in memory, native on the store, host, ...); medians, since
    // the machines are noisy.
    let (mut natives, mut durables, mut hosts, mut batch_counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let rounds = plan.core_rounds.max(1);
    for _ in 0..rounds {
        let (native_row, native_users) =
            tokio::task::spawn_blocking(move || native(rows)).await??;
        let (durable_row, durable_users) =
            tokio::task::spawn_blocking(move || native_durable(rows)).await??;
        let hosted = in_host(rows).await?;
        let all = u64::from(rows);
        if native_users != all || durable_users != all || hosted.users != all {
            bail!(
                "replication incomplete: native {native_users}, native on the store {durable_users}, in host {} of {rows} users",
                hosted.users
            );
        }
        natives.push(native_row);
        durables.push(durable_row);
        hosts.push(hosted.per_row);
        batch_counts.push(hosted.batches);
    }
    // Medians of each measure on its own.
    let median = |v: &[PerEvent], f: fn(&PerEvent) -> Duration| {
        let mut m: Vec<Duration> = v.iter().map(f).collect();
        m.sort();
        m[rounds / 2]
    };
    let cpu = |v: &[PerEvent]| median(v, |p| p.cpu);
    let wall = |v: &[PerEvent]| median(v, |p| p.wall);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-12);
    batch_counts.sort();
    let batches = batch_counts[rounds / 2];
    let cpu_ratio = ratio(cpu(&hosts), cpu(&durables));
    Ok(vec![Row::check(
        "wasm/native: guest core inside apphost ÷ native core on the same store (CPU per event)",
        format!(
            "{cpu_ratio:.2}x ({} vs {} CPU per event); wall clock {:.2}x ({} vs {}); ÷ native on in-memory KV: {:.2}x CPU ({})",
            dur(cpu(&hosts)),
            dur(cpu(&durables)),
            ratio(wall(&hosts), wall(&durables)),
            dur(wall(&hosts)),
            dur(wall(&durables)),
            ratio(cpu(&hosts), cpu(&natives)),
            dur(cpu(&natives)),
        ),
        "<= 2x",
        cpu_ratio <= 2.0,
        &format!(
            "PBX login + {rows} replicated user rows, medians of {rounds} alternating rounds, same frames and the same final user count on every side; CPU = user + system time of the whole bench process over the timed window (all threads: actor, sled flusher, the bench's polling), judged because other processes on a shared machine inflate wall clock. In host: `plugins/microsoft365.wasm` in apphost, events queued directly (no socket), {batches} `handle` calls ({:.1} events per transaction), each committed as one sled batch + flush, timed until a `/status` queued behind the rows is answered. Native on the same store: the core compiled natively, its KV through the host's own transaction overlay and sled store, one batch + flush per {NATIVE_EVENTS_PER_COMMIT} events, log filter `info` as in the host. Native in memory: `TestEnv` (BTreeMap KV, every log line recorded); the store costs the native core ≈ {} CPU per event",
            f64::from(rows) / batches.max(1) as f64,
            dur(cpu(&durables).saturating_sub(cpu(&natives))),
        ),
    )])
}

/// The native core on the host's own store: KV through the host's [`Transaction`] overlay
/// over its sled [`SledStore`] (same `k/` key prefix as the host), committed as the host
/// commits (one atomic batch, then a flush) every [`NATIVE_EVENTS_PER_COMMIT`] events.
/// Everything else is [`TestEnv`]; log lines below `info` are disabled, as in the host.
pub struct DurableEnv {
    /// Effects, settings, clock.
    pub test: TestEnv,
    store: SledStore,
    tx: Transaction,
    events_since_commit: usize,
    /// Commits so far (each one batch and one flush).
    pub commits: u64,
    _dir: TempDir,
}

/// Events per durable commit on the native side: the host's largest batch, which the host
/// reaches while rows are queued faster than it handles them (its average is in the row).
pub const NATIVE_EVENTS_PER_COMMIT: usize = 64;

impl DurableEnv {
    /// A fresh sled database in a private directory, opened as the host opens it.
    pub fn open() -> Result<DurableEnv> {
        let dir = TempDir::new("native-kv")?;
        let db = sled::Config::new().path(dir.0.join("kv")).open()?;
        Ok(DurableEnv {
            test: TestEnv::new(),
            store: SledStore::open(&db, INSTANCE)?,
            tx: Transaction::default(),
            events_since_commit: 0,
            commits: 0,
            _dir: dir,
        })
    }

    /// Commits the buffered writes as the host does: one atomic batch, then a flush.
    pub fn commit(&mut self) -> Result<()> {
        self.events_since_commit = 0;
        let tx = std::mem::take(&mut self.tx);
        if tx.has_writes() {
            let (writes, _) = tx.into_parts();
            self.store.apply_batch(writes)?;
            self.store.flush()?;
            self.commits += 1;
        }
        Ok(())
    }

    fn key(key: &str) -> Vec<u8> {
        [GUEST_KV_PREFIX, key.as_bytes()].concat()
    }
}

/// What the native driver needs besides [`Env`]: the recorded effects, and a hook after
/// every event (where the durable variant commits).
pub trait NativeHost: Env {
    /// The recording part.
    fn test(&mut self) -> &mut TestEnv;
    /// Called after each event.
    fn event_done(&mut self) -> Result<()>;
    /// Called after the last timed event.
    fn finish(&mut self) -> Result<()>;
}

impl NativeHost for TestEnv {
    fn test(&mut self) -> &mut TestEnv {
        self
    }
    fn event_done(&mut self) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl NativeHost for DurableEnv {
    fn test(&mut self) -> &mut TestEnv {
        &mut self.test
    }
    fn event_done(&mut self) -> Result<()> {
        self.events_since_commit += 1;
        if self.events_since_commit >= NATIVE_EVENTS_PER_COMMIT {
            self.commit()?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.commit()
    }
}

impl Env for DurableEnv {
    fn now_ms(&self) -> u64 {
        self.test.now_ms()
    }
    fn random_u64(&mut self) -> u64 {
        self.test.random_u64()
    }
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.tx
            .get(&self.store, &Self::key(key))
            .expect("sled read")
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) {
        self.tx.put(Self::key(key), Some(value.to_vec()));
    }
    fn kv_delete(&mut self, key: &str) {
        self.tx.put(Self::key(key), None);
    }
    fn kv_cas(&mut self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
        self.tx
            .cas(
                &self.store,
                &Self::key(key),
                expected,
                new.map(<[u8]>::to_vec),
            )
            .expect("sled read")
    }
    fn kv_scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Page {
        let after = cursor.map(Self::key);
        let limit = (limit as usize).clamp(1, 10_000);
        let (entries, more) = self
            .tx
            .scan(&self.store, &Self::key(prefix), after.as_deref(), limit)
            .expect("sled scan");
        let entries: Vec<(String, Vec<u8>)> = entries
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[GUEST_KV_PREFIX.len()..]).into_owned(),
                    v,
                )
            })
            .collect();
        let next = if more {
            entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Page { entries, next }
    }
    fn http_start(&mut self, req: HttpRequest) -> RequestId {
        self.test.http_start(req)
    }
    fn http_cancel(&mut self, id: RequestId) {
        self.test.http_cancel(id)
    }
    fn respond(&mut self, id: u64, resp: HttpResponse) -> bool {
        self.test.respond(id, resp)
    }
    fn ws_connect(&mut self, url: &str, headers: &[Header]) -> WsId {
        self.test.ws_connect(url, headers)
    }
    fn ws_send(&mut self, id: WsId, frame: NFrame) -> bool {
        self.test.ws_send(id, frame)
    }
    fn ws_close(&mut self, id: WsId, code: u16, reason: &str) {
        self.test.ws_close(id, code, reason)
    }
    fn timer_set(&mut self, after_ms: u64, tag: &str) -> TimerId {
        self.test.timer_set(after_ms, tag)
    }
    fn timer_cancel(&mut self, id: TimerId) {
        self.test.timer_cancel(id)
    }
    fn key_generate_rsa(&mut self, name: &str, bits: u32) -> Result<(), KeyError> {
        self.test.key_generate_rsa(name, bits)
    }
    fn key_exists(&mut self, name: &str) -> bool {
        self.test.key_exists(name)
    }
    fn key_delete(&mut self, name: &str) {
        self.test.key_delete(name)
    }
    fn key_public_der(&mut self, name: &str) -> Result<Vec<u8>, KeyError> {
        self.test.key_public_der(name)
    }
    fn key_self_signed_certificate(
        &mut self,
        name: &str,
        common_name: &str,
        days: u32,
    ) -> Result<Vec<u8>, KeyError> {
        self.test
            .key_self_signed_certificate(name, common_name, days)
    }
    fn key_rsa_oaep_decrypt(
        &mut self,
        name: &str,
        hash: OaepHash,
        ciphertexts: &[Vec<u8>],
    ) -> Result<Vec<Result<Vec<u8>, KeyError>>, KeyError> {
        self.test.key_rsa_oaep_decrypt(name, hash, ciphertexts)
    }
    fn key_sign_rs256(&mut self, name: &str, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.test.key_sign_rs256(name, data)
    }
    fn key_verify_rs256(&mut self, key: &PublicKey, data: &[u8], signature: &[u8]) -> bool {
        self.test.key_verify_rs256(key, data, signature)
    }
    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.test.seal(plaintext)
    }
    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.test.unseal(sealed)
    }
    fn config_get(&mut self, name: &str) -> Option<String> {
        self.test.config_get(name)
    }
    fn config_all(&mut self) -> Vec<(String, String)> {
        self.test.config_all()
    }
    fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], delta: u64) {
        self.test.counter_add(name, labels, delta)
    }
    fn gauge_set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.test.gauge_set(name, labels, value)
    }
    fn log(&mut self, level: Level, target: &str, message: &str) {
        if self.log_enabled(level, target) {
            self.test.log(level, target, message)
        }
    }
    fn log_enabled(&mut self, level: Level, _target: &str) -> bool {
        // The host's default filter (`info`), not TestEnv's "everything".
        level >= Level::Info
    }
}
