//! What a guest instance's `Store` holds: the WASI context (virtual clocks, seeded randomness),
//! the memory cap, and the transaction of the event in progress. The parts that outlive a guest
//! instance (KV, keys, open connections) sit in [`Durable`] and move from one instance to the
//! next on a crash or swap.

use std::collections::{BTreeMap, BTreeSet};

use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{HttpRequest, HttpResponse, WsFrame, WsOpen};
use crate::keys::KeyRing;
use crate::kv;
use crate::world::Ids;

/// An effect the guest asked for; performed only if its event commits.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Answer inbound request `.0`.
    Respond(u64, HttpResponse),
    /// Start outbound request `.0`.
    HttpStart(u64, HttpRequest),
    /// Abandon outbound request `.0`.
    HttpCancel(u64),
    /// Dial a WebSocket.
    WsConnect(u64, String),
    /// Send a frame.
    WsSend(u64, WsFrame),
    /// Close a WebSocket.
    WsClose(u64, u16, String),
    /// Fire timer `.0` with tag `.2` after `.1` milliseconds.
    TimerSet(u64, u64, String),
    /// Cancel a timer.
    TimerCancel(u64),
}

/// One line the guest logged.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Virtual time of the line.
    pub at_ms: u64,
    /// Level name (`info`, ...).
    pub level: &'static str,
    /// Guest-chosen target.
    pub target: String,
    /// The message.
    pub message: String,
}

/// State that survives a guest crash or swap.
pub struct Durable {
    /// Committed KV store.
    pub kv: kv::Store,
    /// Key pairs and the sealing key.
    pub keys: KeyRing,
    /// The instance's settings (`config` interface).
    pub settings: BTreeMap<String, String>,
    /// Inbound requests not yet answered.
    pub open_inbound: BTreeSet<u64>,
    /// Open WebSockets, as announced to the guest (handed over again in `init`).
    pub open_ws: BTreeMap<u64, WsOpen>,
    /// Everything the guest logged.
    pub logs: Vec<LogLine>,
    /// Counters and gauges: (name, sorted labels) -> value.
    pub metrics: BTreeMap<(String, Vec<(String, String)>), f64>,
    /// Host-owned id allocator shared with the world.
    pub ids: Ids,
    /// Virtual time, for log lines.
    pub now_ms: u64,
}

/// The store data of one guest instance.
pub struct GuestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryWatch,
    /// Durable parts, moved in and out around instances.
    pub durable: Durable,
    /// Writes of the event in progress.
    pub overlay: kv::Overlay,
    /// Effects of the event in progress.
    pub effects: Vec<Effect>,
    /// Inbound requests answered in the event in progress.
    pub answered: BTreeSet<u64>,
}

impl GuestState {
    /// Drops the event in progress (trap or `err`).
    pub fn discard(&mut self) {
        self.overlay = kv::Overlay::default();
        self.effects.clear();
        self.answered.clear();
    }

    /// Commits the event in progress: KV first, then hands back the effects to perform.
    pub fn commit(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.overlay).commit(&mut self.durable.kv);
        for id in std::mem::take(&mut self.answered) {
            self.durable.open_inbound.remove(&id);
        }
        std::mem::take(&mut self.effects)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The store's resource limiter: the configured caps, plus a tally of the linear memory the
/// instance holds (wasm memories never shrink, so the granted growth is the current size).
pub struct MemoryWatch {
    limits: StoreLimits,
    bytes: usize,
}

impl MemoryWatch {
    /// Watches memory under `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self { limits, bytes: 0 }
    }

    /// Bytes of linear memory the instance holds (all its memories).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Also called when a memory is first created (current = 0), so the tally is complete.
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
