//! Connector for Microsoft 365: the guest component that holds all connector logic.
//!
//! The crate is a sans-IO core (quinn-proto / h2 style): [`Connector::handle`] takes one
//! [`Event`] and acts only through an [`Env`], the host as a trait. The wasm build adds a thin
//! wit-bindgen glue module that implements `Env` with the WIT imports; native builds get
//! [`testenv::TestEnv`], an in-memory host that records effects, for tests and benchmarks.
//!
//! Modules say what they do: [`pbx`] (AppWebsocket protocol with the innovaphone PBX),
//! [`graph`] (Microsoft identity platform and Graph client), [`http`] (routing of inbound
//! requests), [`presence_in`] (Teams -> PBX presence), [`store`] (KV layout), [`settings`] (the
//! `config` interface).
#![deny(missing_docs)]

pub mod admin;
pub mod audit;
pub mod calendar;
pub mod connector;
pub mod contact_search;
pub mod env;
pub mod event;
pub mod graph;
pub mod http;
pub mod matching;
pub mod metrics;
pub mod pbx;
pub mod presence_in;
pub mod presence_out;
pub mod provisioning;
pub mod settings;
pub mod store;
#[cfg(not(target_family = "wasm"))]
pub mod testenv;

#[cfg(target_family = "wasm")]
mod wasm;

pub use connector::Connector;
pub use env::Env;
pub use event::Event;

/// The WIT contract version this guest is built against (`package connector:host@0.1.0`).
pub const API_VERSION: &str = "0.1.0";

/// The guest's name and version, e.g. `microsoft365 0.1.0`.
pub fn version() -> String {
    format!("microsoft365 {}", env!("CARGO_PKG_VERSION"))
}
