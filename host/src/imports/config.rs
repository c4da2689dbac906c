//! `config`: the instance's resolved settings.

use crate::bindings::connector::host::config::{Host, Setting};
use crate::guest_state::GuestState;

impl Host for GuestState {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.config.settings.get(&name).cloned())
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<Setting>> {
        Ok(self
            .ctx
            .config
            .settings
            .iter()
            .map(|(name, value)| Setting {
                name: name.clone(),
                value: value.clone(),
            })
            .collect())
    }
}
