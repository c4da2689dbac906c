//! The control listener (loopback by default): instance status, hot swap on request, log filter.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::host::Plugins;
use crate::server::text;

/// Serves control requests until aborted.
pub async fn serve(listener: TcpListener, plugins: Arc<Plugins>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let plugins = plugins.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let plugins = plugins.clone();
                async move { Ok::<_, Infallible>(handle(&plugins, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(plugins: &Plugins, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["instances"]) => {
            let mut list = Vec::new();
            for (name, ctx) in &plugins.instances {
                use std::sync::atomic::Ordering::Relaxed;
                let status = ctx.status.lock().expect("status").clone();
                let m = &ctx.metrics;
                list.push(serde_json::json!({
                    "name": name,
                    "domain": ctx.config.domain,
                    "plugin": ctx.config.plugin,
                    "status": status,
                    "events": m.events.load(Relaxed),
                    "traps": m.traps.load(Relaxed),
                    "dead_letters": m.dead_letters.load(Relaxed),
                    "swaps": m.swaps.load(Relaxed),
                    "queue": m.queue_depth.load(Relaxed),
                    "websockets": ctx.websockets.lock().expect("websockets").len(),
                }));
            }
            list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            let mut resp = text(StatusCode::OK, serde_json::Value::Array(list).to_string());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        (Method::POST, ["instances", name, "reload"]) => match plugins.reload(name).await {
            Ok(version) => text(StatusCode::OK, format!("swapped to {version}\n")),
            Err(e) => text(StatusCode::CONFLICT, format!("rejected: {e:#}\n")),
        },
        (Method::GET, ["log"]) => text(StatusCode::OK, crate::logging::current_filter()),
        (Method::PUT, ["log"]) => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let filter = String::from_utf8_lossy(&body).trim().to_string();
            match crate::logging::set_filter(&filter) {
                Ok(()) => text(StatusCode::OK, format!("log filter now {filter}\n")),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e:#}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "control: GET /instances, POST /instances/<name>/reload, GET|PUT /log\n",
        ),
    }
}
