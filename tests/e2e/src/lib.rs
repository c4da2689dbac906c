//! End-to-end harness: the real `apphost` running the connector guest
//! (`plugins/microsoft365.wasm`), the fake Microsoft 365 and the fake innovaphone PBX, each a
//! process on loopback in a private temporary directory.
//!
//! ```no_run
//! use e2e::{PbxOptions, Stack, StackOptions};
//! let stack = Stack::start(StackOptions {
//!     pbx: Some(PbxOptions { slaves: vec!["slave".into()], ..Default::default() }),
//!     ..Default::default()
//! })?;
//! let status = stack.wait_for_pbx_logins()?;
//! assert_eq!(status.master.as_deref(), Some("master"));
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Binaries are built once per test process (`cargo build -p apphost -p fake-m365 -p
//! fake-pbx`; set `E2E_SKIP_BUILD=1` to skip); the guest must have been built by `make guest`.
//! Every process writes to `<name>.log` in the stack directory; a failing test prints the logs
//! and keeps the directory.

#![deny(missing_docs)]

pub mod binaries;
pub mod clients;
pub mod http;
pub mod node_host;
pub mod people;
pub mod process;
pub mod stack;
pub mod wait;

pub use binaries::Binaries;
pub use clients::{
    AccountStatus, Connector, ConnectorStatus, FakeM365, FakePbx, HostControl, InstanceInfo,
    PbxConnection, PbxNode,
};
pub use node_host::HostKind;
pub use stack::{M365Options, PbxOptions, Stack, StackOptions, TeamsAccount};
