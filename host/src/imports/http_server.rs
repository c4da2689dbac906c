//! `http-server`: answers are sent after the event's writes are durable.

use crate::bindings::HttpResponse;
use crate::bindings::connector::host::http_server::Host;
use crate::guest_state::GuestState;
use crate::transaction::Effect;

impl Host for GuestState {
    fn respond(&mut self, id: u64, response: HttpResponse) -> wasmtime::Result<bool> {
        let waiting = self
            .ctx
            .pending_inbound
            .lock()
            .expect("inbound")
            .contains_key(&id);
        if !waiting || !self.tx.answered.insert(id) {
            return Ok(false);
        }
        self.tx.effects.push(Effect::Respond { id, response });
        Ok(true)
    }
}
