//! One actor per instance: a dedicated thread owns the guest's `Store`, takes events from a
//! channel in batches, runs each batch as one transaction, commits it, performs its effects,
//! retries trapped events on fresh guests, dead-letters what keeps failing, and swaps guests.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use wasmtime::Store;

use crate::bindings::{
    Connector, Event, HttpResponse, InitInfo, InitReason, WsClosed, WsDirection, WsFrame, WsOpen,
};
use crate::client::OutboundClient;
use crate::config::InstanceConfig;
use crate::engine::{EPOCH_TICK, Plugin, Runtime, api_compatible};
use crate::guest_state::GuestState;
use crate::keys::{KeyCache, MasterKey};
use crate::kv::KvStore;
use crate::metrics::InstanceMetrics;
use crate::transaction::{Effect, Transaction};
use crate::ws_conn::WsCommand;

/// Most events handed to one `handle` call.
const MAX_BATCH: usize = 64;
/// Attempts per event before it is dead-lettered.
const MAX_ATTEMPTS: u32 = 3;

/// Key prefix of guest KV entries inside the instance's tree.
pub const GUEST_KV_PREFIX: &[u8] = b"k/";
/// Key prefix of sealed private keys inside the instance's tree.
pub const RSA_KEY_PREFIX: &[u8] = b"rsa/";

/// What the actor thread is asked to do.
pub enum Command {
    /// Deliver an event.
    Event(Event),
    /// Replace the guest between two events with one prepared off the actor; answers with
    /// the new version.
    Swap(Box<Prepared>, oneshot::Sender<Result<String>>),
    /// Stop the actor.
    Shutdown,
}

/// A new guest, instantiated and checked (contract version, `version()`) while the old one
/// kept serving, so that the switch itself is only snapshot, `init` and the exchange.
pub struct Prepared {
    live: Live,
    plugin: Arc<Plugin>,
}

/// An open WebSocket, owned by the host.
pub struct WsHandle {
    /// Frames and close requests to the connection's task.
    pub commands: mpsc::UnboundedSender<WsCommand>,
    /// How it was opened (re-announced to new guests in `init`).
    pub open: WsOpen,
}

/// Status shown by the control listener.
#[derive(Clone, Default, serde::Serialize)]
pub struct Status {
    /// The running guest's `version()`.
    pub version: String,
    /// SHA-256 of the running component.
    pub wasm_sha256: String,
    /// `running`, `restarting` or `failed`.
    pub state: String,
    /// The last swap or restart problem, if any.
    pub last_error: Option<String>,
    /// How long the last hot swap held events back on the actor (old guest's snapshot, new
    /// guest's `init` and its commit), in microseconds; `None` before the first swap.
    pub last_switch_us: Option<u64>,
}

/// Everything of one instance that both the actor and the async side use.
pub struct InstanceContext {
    /// The instance's configuration.
    pub config: InstanceConfig,
    /// The instance's tree.
    pub kv: Arc<dyn KvStore>,
    dead_letters: sled::Tree,
    /// Host master key (sealing).
    pub master: Arc<MasterKey>,
    /// Parsed private keys.
    pub key_cache: KeyCache,
    next_id: std::sync::atomic::AtomicU64,
    /// Inbound requests waiting for `respond`.
    pub pending_inbound: Mutex<HashMap<u64, oneshot::Sender<HttpResponse>>>,
    /// Open WebSockets.
    pub websockets: Mutex<HashMap<u64, WsHandle>>,
    /// Outgoing requests in flight.
    pub outbound: Mutex<HashMap<u64, AbortHandle>>,
    /// Armed timers.
    pub timers: Mutex<HashMap<u64, AbortHandle>>,
    commands: Sender<Command>,
    /// The engine guests of this instance run on (swaps instantiate off the actor).
    engine: wasmtime::Engine,
    /// Counters.
    pub metrics: InstanceMetrics,
    /// Where async work of this instance runs.
    pub runtime: tokio::runtime::Handle,
    /// Outbound HTTP and WebSocket client with this instance's allow-list.
    pub client: OutboundClient,
    /// Status for the control listener.
    pub status: Mutex<Status>,
}

impl InstanceContext {
    /// A fresh host-owned id (requests, sockets, timers, inbound requests share one sequence).
    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues an event for the guest.
    pub fn deliver(&self, event: Event) {
        self.metrics
            .queue_depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.commands.send(Command::Event(event)).is_err() {
            self.metrics
                .queue_depth
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Instantiates `plugin` on a blocking thread while the old guest keeps serving, then asks
    /// the actor to switch to it between two events and waits for the outcome.
    pub async fn swap(self: &Arc<Self>, plugin: Arc<Plugin>) -> Result<String> {
        let ctx = self.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            instantiate(&ctx.engine, &ctx, &plugin).map(|live| Prepared { live, plugin })
        })
        .await
        .map_err(|e| anyhow!("preparing the new guest panicked: {e}"))?;
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let name = &self.config.name;
                tracing::error!(instance = %name, error = %format!("{e:#}"), "swap rejected; the old guest keeps serving");
                self.status.lock().expect("status").last_error =
                    Some(format!("swap rejected: {e:#}"));
                return Err(e);
            }
        };
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Swap(Box::new(prepared), tx))
            .map_err(|_| anyhow!("instance is stopped"))?;
        rx.await
            .map_err(|_| anyhow!("instance stopped during swap"))?
    }

    /// Stops the actor after the events already queued.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// WebSockets that are open now.
    pub fn open_websockets(&self) -> Vec<WsOpen> {
        let mut open: Vec<WsOpen> = self
            .websockets
            .lock()
            .expect("websockets")
            .values()
            .map(|h| h.open.clone())
            .collect();
        open.sort_by_key(|o| o.id);
        open
    }

    fn answer(&self, id: u64, response: HttpResponse) {
        if let Some(tx) = self.pending_inbound.lock().expect("inbound").remove(&id) {
            let _ = tx.send(response);
        }
    }

    /// Answers an inbound request with a plain-text error (when its event failed).
    pub fn answer_error(&self, id: u64, status: u16, text: &str) {
        self.answer(
            id,
            HttpResponse {
                status,
                headers: vec![crate::bindings::Header {
                    name: "content-type".into(),
                    value: "text/plain; charset=utf-8".into(),
                }],
                body: text.as_bytes().to_vec(),
            },
        );
    }
}

/// Builds an instance context and starts its actor; returns once the guest answered `init`.
pub fn start(
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    config: InstanceConfig,
    db: &sled::Db,
    master: Arc<MasterKey>,
    handle: tokio::runtime::Handle,
) -> Result<Arc<InstanceContext>> {
    let tree_name = format!("instance/{}", config.name);
    let kv: Arc<dyn KvStore> = Arc::new(crate::kv::SledStore::open(db, &tree_name)?);
    let client = OutboundClient::new(&config)?;
    let (commands, receiver) = std::sync::mpsc::channel();
    let ctx = Arc::new(InstanceContext {
        kv,
        dead_letters: db.open_tree(format!("deadletter/{}", config.name))?,
        master,
        key_cache: KeyCache::default(),
        next_id: std::sync::atomic::AtomicU64::new(1),
        pending_inbound: Mutex::default(),
        websockets: Mutex::default(),
        outbound: Mutex::default(),
        timers: Mutex::default(),
        commands,
        engine: runtime.engine.clone(),
        metrics: InstanceMetrics::default(),
        runtime: handle,
        client,
        status: Mutex::default(),
        config,
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let actor_ctx = ctx.clone();
    std::thread::Builder::new()
        .name(format!("actor-{}", ctx.config.name))
        .spawn(move || {
            let mut actor = Actor {
                ctx: actor_ctx,
                runtime,
                plugin,
                live: None,
                stash: None,
                restart_failures: 0,
                next_restart: Instant::now(),
                last_version: None,
            };
            let first = actor.instantiate_and_init(InitInfo {
                reason: InitReason::Start,
                from_version: None,
                snapshot: None,
                open_websockets: Vec::new(),
            });
            let ok = first.is_ok();
            let _ = ready_tx.send(first.map(|live| actor.live = Some(live)));
            if ok {
                actor.run(receiver);
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("instance actor died during start"))?
        .with_context(|| format!("starting instance {}", ctx.config.name))?;
    Ok(ctx)
}

/// A guest instance that is alive.
struct Live {
    store: Store<GuestState>,
    guest: Connector,
    version: String,
}

/// How one `handle` call ended.
enum Outcome {
    Committed,
    Refused(String),
    Trapped(anyhow::Error),
}

struct Actor {
    ctx: Arc<InstanceContext>,
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    live: Option<Live>,
    /// A command taken off the queue while filling a batch, handled next.
    stash: Option<Command>,
    restart_failures: u32,
    next_restart: Instant,
    last_version: Option<String>,
}

impl Actor {
    fn run(&mut self, receiver: Receiver<Command>) {
        loop {
            let command = match self.stash.take() {
                Some(c) => c,
                None => match receiver.recv_timeout(Duration::from_secs(1)) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            match command {
                Command::Shutdown => return,
                Command::Swap(prepared, done) => {
                    let _ = done.send(self.swap(*prepared));
                }
                Command::Event(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(Command::Event(e)) => batch.push(e),
                            Ok(other) => {
                                self.stash = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.ctx
                        .metrics
                        .queue_depth
                        .fetch_sub(batch.len() as i64, std::sync::atomic::Ordering::Relaxed);
                    self.process(batch);
                }
            }
        }
    }

    fn process(&mut self, batch: Vec<Event>) {
        if !self.ensure_live() {
            for event in batch {
                self.dead_letter(event, "instance is down");
            }
            return;
        }
        let single = batch.len() == 1;
        // Lent, not cloned: the batch is only needed again when it has to be retried.
        match self.call(&batch) {
            Outcome::Committed => {}
            Outcome::Refused(reason) if single => {
                tracing::warn!(instance = %self.ctx.config.name, %reason, "guest refused an event; discarded");
                fail_inbound(&self.ctx, &batch[0], "the instance refused the request");
            }
            Outcome::Refused(_) => {
                for event in batch {
                    self.retry_alone(event, 0);
                }
            }
            Outcome::Trapped(_) if single => {
                let event = batch.into_iter().next().expect("single");
                self.retry_alone(event, 1);
            }
            Outcome::Trapped(_) => {
                for event in batch {
                    self.retry_alone(event, 0);
                }
            }
        }
    }

    /// Runs one event on its own, on fresh guests after traps, until it commits or gives up.
    fn retry_alone(&mut self, event: Event, mut attempts: u32) {
        while attempts < MAX_ATTEMPTS {
            if !self.ensure_live() {
                break;
            }
            match self.call(std::slice::from_ref(&event)) {
                Outcome::Committed => return,
                Outcome::Refused(reason) => {
                    tracing::warn!(instance = %self.ctx.config.name, %reason, "guest refused an event; discarded");
                    fail_inbound(&self.ctx, &event, "the instance refused the request");
                    return;
                }
                Outcome::Trapped(_) => attempts += 1,
            }
        }
        self.dead_letter(event, "trapped on every attempt");
    }

    /// Makes sure a guest is alive, restarting from KV (with back-off) after a trap.
    fn ensure_live(&mut self) -> bool {
        if self.live.is_some() {
            return true;
        }
        if Instant::now() < self.next_restart {
            return false;
        }
        let info = InitInfo {
            reason: InitReason::Restart,
            from_version: None,
            snapshot: None,
            open_websockets: self.ctx.open_websockets(),
        };
        match self.instantiate_and_init(info) {
            Ok(live) => {
                self.restart_failures = 0;
                self.live = Some(live);
                true
            }
            Err(e) => {
                // Back off so that a guest whose init always traps cannot spin the CPU.
                self.restart_failures += 1;
                let delay = Duration::from_millis(100 << self.restart_failures.min(8));
                self.next_restart = Instant::now() + delay;
                tracing::error!(instance = %self.ctx.config.name, error = %format!("{e:#}"), ?delay, "guest restart failed");
                self.set_status("failed", Some(format!("{e:#}")));
                false
            }
        }
    }

    fn instantiate(&self, plugin: &Plugin) -> Result<Live> {
        instantiate(&self.runtime.engine, &self.ctx, plugin)
    }

    fn instantiate_and_init(&mut self, info: InitInfo) -> Result<Live> {
        let plugin = self.plugin.clone();
        let mut live = self.instantiate(&plugin)?;
        self.init(&mut live, info)?;
        self.last_version = Some(live.version.clone());
        *self.ctx.status.lock().expect("status") = Status {
            version: live.version.clone(),
            wasm_sha256: plugin.wasm_sha256.clone(),
            state: "running".into(),
            last_error: None,
            last_switch_us: None,
        };
        Ok(live)
    }

    fn init(&mut self, live: &mut Live, info: InitInfo) -> Result<()> {
        let reason = format!("{:?}", info.reason);
        match self.call_on(live, &[Event::Init(info)]) {
            Outcome::Committed => {
                tracing::info!(instance = %self.ctx.config.name, version = %live.version, %reason, "guest initialised");
                Ok(())
            }
            Outcome::Refused(r) => bail!("init refused: {r}"),
            Outcome::Trapped(e) => Err(e.context("init trapped")),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        deadline_ticks(&self.ctx.config)
    }

    /// Runs a batch on the live guest; a trap drops the guest.
    fn call(&mut self, events: &[Event]) -> Outcome {
        let mut live = self.live.take().expect("live guest");
        let outcome = self.call_on(&mut live, events);
        if !matches!(outcome, Outcome::Trapped(_)) {
            self.live = Some(live);
        }
        outcome
    }

    fn call_on(&self, live: &mut Live, events: &[Event]) -> Outcome {
        let metrics = &self.ctx.metrics;
        metrics
            .events
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        metrics
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        live.store.data_mut().tx = Transaction::default();
        live.store.set_epoch_deadline(self.deadline_ticks());
        let result = live
            .guest
            .connector_host_guest()
            .call_handle(&mut live.store, events);
        let tx = std::mem::take(&mut live.store.data_mut().tx);
        match result {
            Ok(Ok(())) => match self.commit(tx) {
                Ok(()) => Outcome::Committed,
                Err(e) => {
                    // The store failed us, not the guest: treat like a trap (nothing applied).
                    tracing::error!(instance = %self.ctx.config.name, error = %format!("{e:#}"), "commit failed");
                    Outcome::Trapped(e)
                }
            },
            Ok(Err(reason)) => Outcome::Refused(reason),
            Err(e) => {
                metrics
                    .traps
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let e = anyhow::Error::from(e);
                tracing::warn!(instance = %self.ctx.config.name, error = %format!("{e:#}"), "guest trapped; its writes and effects were discarded");
                Outcome::Trapped(e)
            }
        }
    }

    /// KV writes first (one atomic batch, flushed), then the effects in order.
    fn commit(&self, tx: Transaction) -> Result<()> {
        let has_writes = tx.has_writes();
        let (writes, effects) = tx.into_parts();
        if has_writes {
            let started = Instant::now();
            self.ctx.kv.apply_batch(writes)?;
            self.ctx.kv.flush()?;
            self.ctx
                .metrics
                .observe_commit(started.elapsed().as_secs_f64());
        }
        for effect in effects {
            perform(&self.ctx, effect);
        }
        Ok(())
    }

    fn swap(&mut self, prepared: Prepared) -> Result<String> {
        let started = Instant::now();
        let Prepared {
            live: mut new,
            plugin,
        } = prepared;
        let name = self.ctx.config.name.clone();
        let ticks = self.deadline_ticks();
        let result = (|| {
            let (from_version, snapshot) = match self.live.as_mut() {
                Some(old) => {
                    old.store.set_epoch_deadline(ticks);
                    let snapshot = old
                        .guest
                        .connector_host_guest()
                        .call_snapshot(&mut old.store);
                    match snapshot {
                        Ok(s) => (Some(old.version.clone()), s),
                        Err(e) => {
                            tracing::warn!(instance = %name, error = %e, "old guest trapped in snapshot");
                            (Some(old.version.clone()), None)
                        }
                    }
                }
                None => (self.last_version.clone(), None),
            };
            let info = InitInfo {
                reason: InitReason::Upgrade,
                from_version: from_version.clone(),
                snapshot,
                open_websockets: self.ctx.open_websockets(),
            };
            self.init(&mut new, info)?;
            Ok::<_, anyhow::Error>((new, from_version))
        })();
        match result {
            Ok((new, from_version)) => {
                tracing::info!(instance = %name, from = from_version.as_deref().unwrap_or("-"), to = %new.version, "guest swapped");
                let version = new.version.clone();
                self.last_version = Some(version.clone());
                // The old store is released off the actor: freeing its memory is no part of
                // the switch.
                if let Some(old) = self.live.replace(new) {
                    self.ctx.runtime.spawn_blocking(move || drop(old));
                }
                self.plugin = plugin.clone();
                self.ctx
                    .metrics
                    .swaps
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *self.ctx.status.lock().expect("status") = Status {
                    version: version.clone(),
                    wasm_sha256: plugin.wasm_sha256.clone(),
                    state: "running".into(),
                    last_error: None,
                    last_switch_us: Some(started.elapsed().as_micros() as u64),
                };
                Ok(version)
            }
            Err(e) => {
                tracing::error!(instance = %name, error = %format!("{e:#}"), "swap rejected; the old guest keeps serving");
                self.ctx.status.lock().expect("status").last_error =
                    Some(format!("swap rejected: {e:#}"));
                Err(e)
            }
        }
    }

    fn dead_letter(&self, event: Event, why: &str) {
        let ctx = &self.ctx;
        ctx.metrics
            .dead_letters
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = format!("{event:?}");
        text.truncate(64 * 1024);
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("{stamp:032}-{}", ctx.next_id());
        if let Err(e) = ctx
            .dead_letters
            .insert(key.as_bytes(), text.as_bytes())
            .and_then(|_| ctx.dead_letters.flush())
        {
            tracing::error!(instance = %ctx.config.name, error = %e, "could not store a dead letter");
        }
        tracing::error!(instance = %ctx.config.name, why, key, "event dead-lettered");
        fail_inbound(ctx, &event, "the instance failed to handle the request");
    }

    fn set_status(&self, state: &str, error: Option<String>) {
        let mut status = self.ctx.status.lock().expect("status");
        status.state = state.into();
        status.last_error = error;
    }
}

/// Epoch ticks an event may run before it traps.
fn deadline_ticks(config: &InstanceConfig) -> u64 {
    (config.event_deadline_ms / EPOCH_TICK.as_millis() as u64).max(1)
}

/// A fresh guest of `plugin` for `ctx`, its contract version checked and its `version()` read.
fn instantiate(
    engine: &wasmtime::Engine,
    ctx: &Arc<InstanceContext>,
    plugin: &Plugin,
) -> Result<Live> {
    let config = &ctx.config;
    let memory = usize::try_from(config.memory_limit_mb << 20).unwrap_or(usize::MAX);
    let mut store = Store::new(engine, GuestState::new(ctx.clone(), memory));
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(deadline_ticks(config));
    let guest = plugin.pre.instantiate(&mut store)?;
    let api = guest.connector_host_guest().call_api_version(&mut store)?;
    if !api_compatible(&api) {
        bail!("guest speaks contract {api}, this host serves 0.1.x");
    }
    store.set_epoch_deadline(deadline_ticks(config));
    let version = guest.connector_host_guest().call_version(&mut store)?;
    Ok(Live {
        store,
        guest,
        version,
    })
}

/// An inbound request whose event failed gets a 500 at once instead of waiting for the deadline.
fn fail_inbound(ctx: &InstanceContext, event: &Event, text: &str) {
    if let Event::HttpRequest((id, _)) = event {
        ctx.answer_error(*id, 500, text);
    }
}

/// Performs one committed effect.
fn perform(ctx: &Arc<InstanceContext>, effect: Effect) {
    match effect {
        Effect::Respond { id, response } => ctx.answer(id, response),
        Effect::HttpStart { id, request } => {
            let mut outbound = ctx.outbound.lock().expect("outbound");
            let task_ctx = ctx.clone();
            // Registered under the lock so the completion cannot race the registration.
            let task = ctx.runtime.spawn(async move {
                let outcome = task_ctx.client.request(request).await;
                let still_wanted = task_ctx
                    .outbound
                    .lock()
                    .expect("outbound")
                    .remove(&id)
                    .is_some();
                if still_wanted {
                    task_ctx.deliver(Event::HttpResponse((id, outcome)));
                }
            });
            outbound.insert(id, task.abort_handle());
        }
        Effect::HttpCancel { id } => {
            if let Some(task) = ctx.outbound.lock().expect("outbound").remove(&id) {
                task.abort();
            }
        }
        Effect::WsConnect { id, url, headers } => {
            let task_ctx = ctx.clone();
            ctx.runtime.spawn(async move {
                match task_ctx.client.connect_websocket(&url, &headers).await {
                    Ok((stream, response_headers, peer)) => {
                        let open = WsOpen {
                            id,
                            direction: WsDirection::Outbound,
                            path: url,
                            headers: response_headers,
                            peer,
                        };
                        crate::ws_conn::run(task_ctx, open, stream).await;
                    }
                    Err(reason) => task_ctx.deliver(Event::WsClosed(WsClosed {
                        id,
                        code: 1006,
                        reason,
                    })),
                }
            });
        }
        Effect::WsSend { id, frame } => {
            if let Some(ws) = ctx.websockets.lock().expect("websockets").get(&id) {
                let message = match frame {
                    WsFrame::Text(t) => WsCommand::Text(t),
                    WsFrame::Binary(b) => WsCommand::Binary(b),
                };
                let _ = ws.commands.send(message);
            }
        }
        Effect::WsClose { id, code, reason } => {
            // Removed first: the connection task then ends without a `ws-closed` event.
            if let Some(ws) = ctx.websockets.lock().expect("websockets").remove(&id) {
                let _ = ws.commands.send(WsCommand::Close(code, reason));
            }
        }
        Effect::TimerSet { id, after_ms, tag } => {
            let mut timers = ctx.timers.lock().expect("timers");
            let task_ctx = ctx.clone();
            let task = ctx.runtime.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                let armed = task_ctx
                    .timers
                    .lock()
                    .expect("timers")
                    .remove(&id)
                    .is_some();
                if armed {
                    task_ctx.deliver(Event::Timer((id, tag)));
                }
            });
            timers.insert(id, task.abort_handle());
        }
        Effect::TimerCancel { id } => {
            if let Some(task) = ctx.timers.lock().expect("timers").remove(&id) {
                task.abort();
            }
        }
    }
}
