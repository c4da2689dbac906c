//! `make bench`: measures every figure of issue 10 side by side in one run and prints one
//! markdown table. Needs `make guest test-guests` (the Makefile's `bench` target does it).

use std::time::Instant;

use bench::machine::Machine;
use bench::{Plan, table};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let started = Instant::now();
    let machine = Machine::detect();
    let rows = bench::run(&Plan::full()).await;
    println!("{}", table::render(&machine, &rows, started.elapsed()));
    // Hosts that did not stop in time must not keep the process alive.
    std::process::exit(0);
}
