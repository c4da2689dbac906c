//! Rust bindings of the `connector` world, generated from `wit/connector.wit` alone: this host
//! shares nothing with `apphost` but the contract.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "connector",
});

pub use connector::host::types::{
    Event, Header, HttpError, HttpRequest, HttpResponse, InboundRequest, InitInfo, InitReason,
    WsClosed, WsDirection, WsFrame, WsOpen,
};
