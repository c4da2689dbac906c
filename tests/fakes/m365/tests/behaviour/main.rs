//! Behaviour tests of the fake, pinning graph.md section 10 (see tests/fakes/COVERAGE.md).

mod batch_throttle;
mod calendar_contacts;
mod clouds;
mod common;
mod graph;
mod presence;
mod socket;
mod subscriptions;
mod token;
