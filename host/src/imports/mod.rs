//! Host side of the WIT interfaces, one module per interface. Every import that starts work
//! only records an effect in the running transaction and returns a host-owned id.

mod config;
mod http_client;
mod http_server;
mod keys;
mod kv;
mod log;
mod metrics;
mod timers;
mod websocket;

impl crate::bindings::connector::host::types::Host for crate::guest_state::GuestState {}
