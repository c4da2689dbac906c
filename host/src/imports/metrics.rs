//! `metrics`: guest figures, published with an `instance` label.

use crate::bindings::connector::host::metrics::{Host, Label};
use crate::guest_state::GuestState;

fn pairs(labels: Vec<Label>) -> Vec<(String, String)> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

impl Host for GuestState {
    fn counter_add(
        &mut self,
        name: String,
        labels: Vec<Label>,
        delta: u64,
    ) -> wasmtime::Result<()> {
        self.ctx
            .metrics
            .guest_counter_add(&name, &pairs(labels), delta);
        Ok(())
    }

    fn gauge_set(&mut self, name: String, labels: Vec<Label>, value: f64) -> wasmtime::Result<()> {
        self.ctx
            .metrics
            .guest_gauge_set(&name, &pairs(labels), value);
        Ok(())
    }
}
