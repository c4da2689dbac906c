//! The runner for the simulation host: every step becomes something a [`World`] does in virtual
//! time. The world plays the parts a real host gets from the network: the client, the local
//! upstream (with its delays and timeouts), a refused port, and the outbound allow-list
//! (only `127.0.0.1` is allowed, as in the other runners' configurations).

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use simhost::bindings::{
    HttpError, HttpRequest, HttpResponse, InboundRequest, WsDirection, WsFrame, WsOpen,
};
use simhost::{Guest, Ids, Incoming, Sim, SimConfig, World};

use crate::{Answer, Script, Step, Vars, upstream_body, upstream_delay_ms};

/// Virtual ports of the upstream (HTTP), a closed port, and the WebSocket upstream.
const UPSTREAM_PORT: u16 = 8001;
const CLOSED_PORT: u16 = 8002;
const WS_PORT: u16 = 8003;
/// How much virtual time a step may take before it counts as "never answered".
const PATIENCE_MS: u64 = 600_000;

/// Script addresses in the simulated network.
pub fn vars() -> Vars {
    Vars {
        upstream: format!("http://127.0.0.1:{UPSTREAM_PORT}"),
        denied: format!("http://localhost:{UPSTREAM_PORT}"),
        closed: format!("http://127.0.0.1:{CLOSED_PORT}"),
        upstream_ws: format!("ws://127.0.0.1:{WS_PORT}"),
        denied_ws: format!("ws://localhost:{WS_PORT}"),
    }
}

/// Both test guest versions, compiled once per process.
fn guests() -> Result<&'static (Guest, Guest)> {
    static GUESTS: OnceLock<(Guest, Guest)> = OnceLock::new();
    if let Some(g) = GUESTS.get() {
        return Ok(g);
    }
    let engine = simhost::engine()?;
    let v1 = Guest::load(&engine, &crate::test_guest("v1")?)?;
    let v2 = Guest::load(&engine, &crate::test_guest("v2")?)?;
    Ok(GUESTS.get_or_init(|| (v1, v2)))
}

/// Something the client side does at the current virtual time.
#[derive(Debug)]
enum Action {
    Http {
        name: String,
        method: String,
        path: String,
        body: Vec<u8>,
    },
    WsOpen {
        name: String,
        path: String,
    },
    WsMessage {
        name: String,
        frame: WsFrame,
    },
    WsClose {
        name: String,
    },
}

/// A frame the client received.
#[derive(Debug, PartialEq)]
enum Received {
    Text(String),
    Binary(Vec<u8>),
    Close(u16),
}

/// The world of a conformance script.
#[derive(Default)]
struct ScriptWorld {
    now: u64,
    actions: VecDeque<Action>,
    /// Completions the upstream will deliver: (due, order, id, what).
    scheduled: Vec<(u64, u64, u64, Incoming)>,
    order: u64,
    /// inbound id -> (request name, sent at)
    inbound: HashMap<u64, (String, u64)>,
    answers: HashMap<String, Answer>,
    ws_by_name: HashMap<String, u64>,
    ws_names: HashMap<u64, String>,
    received: HashMap<String, VecDeque<Received>>,
    upstream_ws: Vec<u64>,
    seen_requests: Vec<String>,
    seen_frames: Vec<String>,
}

impl ScriptWorld {
    fn schedule(&mut self, due: u64, id: u64, what: Incoming) {
        self.order += 1;
        self.scheduled.push((due, self.order, id, what));
    }
}

/// `scheme://host:port/path` -> (host, port, path).
fn split_url(url: &str) -> (String, u16, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = authority
        .rsplit_once(':')
        .map_or((authority, 80), |(h, p)| (h, p.parse().unwrap_or(80)));
    (host.to_string(), port, path.to_string())
}

fn denied(host: &str, port: u16) -> String {
    format!("{host}:{port} is not on this instance's outbound allow-list")
}

impl World for ScriptWorld {
    fn http_start(&mut self, now: u64, id: u64, req: HttpRequest) {
        let (host, port, path) = split_url(&req.url);
        let (due, result) = if host != "127.0.0.1" {
            (now, Err(HttpError::Denied(denied(&host, port))))
        } else if port != UPSTREAM_PORT {
            (
                now + 1,
                Err(HttpError::Connection("connection refused".into())),
            )
        } else {
            let x_test = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("x-test"))
                .map(|h| h.value.clone())
                .unwrap_or_default();
            let path = path.split('?').next().unwrap_or("/").to_string();
            self.seen_requests
                .push(format!("{} {path} {x_test}", req.method));
            let delay = upstream_delay_ms(&path).max(1);
            if u64::from(req.timeout_ms) < delay {
                (now + u64::from(req.timeout_ms), Err(HttpError::Timeout))
            } else {
                let body = upstream_body(&req.method, &path, &x_test).into_bytes();
                let resp = HttpResponse {
                    status: 200,
                    headers: vec![],
                    body,
                };
                (now + delay, Ok(resp))
            }
        };
        self.schedule(due, id, Incoming::HttpResponse(id, result));
    }

    fn http_cancel(&mut self, _now: u64, id: u64) {
        self.scheduled.retain(|(_, _, i, _)| *i != id);
    }

    fn respond(&mut self, now: u64, id: u64, resp: HttpResponse) {
        if let Some((name, sent)) = self.inbound.remove(&id) {
            self.answers.insert(
                name,
                Answer {
                    status: resp.status,
                    body: resp.body,
                    elapsed_ms: now - sent,
                },
            );
        }
    }

    fn ws_connect(&mut self, now: u64, id: u64, url: String) {
        let (host, port, _) = split_url(&url);
        if host != "127.0.0.1" {
            let reason = format!("denied: {}", denied(&host, port));
            self.schedule(now, id, Incoming::WsClosed(id, 1006, reason));
        } else if port != WS_PORT {
            let reason = "connection refused".to_string();
            self.schedule(now + 1, id, Incoming::WsClosed(id, 1006, reason));
        } else {
            self.upstream_ws.push(id);
            let open = WsOpen {
                id,
                direction: WsDirection::Outbound,
                path: url,
                headers: vec![],
                peer: format!("127.0.0.1:{port}"),
            };
            self.schedule(now + 1, id, Incoming::WsOpen(open));
        }
    }

    fn ws_send(&mut self, _now: u64, id: u64, frame: WsFrame) {
        if self.upstream_ws.contains(&id) {
            if let WsFrame::Text(t) = frame {
                self.seen_frames.push(t);
            }
        } else if let Some(name) = self.ws_names.get(&id) {
            let received = match frame {
                WsFrame::Text(t) => Received::Text(t),
                WsFrame::Binary(b) => Received::Binary(b),
            };
            self.received
                .entry(name.clone())
                .or_default()
                .push_back(received);
        }
    }

    fn ws_close(&mut self, _now: u64, id: u64, code: u16, _reason: String) {
        if let Some(name) = self.ws_names.get(&id) {
            self.received
                .entry(name.clone())
                .or_default()
                .push_back(Received::Close(code));
        }
    }

    fn next_wakeup(&self) -> Option<u64> {
        let scheduled = self.scheduled.iter().map(|(due, ..)| *due).min();
        if self.actions.is_empty() {
            scheduled
        } else {
            Some(self.now)
        }
    }

    fn poll(&mut self, now: u64, ids: &mut Ids) -> Vec<Incoming> {
        let mut out = Vec::new();
        self.scheduled
            .sort_by_key(|(due, order, ..)| (*due, *order));
        while self.scheduled.first().is_some_and(|(due, ..)| *due <= now) {
            out.push(self.scheduled.remove(0).3);
        }
        while let Some(action) = self.actions.pop_front() {
            out.push(match action {
                Action::Http {
                    name,
                    method,
                    path,
                    body,
                } => {
                    let id = ids.fresh();
                    self.inbound.insert(id, (name, now));
                    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
                    Incoming::HttpRequest(
                        id,
                        InboundRequest {
                            method,
                            path: path.to_string(),
                            query: query.to_string(),
                            headers: vec![],
                            body,
                            peer: "127.0.0.1:40000".into(),
                        },
                    )
                }
                Action::WsOpen { name, path } => {
                    let id = ids.fresh();
                    self.ws_by_name.insert(name.clone(), id);
                    self.ws_names.insert(id, name);
                    Incoming::WsOpen(WsOpen {
                        id,
                        direction: WsDirection::Inbound,
                        path,
                        headers: vec![],
                        peer: "127.0.0.1:40001".into(),
                    })
                }
                Action::WsMessage { name, frame } => {
                    Incoming::WsMessage(self.ws_by_name[&name], frame)
                }
                Action::WsClose { name } => {
                    let id = self.ws_by_name[&name];
                    Incoming::WsClosed(id, 1000, String::new())
                }
            });
        }
        out
    }
}

/// Runs one script on a fresh simulation.
pub fn run_script(script: &Script) -> Result<()> {
    let (v1, v2) = guests()?;
    let config = SimConfig {
        settings: crate::settings(),
        memory_limit: 32 << 20,
        ..SimConfig::default()
    };
    let mut sim = Sim::start(v1, ScriptWorld::default(), config)?;
    let vars = vars();
    for (i, step) in script.steps.iter().enumerate() {
        let at = || format!("step {} ({step:?})", i + 1);
        run_step(&mut sim, v2, &vars, i, step).with_context(at)?;
    }
    Ok(())
}

fn act(sim: &mut Sim<ScriptWorld>, action: Action) {
    let now = sim.now_ms();
    let world = sim.world_mut();
    world.now = now;
    world.actions.push_back(action);
}

/// Steps the simulation until `done` holds; fails if nothing is left to do or virtual time runs
/// past the patience.
fn settle(
    sim: &mut Sim<ScriptWorld>,
    what: &str,
    done: impl Fn(&ScriptWorld) -> bool,
) -> Result<()> {
    let deadline = sim.now_ms() + PATIENCE_MS;
    while !done(sim.world()) {
        match sim.next_due() {
            Some(due) if due <= deadline => {
                sim.step()?;
            }
            _ => bail!("{what}: never happened"),
        }
    }
    Ok(())
}

/// Sends one request and waits (in virtual time) for its answer.
fn http(
    sim: &mut Sim<ScriptWorld>,
    index: usize,
    method: &str,
    path: String,
    body: Vec<u8>,
) -> Result<Answer> {
    let name = format!("#{index}/{method} {path}");
    act(
        sim,
        Action::Http {
            name: name.clone(),
            method: method.into(),
            path,
            body,
        },
    );
    settle(sim, "an answer", |w| w.answers.contains_key(&name))?;
    Ok(sim.world_mut().answers.remove(&name).expect("answered"))
}

fn run_step(
    sim: &mut Sim<ScriptWorld>,
    v2: &Guest,
    vars: &Vars,
    index: usize,
    step: &Step,
) -> Result<()> {
    match step {
        Step::Http {
            method,
            path,
            body,
            name,
            expect,
        } => {
            let key = name.clone().unwrap_or_else(|| format!("#{index}"));
            act(
                sim,
                Action::Http {
                    name: key.clone(),
                    method: method.clone(),
                    path: vars.apply(path),
                    body: vars.apply(body).into_bytes(),
                },
            );
            match (name, expect) {
                // Deliver the request now; its answer is awaited later.
                (Some(_), None) => settle(sim, "request taken in", |w| w.actions.is_empty())?,
                (None, Some(expect)) => {
                    settle(sim, "an answer", |w| w.answers.contains_key(&key))?;
                    expect.check(&sim.world().answers[&key])?;
                }
                _ => bail!("give either `as` or `expect`"),
            }
        }
        Step::Await { name, expect } => {
            settle(sim, "an answer", |w| w.answers.contains_key(name))?;
            expect.check(&sim.world().answers[name])?;
        }
        Step::WsOpen { name, path } => {
            let path = vars.apply(path);
            act(
                sim,
                Action::WsOpen {
                    name: name.clone(),
                    path,
                },
            );
            settle(sim, "open", |w| w.actions.is_empty())?;
        }
        Step::WsSend {
            name,
            text,
            binary_hex,
        } => {
            let frame = match (text, binary_hex) {
                (Some(t), None) => WsFrame::Text(t.clone()),
                (None, Some(hex)) => WsFrame::Binary(crate::unhex(hex)),
                _ => bail!("give `text` or `binary_hex`"),
            };
            act(
                sim,
                Action::WsMessage {
                    name: name.clone(),
                    frame,
                },
            );
            settle(sim, "frame taken in", |w| w.actions.is_empty())?;
        }
        Step::WsExpect {
            name,
            text,
            binary_hex,
            close,
        } => {
            settle(sim, "a frame", |w| {
                w.received.get(name).is_some_and(|q| !q.is_empty())
            })?;
            let got = sim
                .world_mut()
                .received
                .get_mut(name)
                .and_then(VecDeque::pop_front)
                .ok_or_else(|| anyhow!("no frame"))?;
            let want = match (text, binary_hex, close) {
                (Some(t), _, _) => Received::Text(t.clone()),
                (_, Some(hex), _) => Received::Binary(crate::unhex(hex)),
                (_, _, Some(code)) => Received::Close(*code),
                _ => bail!("give `text`, `binary_hex` or `close`"),
            };
            if got != want {
                bail!("expected {want:?}, got {got:?}");
            }
        }
        Step::WsClose { name } => {
            act(sim, Action::WsClose { name: name.clone() });
            settle(sim, "close taken in", |w| w.actions.is_empty())?;
        }
        Step::UpstreamSeen { requests } => {
            let want: Vec<String> = requests.iter().map(|r| vars.apply(r)).collect();
            let got = &sim.world().seen_requests;
            if *got != want {
                bail!("upstream saw {got:?}");
            }
        }
        Step::UpstreamWsSeen { frames } => {
            let n = frames.len();
            settle(sim, "upstream frames", |w| w.seen_frames.len() >= n)?;
            let got = &sim.world().seen_frames;
            if got != frames {
                bail!("upstream WebSocket saw {got:?}");
            }
        }
        Step::OaepDecrypt {
            key,
            hash,
            plaintexts,
        } => {
            let public = http(
                sim,
                index,
                "GET",
                format!("/keys/public?name={key}"),
                vec![],
            )?;
            if public.status != 200 {
                bail!("/keys/public answered {}", public.status);
            }
            let (body, want) = crate::oaep_batch(&public.body, hash, plaintexts)?;
            let path = format!("/keys/decrypt?name={key}&hash={hash}");
            let answer = http(sim, index, "POST", path, body.into_bytes())?;
            crate::Expect::exact(200, &want).check(&answer)?;
        }
        Step::Restart => sim.crash()?,
        Step::Swap => sim.swap(v2)?,
        Step::Sleep { ms } => {
            let until = sim.now_ms() + ms;
            sim.run_until(until, |_| Ok(()))?;
        }
    }
    Ok(())
}
