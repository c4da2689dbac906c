//! A second host for connector guests, built from the WIT contract alone: single-threaded,
//! deterministic, in virtual time.
//!
//! It runs the real guest `.wasm` against a [`World`] (the fakes of Microsoft 365 and the PBX,
//! driven through their sans-IO cores) with a virtual clock, an in-memory KV store, seeded
//! randomness and wasmtime fuel, so a seed replays identically and a simulated week passes in
//! seconds. Its existence is the proof that third parties can write their own hosts.
//!
//! [`invariants`] are checked after every event: PBX protocol, no secret in a log line, KV
//! bounded (per user, growth levelling off, the audit ring within its own bounds), PBX logged
//! in after faults, one presence subscription per account, Teams -> PBX presence converged,
//! no subscription lapse beyond [`invariants::LAPSE_TOLERANCE_MS`], guest memory bounded and
//! (with `--pbx-to-teams`) PBX -> Teams presence converged without echo. A failing run prints
//! its replay command; `SIMHOST_TRACE=1`, `SIMHOST_LOG_GREP=<text>` and `SIMHOST_KV_GREP=<text>`
//! show the events, guest log lines and KV entries of the replay.
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
