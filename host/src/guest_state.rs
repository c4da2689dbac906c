//! What a guest's `Store` holds: the running transaction, the instance context, WASI plumbing
//! (std needs it; nothing is granted) and the memory limiter.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::instance::InstanceContext;
use crate::transaction::Transaction;

/// Store data of one guest instance.
pub struct GuestState {
    /// Writes and effects of the event being handled.
    pub tx: Transaction,
    /// Everything shared with the host side of this instance.
    pub ctx: Arc<InstanceContext>,
    /// Memory cap.
    pub limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    /// A fresh state: no preopens, no network, no environment, no inherited stdio.
    pub fn new(ctx: Arc<InstanceContext>, memory_limit_bytes: usize) -> Self {
        GuestState {
            tx: Transaction::default(),
            ctx,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit_bytes)
                .trap_on_grow_failure(false)
                .build(),
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        }
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
