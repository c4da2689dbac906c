//! `log`: guest lines go through the host's logger, tagged with instance and guest target.

use crate::bindings::connector::host::log::{Host, Level};
use crate::guest_state::GuestState;
use crate::logging::{guest_enabled, write_guest_line};

fn level(level: Level) -> tracing::Level {
    match level {
        Level::Trace => tracing::Level::TRACE,
        Level::Debug => tracing::Level::DEBUG,
        Level::Info => tracing::Level::INFO,
        Level::Warn => tracing::Level::WARN,
        Level::Error => tracing::Level::ERROR,
    }
}

impl Host for GuestState {
    fn write(&mut self, lvl: Level, target: String, message: String) -> wasmtime::Result<()> {
        let lvl = level(lvl);
        if guest_enabled(lvl, &target) {
            // Guest text is capped so that a chatty guest cannot flood the log.
            let mut message = message;
            message.truncate(16 * 1024);
            write_guest_line(lvl, &self.ctx.config.name, &target, &message);
        }
        Ok(())
    }

    fn enabled(&mut self, lvl: Level, target: String) -> wasmtime::Result<bool> {
        Ok(guest_enabled(level(lvl), &target))
    }
}
