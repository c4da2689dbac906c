//! Log targets switch at run time through the control listener (own test binary, because the
//! filter is process-wide).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_targets_switch_at_run_time() {
    let h = TestHost::start().await;
    let control = format!("http://{}/log", h.host.control_addr);
    assert_eq!(get(&h.t("/log")).await.1, "debug enabled=false");
    let (status, text) = send("PUT", &control, b"info,guest.app=debug".to_vec()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(get(&h.t("/log")).await.1, "debug enabled=true");
    assert_eq!(get(&control).await.1, "info,guest.app=debug");
    let (status, _) = send("PUT", &control, b"info,guest.app=loud".to_vec()).await;
    assert_eq!(status, 400, "an invalid level is refused");
    assert_eq!(send("PUT", &control, b"info".to_vec()).await.0, 200);
    assert_eq!(get(&h.t("/log")).await.1, "debug enabled=false");
}
