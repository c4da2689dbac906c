//! A faithful fake of the innovaphone PBX as seen by an App Service over AppWebsocket
//! (`../shared/spec/innovaphone.md`). The core ([`pbx::Pbx`]) is sans-IO: state, an injectable
//! clock and seeded randomness; frames in, [`pbx::Output`]s out. [`dialer`] drives it over real
//! WebSockets (ws/wss) and [`control`] exposes an HTTP/JSON control API; [`client`] simulates
//! myApps user sessions (user, admin and `microsoft365-api` apps).
//!
//! # Driving the core yourself (simulation host, unit tests)
//! ```
//! use fake_pbx::{ManualClock, Pbx, Output};
//! use std::sync::Arc;
//! let clock = ManualClock::new(0);
//! let mut pbx = Pbx::new("example.com", Arc::new(clock.clone()), 42);
//! // pbx.add_node(NodeConfig { .. }); pbx.add_users(fake_pbx::users::populate(&spec));
//! loop {
//!     pbx.tick(); // dials due nodes, login timeouts, reordered responses
//!     for out in pbx.drain() {
//!         match out {
//!             Output::Dial { conn, .. } => { /* open socket, then pbx.on_connected(conn) */ }
//!             Output::Send { conn, text } => { /* deliver; replies go to pbx.on_frame(conn, &t) */ }
//!             Output::Close { .. } | Output::CloseMidMessage { .. } => { /* drop it */ }
//!         }
//!     }
//!     // Advance virtual time to pbx.next_deadline() (or until the next frame arrives).
//!     # break;
//! }
//! ```
//! A closed socket is reported with [`Pbx::on_closed`]; the node then redials after a backoff.
//!
//! # In-process with real sockets
//! [`setup::spawn`] does everything the binary does in one call. [`dialer::Handle::start`] runs the core on the current tokio runtime and dials the App URL;
//! [`control::serve`] adds the HTTP control API; [`dialer::Handle::open_session`] runs a myApps
//! user session ([`Pbx::user_session`] builds its login).
//!
//! # Binary
//! `fake-pbx --url <app url> --password <instance pw> [--slave NAME].. [--users N] [--ca-file PEM]`
//! prints `{"control":"http://127.0.0.1:PORT"}`; see `src/main.rs` for all flags and
//! [`control::serve`] for the routes.
//!
//! Behaviour the spec leaves open is switchable in [`switches::Switches`] (defaults documented
//! there); protocol mistakes of the connector are collected in [`Pbx::violations`].
#![deny(missing_docs)]

pub mod calls;
pub mod client;
pub mod clock;
pub mod control;
pub mod dialer;
pub mod digest;
pub mod licences;
pub mod login;
pub mod objects;
pub mod pbx;
pub mod presence;
pub mod replication;
pub mod setup;
pub mod switches;
pub mod users;

pub use clock::{Clock, ManualClock, Rng};
pub use pbx::{NodeConfig, Output, Pbx};
pub use users::{PopulateSpec, User, Visibility};
