//! Behaviour tests of the fake, pinning graph.md section 10 (see tests/fakes/COVERAGE.md).

// Tests flip one switch at a time on a default config; that reads better than struct update.
#![allow(clippy::field_reassign_with_default)]

mod batch_throttle;
mod calendar_contacts;
mod clouds;
mod common;
mod graph;
mod presence;
mod socket;
mod subscriptions;
mod token;
