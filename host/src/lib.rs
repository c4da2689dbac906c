//! apphost: a thin host that runs event-driven connector components (see `wit/connector.wit`).
//! Each configured instance gets one guest driven by one actor thread; every event is one
//! transaction; sockets, timers and outgoing requests belong to the host and survive hot swaps.
#![deny(missing_docs)]

pub mod bindings;
pub mod client;
pub mod config;
pub mod control;
pub mod engine;
pub mod guest_state;
pub mod host;
mod imports;
pub mod instance;
pub mod keys;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod transaction;
pub mod ws_conn;

pub use config::HostConfig;
pub use host::Host;
