//! Proves the harness works: every measurement runs once with tiny sizes and yields a row.
//! Figures are not checked (tests never assert speed); only that nothing failed.

use bench::table::Verdict;
use bench::{Plan, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_measurement_runs_with_tiny_sizes() {
    let rows: Vec<Row> = bench::run(&Plan::smoke()).await;
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.measured == "measurement failed")
        .collect();
    assert!(failed.is_empty(), "failed measurements: {failed:#?}");
    assert!(rows.iter().any(|r| r.verdict == Verdict::Info));
    assert!(
        rows.iter()
            .any(|r| matches!(r.verdict, Verdict::Pass | Verdict::Miss))
    );
}
