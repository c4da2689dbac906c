//! A faithful fake of the innovaphone PBX as seen by an App Service over AppWebsocket
//! (`../shared/spec/innovaphone.md`). The core ([`pbx::Pbx`]) is sans-IO: state, an injectable
//! clock and seeded randomness; frames in, [`pbx::Output`]s out. [`dialer`] drives it over real
//! WebSockets (ws/wss) and [`control`] exposes an HTTP/JSON control API; [`client`] simulates
//! myApps user sessions (user, admin and `microsoft365-api` apps).
#![deny(missing_docs)]

pub mod calls;
pub mod client;
pub mod clock;
pub mod control;
pub mod dialer;
pub mod digest;
pub mod licences;
pub mod login;
pub mod pbx;
pub mod presence;
pub mod replication;
pub mod switches;
pub mod users;

pub use clock::{Clock, ManualClock, Rng};
pub use pbx::{NodeConfig, Output, Pbx};
pub use users::{PopulateSpec, User, Visibility};
