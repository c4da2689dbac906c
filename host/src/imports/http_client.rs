//! `http-client`: outgoing requests start after the event commits.

use crate::bindings::HttpRequest;
use crate::bindings::connector::host::http_client::Host;
use crate::guest_state::GuestState;
use crate::transaction::Effect;

impl Host for GuestState {
    fn start(&mut self, request: HttpRequest) -> wasmtime::Result<u64> {
        let id = self.ctx.next_id();
        self.tx.effects.push(Effect::HttpStart { id, request });
        Ok(id)
    }

    fn cancel(&mut self, id: u64) -> wasmtime::Result<()> {
        self.tx.effects.push(Effect::HttpCancel { id });
        Ok(())
    }
}
