//! Test fixture guest: one small route per host capability, so host tests can drive each import
//! over real HTTP and WebSocket connections. Also the seed of a host-conformance suite.

use std::cell::RefCell;

wit_bindgen::generate!({ path: "../../wit", world: "connector" });

use connector::host::types::{
    Event, Header, HttpError, HttpRequest, HttpResponse, InboundRequest, InitReason, WsDirection,
    WsFrame,
};
use connector::host::{
    config, http_client, http_server, keys, kv, log, metrics, timers, websocket,
};
use exports::connector::host::guest::Guest;

#[cfg(not(feature = "v2"))]
const VERSION: &str = "test-guest v1";
#[cfg(feature = "v2")]
const VERSION: &str = "test-guest v2";

/// In-memory state of this guest instance. Which inbound request waits for which timer,
/// outgoing request or dial lives in KV instead (`wait/<id>`), so it survives swaps and restarts.
#[derive(Default)]
struct State {
    /// events handled by this instance (handed over through `snapshot`)
    handled: u64,
    /// how this instance was initialised, for `/init`
    init: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

struct TestGuest;

impl Guest for TestGuest {
    fn api_version() -> String {
        "0.1.0".to_string()
    }

    fn version() -> String {
        VERSION.to_string()
    }

    fn handle(events: Vec<Event>) -> Result<(), String> {
        for event in events {
            STATE.with(|s| s.borrow_mut().handled += 1);
            handle_one(event)?;
        }
        Ok(())
    }

    fn snapshot() -> Option<Vec<u8>> {
        Some(STATE.with(|s| s.borrow().handled).to_string().into_bytes())
    }
}

export!(TestGuest);

fn handle_one(event: Event) -> Result<(), String> {
    match event {
        Event::Init(info) => {
            let reason = match info.reason {
                InitReason::Start => "start",
                InitReason::Restart => "restart",
                InitReason::Upgrade => "upgrade",
            };
            let snapshot = info
                .snapshot
                .map(|s| String::from_utf8_lossy(&s).into_owned());
            let text = format!(
                "{reason} from={} snapshot={} open_ws={}",
                info.from_version.unwrap_or_default(),
                snapshot.unwrap_or_default(),
                info.open_websockets.len()
            );
            log::write(log::Level::Info, "app", &format!("init: {text}"));
            STATE.with(|s| s.borrow_mut().init = text);
            Ok(())
        }
        Event::HttpRequest((id, req)) => on_request(id, req),
        Event::HttpResponse((request, outcome)) => {
            let Some(inbound) = take_waiter(request) else {
                return Ok(());
            };
            let text = match outcome {
                Ok(resp) => format!(
                    "fetched {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ),
                Err(e) => format!("error {}", describe_error(&e)),
            };
            reply(inbound, 200, text);
            Ok(())
        }
        Event::WsOpen(open) => {
            if let WsDirection::Outbound = open.direction {
                if let Some(inbound) = take_waiter(open.id) {
                    reply(inbound, 200, format!("open {}", open.id));
                }
                websocket::send(open.id, &WsFrame::Text(format!("hello from {VERSION}")));
            }
            Ok(())
        }
        Event::WsMessage((id, frame)) => {
            let echo = match frame {
                WsFrame::Text(text) if text == "close-me" => {
                    websocket::close(id, 1000, "asked to");
                    return Ok(());
                }
                WsFrame::Text(text) => WsFrame::Text(format!("{VERSION}: {text}")),
                WsFrame::Binary(bytes) => WsFrame::Binary(bytes),
            };
            if let WsFrame::Text(t) = &echo {
                kv::set("ws/last", t.as_bytes());
            }
            websocket::send(id, &echo);
            Ok(())
        }
        Event::WsClosed(closed) => {
            if let Some(inbound) = take_waiter(closed.id) {
                reply(
                    inbound,
                    200,
                    format!("closed {} {}", closed.code, closed.reason),
                );
            }
            Ok(())
        }
        Event::Timer((timer, tag)) => {
            if let Some(inbound) = take_waiter(timer) {
                reply(inbound, 200, format!("timer fired {tag}"));
            }
            Ok(())
        }
    }
}

fn on_request(id: u64, req: InboundRequest) -> Result<(), String> {
    let q = |name: &str| query_param(&req.query, name);
    match req.path.as_str() {
        "/hello" => reply(id, 200, VERSION.to_string()),
        "/init" => reply(id, 200, STATE.with(|s| s.borrow().init.clone())),
        "/echo" => reply_bytes(id, 200, req.body.clone()),
        "/headers" => {
            let mut text = format!("{} {} peer={}\n", req.method, req.query, req.peer);
            for h in &req.headers {
                text.push_str(&format!("{}: {}\n", h.name, h.value));
            }
            reply(id, 200, text)
        }
        "/kv/set" => {
            kv::set(&q("k").unwrap_or_default(), &req.body);
            reply(id, 200, "ok".into())
        }
        "/kv/get" => match kv::get(&q("k").unwrap_or_default()) {
            Some(v) => reply_bytes(id, 200, v),
            None => reply(id, 404, "absent".into()),
        },
        "/kv/delete" => {
            kv::delete(&q("k").unwrap_or_default());
            reply(id, 200, "ok".into())
        }
        "/kv/cas" => {
            let key = q("k").unwrap_or_default();
            let expected = q("expected").map(String::into_bytes);
            let new = q("new").map(String::into_bytes);
            let swapped = kv::cas(&key, expected.as_deref(), new.as_deref());
            reply(id, 200, swapped.to_string())
        }
        "/kv/scan" => {
            // Walks every page so that paging is exercised; `limit` sets the page size.
            let prefix = q("prefix").unwrap_or_default();
            let limit = q("limit").and_then(|l| l.parse().ok()).unwrap_or(2);
            let mut cursor = None;
            let mut text = String::new();
            let mut pages = 0;
            loop {
                let page = kv::scan_prefix(&prefix, cursor.as_deref(), limit);
                pages += 1;
                for e in page.entries {
                    text.push_str(&format!(
                        "{}={}\n",
                        e.key,
                        String::from_utf8_lossy(&e.value)
                    ));
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            text.push_str(&format!("pages={pages}\n"));
            reply(id, 200, text)
        }
        "/count" => {
            let n = kv::get("count")
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            kv::set("count", n.to_string().as_bytes());
            reply(id, 200, n.to_string())
        }
        "/trap-after-write" => {
            kv::set("trap-key", b"written before the trap");
            reply(id, 200, "must never be sent".into());
            panic!("trap after write");
        }
        "/poison" => panic!("poisoned request"),
        "/err" => {
            kv::set("err-key", b"written before err");
            return Err("handler refused".into());
        }
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "/fetch" => {
            let url = q("url").unwrap_or_default();
            let request = http_client::start(&HttpRequest {
                method: "GET".into(),
                url,
                headers: vec![Header {
                    name: "x-test".into(),
                    value: VERSION.into(),
                }],
                body: Vec::new(),
                timeout_ms: q("timeout").and_then(|t| t.parse().ok()).unwrap_or(5000),
            });
            wait_for(request, id);
        }
        "/timer" => {
            let ms = q("ms").and_then(|m| m.parse().ok()).unwrap_or(10);
            let timer = timers::set(ms, &format!("after {ms} ms"));
            wait_for(timer, id);
        }
        "/timer-cancelled" => {
            let timer = timers::set(1, "cancelled");
            timers::cancel(timer);
            reply(id, 200, "cancelled".into());
        }
        "/ws-connect" => {
            let ws = websocket::connect(&q("url").unwrap_or_default(), &[]);
            wait_for(ws, id);
        }
        "/config" => {
            let mut text = String::new();
            for s in config::get_all() {
                text.push_str(&format!("{}={}\n", s.name, s.value));
            }
            reply(id, 200, text)
        }
        "/metrics" => {
            let label = metrics::Label {
                name: "route".into(),
                value: "metrics".into(),
            };
            metrics::counter_add("test_guest_hits", std::slice::from_ref(&label), 1);
            metrics::gauge_set("test_guest_gauge", &[label], 2.5);
            reply(id, 200, "counted".into())
        }
        "/log" => {
            let enabled = log::enabled(log::Level::Debug, "app");
            log::write(log::Level::Info, "app", "hello from the test guest");
            reply(id, 200, format!("debug enabled={enabled}"))
        }
        path if path.starts_with("/keys/") => keys_route(id, &path[6..], &req)?,
        _ => reply(id, 404, format!("test guest has no route {}", req.path)),
    }
    Ok(())
}

fn keys_route(id: u64, route: &str, req: &InboundRequest) -> Result<(), String> {
    let q = |name: &str| query_param(&req.query, name);
    let name = q("name").unwrap_or_else(|| "k1".into());
    match route {
        "generate" => {
            let bits = q("bits").and_then(|b| b.parse().ok()).unwrap_or(2048);
            match keys::generate_rsa(&name, bits) {
                Ok(()) => reply(id, 200, "generated".into()),
                Err(e) => reply(id, 400, format!("{e:?}")),
            }
        }
        "exists" => reply(id, 200, keys::exists(&name).to_string()),
        "delete" => {
            keys::delete(&name);
            reply(id, 200, "deleted".into())
        }
        "public" => match keys::public_key_der(&name) {
            Ok(der) => reply_bytes(id, 200, der),
            Err(e) => reply(id, 404, format!("{e:?}")),
        },
        "cert" => {
            let cn = q("cn").unwrap_or_else(|| "test".into());
            match keys::self_signed_certificate(&name, &cn, 30) {
                Ok(der) => reply_bytes(id, 200, der),
                Err(e) => reply(id, 400, format!("{e:?}")),
            }
        }
        "decrypt" => {
            // Body: one hex ciphertext per line. Answer: one hex plaintext (or `error`) per line.
            let hash = match q("hash").as_deref() {
                Some("sha1") => keys::OaepHash::Sha1,
                _ => keys::OaepHash::Sha256,
            };
            let text = String::from_utf8_lossy(&req.body);
            let cts: Vec<Vec<u8>> = text.lines().filter(|l| !l.is_empty()).map(unhex).collect();
            match keys::rsa_oaep_decrypt(&name, hash, &cts) {
                Ok(results) => {
                    let lines: Vec<String> = results
                        .into_iter()
                        .map(|r| match r {
                            Ok(p) => hex(&p),
                            Err(_) => "error".into(),
                        })
                        .collect();
                    reply(id, 200, lines.join("\n"))
                }
                Err(e) => reply(id, 400, format!("{e:?}")),
            }
        }
        "sign-verify" => {
            let sig = keys::sign_rs256(&name, &req.body).map_err(|e| format!("{e:?}"))?;
            let der = keys::public_key_der(&name).map_err(|e| format!("{e:?}"))?;
            let ok = keys::verify_rs256(&keys::PublicKey::SpkiDer(der.clone()), &req.body, &sig);
            let mut tampered = req.body.clone();
            tampered.push(b'!');
            let bad = keys::verify_rs256(&keys::PublicKey::SpkiDer(der), &tampered, &sig);
            reply(
                id,
                200,
                format!("valid={ok} tampered={bad} sig={}", hex(&sig)),
            )
        }
        "seal" => {
            // Stores the sealed secret in KV; the plaintext never reaches the store.
            let sealed = keys::seal(&req.body);
            kv::set(&format!("sealed/{name}"), &sealed);
            reply(id, 200, "sealed".into())
        }
        "unseal" => match kv::get(&format!("sealed/{name}")) {
            Some(sealed) => match keys::unseal(&sealed) {
                Ok(plain) => reply_bytes(id, 200, plain),
                Err(e) => reply(id, 500, format!("{e:?}")),
            },
            None => reply(id, 404, "nothing sealed".into()),
        },
        "unseal-tampered" => {
            let mut sealed = keys::seal(b"secret");
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            reply(id, 200, keys::unseal(&sealed).is_err().to_string())
        }
        _ => reply(id, 404, format!("no key route {route}")),
    }
    Ok(())
}

/// Remembers that inbound request `inbound` waits for the outcome of `what`.
fn wait_for(what: u64, inbound: u64) {
    kv::set(&format!("wait/{what}"), inbound.to_string().as_bytes());
}

/// The inbound request waiting for `what`, if any (forgotten once taken).
fn take_waiter(what: u64) -> Option<u64> {
    let key = format!("wait/{what}");
    let inbound = kv::get(&key)?;
    kv::delete(&key);
    String::from_utf8(inbound).ok()?.parse().ok()
}

fn reply(id: u64, status: u16, text: String) {
    reply_bytes(id, status, text.into_bytes());
}

fn reply_bytes(id: u64, status: u16, body: Vec<u8>) {
    http_server::respond(
        id,
        &HttpResponse {
            status,
            headers: vec![Header {
                name: "x-guest-version".into(),
                value: VERSION.into(),
            }],
            body,
        },
    );
}

fn describe_error(e: &HttpError) -> String {
    match e {
        HttpError::Timeout => "timeout".into(),
        HttpError::Denied(t) => format!("denied {t}"),
        HttpError::Connection(t) => format!("connection {t}"),
        HttpError::Tls(t) => format!("tls {t}"),
        HttpError::TooLarge => "too-large".into(),
        HttpError::Invalid(t) => format!("invalid {t}"),
    }
}

/// Minimal query parsing: `a=b&c=d`, `%XX` decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}
