//! The one HTTP client every HTTP row uses (hyper, keep-alive pool, loopback), closed-loop
//! load and a plain hyper server to compare with.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The client type.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive client.
pub fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `GET url` -> status and body.
pub async fn get(client: &HttpClient, url: &str) -> Result<(u16, Bytes)> {
    let resp = client.get(url.parse()?).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// `POST url` without a body -> status and body.
pub async fn post(client: &HttpClient, url: &str) -> Result<(u16, Bytes)> {
    let req = hyper::Request::post(url).body(Empty::new())?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// Closed-loop load: `clients` tasks each send `total / clients` GETs back to back (the next
/// after the answer). Returns requests per second over the whole burst. Every answer must be
/// 200, so an error page can never look fast.
pub async fn requests_per_sec(
    client: &HttpClient,
    url: &str,
    total: usize,
    clients: usize,
) -> Result<f64> {
    let per_client = (total / clients).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                let (status, _) = get(&client, &url).await?;
                if status != 200 {
                    bail!("{url} answered {status}");
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_client * clients) as f64 / started.elapsed().as_secs_f64())
}

/// A plain hyper HTTP/1 server on loopback answering every request with `body`: the baseline
/// a guest handler is compared with (same runtime, same client, same concurrency).
pub async fn plain_hyper(body: &'static str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(body.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Polls `probe` every millisecond until it is true or `limit` passes.
pub async fn wait_for(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if probe() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    probe()
}
