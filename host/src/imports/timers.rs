//! `timers`: armed and cancelled after the event commits; ids belong to the host.

use crate::bindings::connector::host::timers::Host;
use crate::guest_state::GuestState;
use crate::transaction::Effect;

impl Host for GuestState {
    fn set(&mut self, after_ms: u64, tag: String) -> wasmtime::Result<u64> {
        let id = self.ctx.next_id();
        self.tx.effects.push(Effect::TimerSet { id, after_ms, tag });
        Ok(id)
    }

    fn cancel(&mut self, id: u64) -> wasmtime::Result<()> {
        self.tx.effects.push(Effect::TimerCancel { id });
        Ok(())
    }
}
