//! Rust bindings of the `connector` world (`wit/connector.wit`), generated at build time.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "connector",
    // Host functions may fail (storage I/O); failing traps the guest, which discards the event.
    imports: { default: trappable },
});

pub use connector::host::types::{
    Event, Header, HttpError, HttpRequest, HttpResponse, InboundRequest, InitInfo, InitReason,
    WsClosed, WsDirection, WsFrame, WsOpen,
};
