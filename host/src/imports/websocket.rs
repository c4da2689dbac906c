//! `websocket`: connect, send and close take effect after the event commits.

use crate::bindings::connector::host::websocket::Host;
use crate::bindings::{Header, WsFrame};
use crate::guest_state::GuestState;
use crate::transaction::Effect;

impl Host for GuestState {
    fn connect(&mut self, url: String, headers: Vec<Header>) -> wasmtime::Result<u64> {
        let id = self.ctx.next_id();
        self.tx.effects.push(Effect::WsConnect { id, url, headers });
        Ok(id)
    }

    fn send(&mut self, id: u64, frame: WsFrame) -> wasmtime::Result<bool> {
        let open = self
            .ctx
            .websockets
            .lock()
            .expect("websockets")
            .contains_key(&id);
        if !open || self.tx.closed_websockets.contains(&id) {
            return Ok(false);
        }
        self.tx.effects.push(Effect::WsSend { id, frame });
        Ok(true)
    }

    fn close(&mut self, id: u64, code: u16, reason: String) -> wasmtime::Result<()> {
        if self.tx.closed_websockets.insert(id) {
            self.tx.effects.push(Effect::WsClose { id, code, reason });
        }
        Ok(())
    }
}
