//! A second host for connector guests, built from the WIT contract alone: single-threaded,
//! deterministic, in virtual time.
//!
//! It runs the real guest `.wasm` against a [`World`] (the fakes of Microsoft 365 and the PBX,
//! driven through their sans-IO cores) with a virtual clock, an in-memory KV store, seeded
//! randomness and wasmtime fuel, so a seed replays identically and a simulated week passes in
//! seconds. Its existence is the proof that third parties can write their own hosts.
#![deny(missing_docs)]

pub mod bindings;
pub mod clock;
pub mod fakes_world;
pub mod faults;
pub mod imports;
pub mod invariants;
pub mod keys;
pub mod kv;
pub mod scenario;
pub mod sim;
pub mod state;
pub mod world;

pub use sim::{Guest, Sim, SimConfig, Stats, engine};
pub use world::{Ids, Incoming, World};
