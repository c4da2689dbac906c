//! The simulator: one guest instance, one world, one virtual clock, one thread.
//!
//! Each step takes the earliest thing due (a guest timer or something the world does), moves
//! virtual time to it and delivers it to the guest as one event = one transaction, exactly as the
//! contract describes. Wasmtime fuel, not wall-clock epochs, bounds every call, so a runaway
//! handler traps at the same instruction in every run of a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::{ResourceTable, WasiCtxBuilder};

use crate::bindings::{
    Connector, ConnectorPre, Event, HttpResponse, InitInfo, InitReason, WsClosed,
};
use crate::clock::VirtualClock;
use crate::keys::KeyRing;
use crate::state::{Durable, Effect, GuestState, MemoryWatch};
use crate::world::{Ids, Incoming, World};

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice: the guest's randomness, keys, and whatever the world draws.
    pub seed: u64,
    /// Virtual start time, Unix epoch milliseconds.
    pub start_ms: u64,
    /// Fuel for one `handle` call; running out traps the call like an epoch deadline would.
    pub fuel_per_event: u64,
    /// Memory cap of the guest's linear memory, bytes.
    pub memory_limit: usize,
    /// A trapped event is retried this many times on a fresh instance, then dead-lettered.
    pub retries: u32,
    /// The instance's settings (`config` interface).
    pub settings: BTreeMap<String, String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            // 2026-11-30T00:00:00Z, a Monday.
            start_ms: 1_796_083_200_000,
            fuel_per_event: 5_000_000_000,
            memory_limit: 256 << 20,
            retries: 3,
            settings: BTreeMap::new(),
        }
    }
}

/// The wasmtime engine for simulation: fuel instead of epochs, canonical NaNs, so execution is
/// reproducible instruction for instruction.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.cranelift_nan_canonicalization(true);
    config.wasm_component_model(true);
    Ok(Engine::new(&config)?)
}

/// A compiled guest, ready to instantiate many times (and across runs).
#[derive(Clone)]
pub struct Guest {
    pre: ConnectorPre<GuestState>,
    /// The component's bytes, to derive a newer version from ([`Guest::newer`]).
    wasm: std::sync::Arc<Vec<u8>>,
}

impl Guest {
    /// Compiles the component at `path` and links it against the contract.
    pub fn load(engine: &Engine, path: &Path) -> Result<Self> {
        let wasm =
            std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?;
        Self::from_bytes(engine, wasm)
            .with_context(|| format!("compiling guest {}", path.display()))
    }

    /// Compiles a component from its bytes and links it against the contract.
    pub fn from_bytes(engine: &Engine, wasm: Vec<u8>) -> Result<Self> {
        let component = Component::new(engine, &wasm).map_err(anyhow::Error::from)?;
        let mut linker = Linker::<GuestState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Connector::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let pre = ConnectorPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Self {
            pre,
            wasm: std::sync::Arc::new(wasm),
        })
    }

    /// What the guest's `version()` says, e.g. `microsoft365 0.1.0`.
    pub fn version(&self) -> Result<String> {
        let config = SimConfig::default();
        let clock = VirtualClock::new(config.start_ms);
        let (mut store, instance) =
            instantiate(self, &config, &clock, placeholder_state().durable, 0)?;
        Ok(instance.connector_host_guest().call_version(&mut store)?)
    }

    /// A newer release of this guest: the same code whose `version()` reports the next patch
    /// version (`0.1.0` -> `0.1.1`), for hot swaps to a newer guest. The version text is
    /// rewritten in place in the component's data, so it must occur exactly once and its last
    /// digit must not be 9 (same length, nothing else moves).
    pub fn newer(&self) -> Result<(Guest, String)> {
        let old = self.version()?;
        let new = bump_patch(&old)?;
        let mut wasm = self.wasm.as_ref().clone();
        let at = {
            let hits: Vec<usize> = wasm
                .windows(old.len())
                .enumerate()
                .filter(|(_, w)| *w == old.as_bytes())
                .map(|(i, _)| i)
                .collect();
            match hits.as_slice() {
                [one] => *one,
                _ => bail!(
                    "the version text `{old}` occurs {} times in the component, not once",
                    hits.len()
                ),
            }
        };
        wasm[at..at + new.len()].copy_from_slice(new.as_bytes());
        let newer = Guest::from_bytes(self.pre.engine(), wasm)?;
        let reported = newer.version()?;
        if reported != new {
            bail!("the rewritten guest reports `{reported}`, expected `{new}`");
        }
        Ok((newer, new))
    }
}

/// `name 1.2.3` -> `name 1.2.4` (same length: the last digit must not be 9).
fn bump_patch(version: &str) -> Result<String> {
    let mut bytes = version.as_bytes().to_vec();
    match bytes.last_mut() {
        Some(d) if d.is_ascii_digit() && *d < b'9' => *d += 1,
        _ => bail!("cannot bump the version `{version}` in place"),
    }
    Ok(String::from_utf8(bytes)?)
}

/// Figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events delivered and committed.
    pub events: u64,
    /// Calls that trapped (including retries).
    pub traps: u64,
    /// Guest instances created after a trap or crash.
    pub restarts: u64,
    /// Successful hot swaps.
    pub swaps: u64,
    /// Most linear memory any guest instance held, bytes.
    pub peak_memory: usize,
    /// Fuel consumed by all calls.
    pub fuel: u64,
    /// Running digest of every committed event and its virtual time: two runs of one seed must
    /// end with the same value (the replay check).
    pub trace: u64,
}

/// An event the guest could not process after its retries.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Virtual time.
    pub at_ms: u64,
    /// The event, debug-printed.
    pub event: String,
    /// The last failure.
    pub error: String,
}

/// A running simulation.
pub struct Sim<W: World> {
    config: SimConfig,
    guest: Guest,
    clock: VirtualClock,
    world: W,
    store: Store<GuestState>,
    instance: Connector,
    /// (due, sequence) -> (timer id, tag); the sequence keeps equal times in set order.
    timers: BTreeMap<(u64, u64), (u64, String)>,
    timer_due: BTreeMap<u64, (u64, u64)>,
    seq: u64,
    generation: u64,
    stats: Stats,
    dead_letters: Vec<DeadLetter>,
    /// `SIMHOST_TRACE=1` prints every committed event (to diff two runs of a seed).
    print_trace: bool,
}

impl<W: World> Sim<W> {
    /// Starts a guest in a fresh world: instantiates it and delivers `init(start)`.
    pub fn start(guest: &Guest, world: W, config: SimConfig) -> Result<Self> {
        let clock = VirtualClock::new(config.start_ms);
        Self::start_with_clock(guest, world, config, clock)
    }

    /// Like [`Sim::start`], on a clock the caller made first, so the world's fakes can read the
    /// same virtual time as the guest.
    pub fn start_with_clock(
        guest: &Guest,
        world: W,
        config: SimConfig,
        clock: VirtualClock,
    ) -> Result<Self> {
        clock.advance_to(config.start_ms);
        let durable = Durable {
            kv: BTreeMap::new(),
            keys: KeyRing::new(config.seed),
            settings: config.settings.clone(),
            open_inbound: BTreeSet::new(),
            open_ws: BTreeMap::new(),
            logs: Vec::new(),
            metrics: BTreeMap::new(),
            ids: Ids::default(),
            now_ms: config.start_ms,
        };
        let (store, instance) = instantiate(guest, &config, &clock, durable, 0)?;
        let mut sim = Self {
            config,
            guest: guest.clone(),
            clock,
            world,
            store,
            instance,
            timers: BTreeMap::new(),
            timer_due: BTreeMap::new(),
            seq: 0,
            generation: 0,
            stats: Stats::default(),
            dead_letters: Vec::new(),
            print_trace: std::env::var_os("SIMHOST_TRACE").is_some(),
        };
        sim.init(&guest.clone(), InitReason::Start, None, None)?;
        Ok(sim)
    }

    /// Current virtual time (true time, without the guest's skew).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The virtual clock (e.g. to skew the guest's view of it).
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// The world.
    pub fn world(&self) -> &W {
        &self.world
    }

    /// The world, mutably (to inject faults or change it between steps).
    pub fn world_mut(&mut self) -> &mut W {
        &mut self.world
    }

    /// State that outlives guest instances: KV, logs, metrics, open connections.
    pub fn durable(&self) -> &Durable {
        &self.store.data().durable
    }

    /// Run figures.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Events given up on.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Number of timers pending.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Linear memory the current guest instance holds, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.bytes()
    }

    /// The guest currently running.
    pub fn guest(&self) -> &Guest {
        &self.guest
    }

    /// The guest's `version()`.
    pub fn guest_version(&mut self) -> Result<String> {
        Ok(self
            .instance
            .connector_host_guest()
            .call_version(&mut self.store)?)
    }

    /// The earliest time something is due.
    pub fn next_due(&self) -> Option<u64> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        match (timer, self.world.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs everything due up to `until_ms`, calling `check` after every event, then sets the
    /// clock to `until_ms`. Stops at the first invariant violation.
    pub fn run_until(
        &mut self,
        until_ms: u64,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) -> Result<()> {
        while let Some(due) = self.next_due() {
            if due > until_ms {
                break;
            }
            self.step()?;
            if let Err(violation) = check(self) {
                bail!(
                    "invariant violated at t+{} ms (seed {}): {violation}",
                    self.now_ms() - self.config.start_ms,
                    self.config.seed
                );
            }
        }
        self.clock.advance_to(until_ms);
        Ok(())
    }

    /// Takes the earliest due thing and delivers it. Returns `false` when nothing is pending.
    pub fn step(&mut self) -> Result<bool> {
        let Some(due) = self.next_due() else {
            return Ok(false);
        };
        self.clock.advance_to(due);
        let now = self.now_ms();
        let world_due = self.world.next_wakeup().is_some_and(|w| w <= now);
        if world_due {
            let incoming = {
                let ids = &mut self.store.data_mut().durable.ids;
                self.world.poll(now, ids)
            };
            for inc in incoming {
                if let Some(event) = self.admit(inc) {
                    self.deliver(event)?;
                }
            }
        } else if let Some(((_, _), (id, tag))) = self.timers.pop_first() {
            self.timer_due.remove(&id);
            self.deliver(Event::Timer((id, tag)))?;
        }
        Ok(true)
    }

    /// Turns something the world did into an event, keeping track of open requests and sockets.
    fn admit(&mut self, incoming: Incoming) -> Option<Event> {
        let durable = &mut self.store.data_mut().durable;
        Some(match incoming {
            Incoming::HttpRequest(id, req) => {
                durable.open_inbound.insert(id);
                Event::HttpRequest((id, req))
            }
            Incoming::HttpResponse(id, result) => Event::HttpResponse((id, result)),
            Incoming::WsOpen(open) => {
                durable.open_ws.insert(open.id, open.clone());
                Event::WsOpen(open)
            }
            Incoming::WsMessage(id, frame) => {
                if !durable.open_ws.contains_key(&id) {
                    return None;
                }
                Event::WsMessage((id, frame))
            }
            Incoming::WsClosed(id, code, reason) => {
                durable.open_ws.remove(&id);
                Event::WsClosed(WsClosed { id, code, reason })
            }
        })
    }

    /// Delivers one event as one transaction, retrying a trap on fresh instances and
    /// dead-lettering it after the configured retries.
    pub fn deliver(&mut self, event: Event) -> Result<()> {
        let mut last_error = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                self.restart()?;
            }
            let last_attempt = attempt == self.config.retries;
            match self.call(&event) {
                Ok(Ok(())) => {
                    let effects = self.store.data_mut().commit();
                    self.record(&event);
                    self.perform(effects);
                    self.stats.events += 1;
                    return Ok(());
                }
                Ok(Err(message)) => {
                    // The guest says it cannot process this event: retrying cannot help.
                    self.store.data_mut().discard();
                    last_error = format!("guest error: {message}");
                    break;
                }
                Err(trap) => {
                    self.stats.traps += 1;
                    last_error = format!("trap: {trap:#}");
                    if last_attempt {
                        // A trap poisons the instance: the next event needs a fresh one.
                        self.restart()?;
                    }
                }
            }
        }
        self.dead_letter(event, last_error)
    }

    /// Folds a committed event into the trace digest. `DefaultHasher::new()` has fixed keys, so
    /// the digest is the same in every run of one binary.
    fn record(&mut self, event: &Event) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.stats.trace.hash(&mut h);
        self.now_ms().hash(&mut h);
        hash_event(event, &mut h);
        self.stats.trace = h.finish();
        if self.print_trace {
            let text = format!("{event:?}");
            let cut = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
            eprintln!(
                "{} {:016x} {}",
                self.now_ms(),
                self.stats.trace,
                &text[..cut]
            );
        }
    }

    fn call(&mut self, event: &Event) -> Result<Result<(), String>> {
        let now = self.now_ms();
        self.store.data_mut().durable.now_ms = now;
        self.store.set_fuel(self.config.fuel_per_event)?;
        let result = self
            .instance
            .connector_host_guest()
            .call_handle(&mut self.store, std::slice::from_ref(event));
        let left = self.store.get_fuel().unwrap_or(0);
        self.stats.fuel += self.config.fuel_per_event.saturating_sub(left);
        self.stats.peak_memory = self.stats.peak_memory.max(self.memory_bytes());
        if result.is_err() {
            self.store.data_mut().discard();
        }
        Ok(result?)
    }

    fn dead_letter(&mut self, event: Event, error: String) -> Result<()> {
        let now = self.now_ms();
        if let Event::HttpRequest((id, _)) = &event {
            // The requester still deserves an answer, and the request must not stay open.
            self.store.data_mut().durable.open_inbound.remove(id);
            self.world.respond(
                now,
                *id,
                HttpResponse {
                    status: 500,
                    headers: vec![],
                    body: b"the guest could not process this request".to_vec(),
                },
            );
        }
        self.dead_letters.push(DeadLetter {
            at_ms: now,
            event: format!("{event:?}"),
            error,
        });
        Ok(())
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        let now = self.now_ms();
        for effect in effects {
            match effect {
                Effect::Respond(id, resp) => self.world.respond(now, id, resp),
                Effect::HttpStart(id, req) => self.world.http_start(now, id, req),
                Effect::HttpCancel(id) => self.world.http_cancel(now, id),
                Effect::WsConnect(id, url) => self.world.ws_connect(now, id, url),
                Effect::WsSend(id, frame) => self.world.ws_send(now, id, frame),
                Effect::WsClose(id, code, reason) => {
                    self.store.data_mut().durable.open_ws.remove(&id);
                    self.world.ws_close(now, id, code, reason);
                }
                Effect::TimerSet(id, after, tag) => {
                    self.seq += 1;
                    let due = now.saturating_add(after);
                    self.timers.insert((due, self.seq), (id, tag));
                    self.timer_due.insert(id, (due, self.seq));
                }
                Effect::TimerCancel(id) => {
                    if let Some(key) = self.timer_due.remove(&id) {
                        self.timers.remove(&key);
                    }
                }
            }
        }
    }

    /// Simulates a guest crash: the instance is dropped and a fresh one starts from KV with
    /// `init(restart)`. Timers, sockets and pending requests stay, as they belong to the host.
    pub fn crash(&mut self) -> Result<()> {
        self.restart()
    }

    fn restart(&mut self) -> Result<()> {
        self.stats.restarts += 1;
        let guest = self.guest.clone();
        self.replace_instance(&guest)?;
        self.init(&guest, InitReason::Restart, None, None)
    }

    /// Hot-swaps to `guest` between two events: snapshot from the old instance, `init(upgrade)`
    /// on the new one. If the new guest fails to initialise, the old one keeps serving (a fresh
    /// instance of it, restarted from KV) and the error is returned.
    pub fn swap(&mut self, guest: &Guest) -> Result<()> {
        let old_version = self.guest_version()?;
        let snapshot = self
            .instance
            .connector_host_guest()
            .call_snapshot(&mut self.store)?;
        let old_guest = self.guest.clone();
        self.replace_instance(guest)?;
        match self.init(guest, InitReason::Upgrade, Some(old_version), snapshot) {
            Ok(()) => {
                self.guest = guest.clone();
                self.stats.swaps += 1;
                Ok(())
            }
            Err(e) => {
                self.replace_instance(&old_guest)?;
                self.init(&old_guest, InitReason::Restart, None, None)?;
                Err(e.context("new guest rejected, old guest restored"))
            }
        }
    }

    fn replace_instance(&mut self, guest: &Guest) -> Result<()> {
        self.generation += 1;
        let placeholder = Store::new(self.store.engine(), placeholder_state());
        let old = std::mem::replace(&mut self.store, placeholder);
        let durable = old.into_data().durable;
        let (store, instance) =
            instantiate(guest, &self.config, &self.clock, durable, self.generation)?;
        self.store = store;
        self.instance = instance;
        Ok(())
    }

    /// Delivers `init` to the current instance of `guest`; an `init` that still traps after the
    /// retries means that guest cannot start at all.
    fn init(
        &mut self,
        guest: &Guest,
        reason: InitReason,
        from_version: Option<String>,
        snapshot: Option<Vec<u8>>,
    ) -> Result<()> {
        let open_websockets = self.durable().open_ws.values().cloned().collect();
        let event = Event::Init(InitInfo {
            reason,
            from_version,
            snapshot,
            open_websockets,
        });
        let mut last = None;
        for _ in 0..=self.config.retries {
            match self.call(&event) {
                Ok(Ok(())) => {
                    let effects = self.store.data_mut().commit();
                    self.record(&event);
                    self.perform(effects);
                    self.stats.events += 1;
                    return Ok(());
                }
                Ok(Err(message)) => bail!("guest refused init: {message}"),
                Err(trap) => {
                    self.stats.traps += 1;
                    last = Some(trap);
                    self.replace_instance(guest)?;
                }
            }
        }
        Err(last
            .expect("at least one attempt")
            .context("guest traps in init"))
    }
}

/// Feeds an event into the trace digest. Bodies are hashed as bytes: debug-printing them as
/// lists of numbers cost a tenth of a whole run.
fn hash_event(event: &Event, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    let headers = |list: &[crate::bindings::Header], h: &mut _| {
        for header in list {
            header.name.hash(h);
            header.value.hash(h);
        }
    };
    match event {
        Event::HttpRequest((id, req)) => {
            (1u8, id, &req.method, &req.path, &req.query, &req.peer).hash(h);
            headers(&req.headers, h);
            req.body.hash(h);
        }
        Event::HttpResponse((id, Ok(resp))) => {
            (2u8, id, resp.status).hash(h);
            headers(&resp.headers, h);
            resp.body.hash(h);
        }
        Event::WsMessage((id, crate::bindings::WsFrame::Text(text))) => (3u8, id, text).hash(h),
        Event::WsMessage((id, crate::bindings::WsFrame::Binary(bytes))) => (4u8, id, bytes).hash(h),
        other => format!("{other:?}").hash(h),
    }
}

fn wasi_ctx(config: &SimConfig, clock: &VirtualClock, generation: u64) -> wasmtime_wasi::WasiCtx {
    // Each instance gets its own stream, derived from the seed, so a restarted guest does not
    // replay the random numbers (e.g. challenges) of the instance before it.
    let stream = config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation;
    WasiCtxBuilder::new()
        .wall_clock(clock.guest_wall_clock())
        .monotonic_clock(clock.guest_monotonic_clock())
        .secure_random(StdRng::seed_from_u64(stream))
        .insecure_random(StdRng::seed_from_u64(stream ^ 1))
        .insecure_random_seed(u128::from(stream))
        .build()
}

fn placeholder_state() -> GuestState {
    GuestState {
        wasi: WasiCtxBuilder::new().build(),
        table: ResourceTable::new(),
        limits: MemoryWatch::new(StoreLimitsBuilder::new().build()),
        durable: Durable {
            kv: BTreeMap::new(),
            keys: KeyRing::new(0),
            settings: BTreeMap::new(),
            open_inbound: BTreeSet::new(),
            open_ws: BTreeMap::new(),
            logs: Vec::new(),
            metrics: BTreeMap::new(),
            ids: Ids::default(),
            now_ms: 0,
        },
        overlay: Default::default(),
        effects: Vec::new(),
        answered: BTreeSet::new(),
    }
}

fn instantiate(
    guest: &Guest,
    config: &SimConfig,
    clock: &VirtualClock,
    durable: Durable,
    generation: u64,
) -> Result<(Store<GuestState>, Connector)> {
    let state = GuestState {
        wasi: wasi_ctx(config, clock, generation),
        table: ResourceTable::new(),
        limits: MemoryWatch::new(
            StoreLimitsBuilder::new()
                .memory_size(config.memory_limit)
                .trap_on_grow_failure(true)
                .build(),
        ),
        durable,
        overlay: Default::default(),
        effects: Vec::new(),
        answered: BTreeSet::new(),
    };
    let mut store = Store::new(guest.pre.engine(), state);
    store.limiter(|s| &mut s.limits);
    store.set_fuel(config.fuel_per_event)?;
    let instance = guest.pre.instantiate(&mut store)?;
    let api = instance
        .connector_host_guest()
        .call_api_version(&mut store)?;
    if !api.starts_with("0.1.") {
        bail!("guest speaks contract {api}, this host serves 0.1.x");
    }
    Ok((store, instance))
}
