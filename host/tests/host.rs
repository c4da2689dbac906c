//! Integration tests of the host over real loopback sockets with the real test guest.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame within the deadline")
            .expect("stream open")
            .expect("valid frame");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_is_routed_and_answered() {
    let h = TestHost::start().await;
    assert_eq!(get(&h.t("/hello")).await, (200, "test-guest v1".into()));
    let (status, text) = get(&h.t("/headers?a=1&b=2")).await;
    assert_eq!(status, 200);
    assert!(text.starts_with("GET a=1&b=2 peer=127.0.0.1:"), "{text}");
    let (_, config) = get(&h.t("/config")).await;
    assert!(config.contains("instance.name=t\n"), "{config}");
    assert!(config.contains("instance.password=pw-t\n"), "{config}");
    assert!(config.contains("greeting=hello\n"), "{config}");
    assert!(config.contains("list=[1,2]\n"), "{config}");
    assert_eq!(get(&h.t("/nothing-here")).await.0, 404);
    assert_eq!(get(&format!("{}/healthz", h.base)).await.0, 200);
    assert_eq!(get(&format!("{}/readyz", h.base)).await.0, 200);
    let (status, text) = get(&format!("{}/test.local/nobody/hello", h.base)).await;
    assert_eq!(status, 404);
    assert!(text.contains("no instance serves"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_operations_see_own_writes_and_page() {
    let h = TestHost::start().await;
    for (k, v) in [("p/a", "1"), ("p/b", "2"), ("p/c", "3"), ("q/x", "9")] {
        assert_eq!(post(&h.t(&format!("/kv/set?k={k}")), v).await.0, 200);
    }
    assert_eq!(get(&h.t("/kv/get?k=p/b")).await, (200, "2".into()));
    assert_eq!(get(&h.t("/kv/get?k=p/zz")).await.0, 404);
    let (_, scan) = get(&h.t("/kv/scan?prefix=p/&limit=2")).await;
    assert_eq!(scan, "p/a=1\np/b=2\np/c=3\npages=2\n");
    assert_eq!(get(&h.t("/kv/cas?k=p/a&expected=1&new=10")).await.1, "true");
    assert_eq!(
        get(&h.t("/kv/cas?k=p/a&expected=1&new=11")).await.1,
        "false"
    );
    assert_eq!(get(&h.t("/kv/cas?k=fresh&new=1")).await.1, "true");
    assert_eq!(get(&h.t("/kv/get?k=p/a")).await.1, "10");
    assert_eq!(get(&h.t("/kv/delete?k=p/a")).await.0, 200);
    assert_eq!(get(&h.t("/kv/get?k=p/a")).await.0, 404);
    // Instances do not see each other's keys.
    assert_eq!(
        get(&format!("{}/test.local/u/kv/get?k=p/b", h.base))
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_guest() {
    let h = TestHost::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(h.ws_url("/socket"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "test-guest v1: hi");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let frame = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame, Message::binary(vec![1u8, 2, 3]));
    // The guest closes on request.
    ws.send(Message::text("close-me")).await.unwrap();
    let frame = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    match frame {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_http_completes_as_an_event_and_denied_never_dials() {
    let h = TestHost::start().await;
    let (addr, hits) = upstream().await;
    let (status, text) = get(&h.t(&format!("/fetch?url=http://{addr}/x"))).await;
    assert_eq!(status, 200);
    assert_eq!(text, "fetched 200 hello-from-upstream (test-guest v1)");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // localhost is not on the allow-list (only 127.0.0.1 is).
    let (status, text) = get(&h.t(&format!("/fetch?url=http://localhost:{}/x", addr.port()))).await;
    assert_eq!(status, 200);
    assert!(text.starts_with("error denied localhost:"), "{text}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a denied request must not reach the network"
    );
    // Connection refused is a connection error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_, text) = get(&h.t(&format!("/fetch?url=http://{closed}/"))).await;
    assert!(text.starts_with("error connection"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_websocket_connects_or_reports_1006() {
    let h = TestHost::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        let _ = got_tx.send(first.into_text().unwrap().to_string());
    });
    let (_, text) = get(&h.t(&format!("/ws-connect?url=ws://{addr}/feed"))).await;
    assert!(text.starts_with("open "), "{text}");
    let greeting = tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, "hello from test-guest v1");
    let (_, text) = get(&h.t("/ws-connect?url=ws://localhost:1/feed")).await;
    assert!(text.starts_with("closed 1006 denied"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_fires_and_cancelled_timer_does_not() {
    let h = TestHost::start().await;
    assert_eq!(
        get(&h.t("/timer?ms=50")).await,
        (200, "timer fired after 50 ms".into())
    );
    assert_eq!(get(&h.t("/timer-cancelled")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_then_trap_leaves_no_write_and_err_discards_too() {
    let h = TestHost::start().await;
    let (status, text) = get(&h.t("/trap-after-write")).await;
    assert_eq!(status, 500, "{text}");
    assert_ne!(text, "must never be sent");
    assert_eq!(get(&h.t("/kv/get?k=trap-key")).await.0, 404);
    assert_eq!(get(&h.t("/err")).await.0, 500);
    assert_eq!(get(&h.t("/kv/get?k=err-key")).await.0, 404);
    // The instance was restarted from KV and serves again.
    assert_eq!(get(&h.t("/hello")).await.0, 200);
    assert!(get(&h.t("/init")).await.1.starts_with("restart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_event_is_dead_lettered_while_others_flow() {
    let h = TestHost::start().await;
    let base = h.t("");
    let counting = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(get(&format!("{base}/count")).await);
        }
        answers
    });
    let (status, _) = get(&h.t("/poison")).await;
    assert_eq!(status, 500);
    let answers = counting.await.unwrap();
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let counts: Vec<u64> = answers.iter().map(|(_, b)| b.parse().unwrap()).collect();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>());
    let ctx = h.host.instance("t").unwrap();
    assert_eq!(ctx.metrics.dead_letters.load(Ordering::Relaxed), 1);
    assert!(ctx.metrics.traps.load(Ordering::Relaxed) >= 3);
    let (_, metrics) = get(&format!("{}/metrics", h.base)).await;
    assert!(
        metrics.contains("apphost_dead_letters_total{instance=\"t\"} 1"),
        "{metrics}"
    );
    // The dead letter is stored in sled.
    h.host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_loop_is_interrupted_and_the_host_keeps_serving() {
    let h = TestHost::start().await;
    let looping = tokio::spawn({
        let url = h.t("/loop");
        async move { get(&url).await }
    });
    // Instance `u` is unaffected while `t` loops, and `t`'s queue drains afterwards.
    for _ in 0..5 {
        assert_eq!(get(&format!("{}/test.local/u/hello", h.base)).await.0, 200);
    }
    assert_eq!(looping.await.unwrap().0, 500);
    assert_eq!(get(&h.t("/hello")).await, (200, "test-guest v1".into()));
    // Memory cap: growing until the cap traps as well, and the instance comes back.
    assert_eq!(get(&h.t("/grow")).await.0, 500);
    assert_eq!(get(&h.t("/count")).await, (200, "1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_no_crash() {
    let h = TestHost::start().await;
    let (status, text) = post(&h.t("/echo"), vec![b'x'; 70_000]).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(post(&h.t("/echo"), vec![b'x'; 1000]).await.0, 200);

    // A WebSocket client that sends an unmasked frame violates RFC 6455.
    let mut tcp = tokio::net::TcpStream::connect(h.host.http_addr)
        .await
        .unwrap();
    let handshake = "GET /test.local/t/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    tcp.write_all(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .expect("the host closes the malformed connection")
        .ok();
    if let Some(first) = rest.first() {
        assert_eq!(*first, 0x88, "a close frame");
        assert_eq!(&rest[2..4], &1002u16.to_be_bytes(), "protocol error code");
    }
    assert_eq!(get(&h.t("/hello")).await.0, 200);
    // Garbage on the socket is not a crash either.
    let mut tcp = tokio::net::TcpStream::connect(h.host.http_addr)
        .await
        .unwrap();
    tcp.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
    assert_eq!(get(&h.t("/hello")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_metrics_and_logs_are_published() {
    let h = TestHost::start().await;
    assert_eq!(get(&h.t("/metrics")).await.0, 200);
    assert_eq!(get(&h.t("/log")).await, (200, "debug enabled=false".into()));
    let (_, text) = get(&format!("{}/metrics", h.base)).await;
    assert!(
        text.contains("test_guest_hits{instance=\"t\",route=\"metrics\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("test_guest_gauge{instance=\"t\",route=\"metrics\"} 2.5"),
        "{text}"
    );
    assert!(
        text.contains("apphost_events_total{instance=\"t\"}"),
        "{text}"
    );
    assert!(
        text.contains("apphost_commit_seconds_count{instance=\"t\"}"),
        "{text}"
    );
    let (status, text) = get(&format!("http://{}/instances", h.host.control_addr)).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"version\":\"test-guest v1\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_nothing() {
    let h = TestHost::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(h.ws_url("/socket"))
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "test-guest v1: before");

    // Work in flight across the swap: a timer and an outgoing request to a slow upstream.
    let slow = slow_upstream(Duration::from_millis(3000)).await;
    let pending_timer = tokio::spawn({
        let url = h.t("/timer?ms=3000");
        async move { get(&url).await }
    });
    let pending_fetch = tokio::spawn({
        let url = h.t(&format!("/fetch?url=http://{slow}/"));
        async move { get(&url).await }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, stop, sent) = (h.t("/hello"), stop.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                answers.push(get(&url).await);
            }
            answers
        }));
    }
    eventually("some requests before the swap", || {
        let n = sent.load(Ordering::Relaxed);
        async move { n > 20 }
    })
    .await;
    // Replace the file the way a deployment would: write aside, then rename over.
    let plugins = h.dir.join("plugins");
    std::fs::copy(
        artifact("test-guest-v2.wasm"),
        plugins.join("test.wasm.new"),
    )
    .unwrap();
    std::fs::rename(plugins.join("test.wasm.new"), plugins.join("test.wasm")).unwrap();
    let url = h.t("/hello");
    eventually("v2 answers", || {
        let url = url.clone();
        async move { get(&url).await.1 == "test-guest v2" }
    })
    .await;
    assert!(
        !pending_timer.is_finished() && !pending_fetch.is_finished(),
        "the swap must happen while the timer and the request are still pending"
    );
    let after = sent.load(Ordering::Relaxed);
    eventually("more requests after the swap", || {
        let n = sent.load(Ordering::Relaxed);
        async move { n > after + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let answers = c.await.unwrap();
        total += answers.len();
        for (status, body) in answers {
            assert_eq!(status, 200);
            assert!(body == "test-guest v1" || body == "test-guest v2", "{body}");
        }
    }
    assert_eq!(
        total,
        sent.load(Ordering::Relaxed),
        "every request answered"
    );
    // The timer and the outgoing request started under v1 completed into v2.
    assert_eq!(
        pending_timer.await.unwrap(),
        (200, "timer fired after 3000 ms".into())
    );
    assert_eq!(
        pending_fetch.await.unwrap(),
        (200, "fetched 200 slow-upstream".into())
    );
    // The WebSocket survived and now talks to v2; v2 got the snapshot and the open socket.
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "test-guest v2: after");
    let (_, init) = get(&h.t("/init")).await;
    assert!(
        init.starts_with("upgrade from=test-guest v1 snapshot="),
        "{init}"
    );
    assert!(init.ends_with("open_ws=1"), "{init}");

    // A broken component is rejected; v2 keeps serving.
    std::fs::write(plugins.join("test.wasm"), b"\0asm broken").unwrap();
    let control = format!("http://{}/instances/t/reload", h.host.control_addr);
    let (status, text) = post(&control, Vec::new()).await;
    assert_eq!(status, 409, "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&h.t("/hello")).await.1, "test-guest v2");
    ws.send(Message::text("still")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "test-guest v2: still");
    // Back to v1 on request through the control listener.
    std::fs::copy(artifact("test-guest-v1.wasm"), plugins.join("test.wasm")).unwrap();
    let (status, text) = post(&control, Vec::new()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(get(&h.t("/hello")).await.1, "test-guest v1");
}

/// An upstream that answers `slow-upstream` after `delay`.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("slow-upstream")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}
