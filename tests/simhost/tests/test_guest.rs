//! The simulation host runs the host's test guest: the contract's semantics (transactions,
//! timers, outbound requests, traps, crash and swap) hold in virtual time too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use simhost::bindings::{HttpError, HttpRequest, HttpResponse, InboundRequest, WsFrame};
use simhost::{Guest, Ids, Incoming, Sim, SimConfig, World};

const DAY: u64 = 86_400_000;

fn artifact(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../artifacts")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test-guests` first",
        path.display()
    );
    path
}

/// Both test guest versions, compiled once per test binary.
fn guests() -> &'static (Guest, Guest) {
    static GUESTS: OnceLock<(Guest, Guest)> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let engine = simhost::engine().unwrap();
        (
            Guest::load(&engine, &artifact("test-guest-v1.wasm")).unwrap(),
            Guest::load(&engine, &artifact("test-guest-v2.wasm")).unwrap(),
        )
    })
}

/// A scripted world: sends requests at given times, answers outbound requests after a fixed
/// latency, records what the guest answered.
#[derive(Default)]
struct ScriptWorld {
    script: BTreeMap<u64, Vec<String>>,
    /// outbound id -> (due, result)
    outbound: BTreeMap<u64, (u64, Result<HttpResponse, HttpError>)>,
    answers: Vec<(u64, String, u16, String)>,
    sent: BTreeMap<u64, String>,
}

impl ScriptWorld {
    /// Sends `path_and_query` `t` milliseconds after the simulation starts.
    fn at(&mut self, t: u64, path_and_query: &str) {
        let due = SimConfig::default().start_ms + t;
        self.script
            .entry(due)
            .or_default()
            .push(path_and_query.into());
    }

    fn answer_to(&self, path: &str) -> Vec<(u16, String)> {
        self.answers
            .iter()
            .filter(|(_, p, _, _)| p == path)
            .map(|(_, _, s, b)| (*s, b.clone()))
            .collect()
    }
}

impl World for ScriptWorld {
    fn http_start(&mut self, now: u64, id: u64, req: HttpRequest) {
        let result = if req.url.contains("unreachable") {
            Err(HttpError::Connection("refused".into()))
        } else {
            Ok(HttpResponse {
                status: 200,
                headers: vec![],
                body: format!("pong for {}", req.url).into_bytes(),
            })
        };
        self.outbound.insert(id, (now + 40, result));
    }

    fn http_cancel(&mut self, _now: u64, id: u64) {
        self.outbound.remove(&id);
    }

    fn respond(&mut self, now: u64, id: u64, resp: HttpResponse) {
        let path = self.sent.remove(&id).expect("answer to a request we sent");
        self.answers.push((
            now,
            path,
            resp.status,
            String::from_utf8_lossy(&resp.body).into_owned(),
        ));
    }

    fn ws_connect(&mut self, _now: u64, _id: u64, _url: String) {}
    fn ws_send(&mut self, _now: u64, _id: u64, _frame: WsFrame) {}
    fn ws_close(&mut self, _now: u64, _id: u64, _code: u16, _reason: String) {}

    fn next_wakeup(&self) -> Option<u64> {
        let script = self.script.keys().next().copied();
        let outbound = self.outbound.values().map(|(due, _)| *due).min();
        match (script, outbound) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll(&mut self, now: u64, ids: &mut Ids) -> Vec<Incoming> {
        let mut out = Vec::new();
        let due: Vec<u64> = self
            .outbound
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (_, result) = self.outbound.remove(&id).unwrap();
            out.push(Incoming::HttpResponse(id, result));
        }
        while let Some(entry) = self.script.first_entry() {
            if *entry.key() > now {
                break;
            }
            for target in entry.remove() {
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let id = ids.fresh();
                self.sent.insert(id, path.to_string());
                out.push(Incoming::HttpRequest(
                    id,
                    InboundRequest {
                        method: "GET".into(),
                        path: path.into(),
                        query: query.into(),
                        headers: vec![],
                        body: vec![],
                        peer: "127.0.0.1:1".into(),
                    },
                ));
            }
        }
        out
    }
}

fn start(world: ScriptWorld, seed: u64) -> Sim<ScriptWorld> {
    let config = SimConfig {
        seed,
        fuel_per_event: 200_000_000,
        memory_limit: 32 << 20,
        ..SimConfig::default()
    };
    Sim::start(&guests().0, world, config).unwrap()
}

fn no_check(_: &Sim<ScriptWorld>) -> Result<(), String> {
    Ok(())
}

#[test]
fn a_week_of_requests_timers_and_fetches_in_virtual_time() {
    let mut world = ScriptWorld::default();
    for hour in 0..(7 * 24) {
        world.at(hour * 3_600_000, "/count");
    }
    world.at(1_000, "/timer?ms=3600000");
    world.at(2_000, "/fetch?url=https://example.test/ping");
    world.at(3_000, "/fetch?url=https://unreachable.test/");
    let mut sim = start(world, 1);
    let start = sim.now_ms();
    sim.run_until(start + 7 * DAY, no_check).unwrap();

    let counts = sim.world().answer_to("/count");
    assert_eq!(counts.len(), 168);
    assert_eq!(counts.last().unwrap(), &(200, "168".to_string()));
    assert_eq!(
        sim.durable().kv.get("count").map(|v| v.as_slice()),
        Some(&b"168"[..])
    );
    // The timer answered its request an hour (virtual) after it was set.
    let timer = sim
        .world()
        .answers
        .iter()
        .find(|(_, p, _, _)| p == "/timer")
        .unwrap();
    assert_eq!(timer.0 - start, 1_000 + 3_600_000);
    let fetch = sim.world().answer_to("/fetch");
    assert_eq!(fetch.len(), 2);
    assert!(fetch.iter().any(|(s, b)| *s == 200 && b.contains("pong")));
    assert!(fetch.iter().any(|(_, b)| b.contains("refused")));
}

#[test]
fn trapped_event_leaves_no_write_and_poison_is_dead_lettered() {
    let mut world = ScriptWorld::default();
    world.at(10, "/trap-after-write");
    world.at(20, "/poison");
    world.at(30, "/count");
    let mut sim = start(world, 2);
    let start = sim.now_ms();
    sim.run_until(start + 1_000, no_check).unwrap();
    assert!(!sim.durable().kv.contains_key("trap-key"));
    assert_eq!(sim.dead_letters().len(), 2);
    assert_eq!(
        sim.stats().traps,
        8,
        "each poisoned event: 1 try + 3 retries"
    );
    assert_eq!(
        sim.world().answer_to("/poison"),
        vec![(500, "the guest could not process this request".into())]
    );
    assert_eq!(sim.world().answer_to("/count"), vec![(200, "1".into())]);
}

#[test]
fn a_runaway_handler_runs_out_of_fuel_and_the_guest_comes_back() {
    let mut world = ScriptWorld::default();
    world.at(10, "/loop");
    world.at(20, "/count");
    let mut sim = start(world, 3);
    let start = sim.now_ms();
    sim.run_until(start + 1_000, no_check).unwrap();
    assert_eq!(sim.dead_letters().len(), 1);
    assert!(
        sim.dead_letters()[0].error.contains("fuel"),
        "{:?}",
        sim.dead_letters()
    );
    assert_eq!(sim.world().answer_to("/count"), vec![(200, "1".into())]);
}

#[test]
fn kv_and_timers_survive_a_crash_and_a_swap_to_v2() {
    let mut world = ScriptWorld::default();
    world.at(10, "/count");
    world.at(20, "/timer?ms=5000");
    world.at(10_000, "/count");
    world.at(10_001, "/hello");
    let mut sim = start(world, 4);
    let start = sim.now_ms();
    sim.run_until(start + 100, no_check).unwrap();
    sim.crash().unwrap();
    sim.swap(&guests().1).unwrap();
    assert!(
        sim.guest_version().unwrap().contains("v2") || sim.guest_version().unwrap().contains('2')
    );
    sim.run_until(start + 20_000, no_check).unwrap();
    assert_eq!(
        sim.world().answer_to("/count").last().unwrap(),
        &(200, "2".into())
    );
    let hello = sim.world().answer_to("/hello");
    assert!(hello[0].1.contains("v2"), "{hello:?}");
    // The timer set by v1 fired in v2 (the host owns it); v2 lost v1's in-memory request
    // bookkeeping, so the timer event arrives but nothing answers the old request: the timer
    // itself must not have been dropped.
    assert_eq!(sim.pending_timers(), 0);
    assert_eq!(sim.stats().swaps, 1);
}

#[test]
fn the_same_seed_replays_identically() {
    let run = |seed| {
        let mut world = ScriptWorld::default();
        for i in 0..50 {
            world.at(i * 997, "/count");
            world.at(i * 1_231, "/fetch?url=https://example.test/x");
        }
        world.at(5_000, "/poison");
        let mut sim = start(world, seed);
        let start = sim.now_ms();
        sim.run_until(start + 120_000, no_check).unwrap();
        (
            sim.world().answers.clone(),
            sim.durable().kv.clone(),
            sim.stats().fuel,
        )
    };
    let a = run(9);
    let b = run(9);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(
        a.2, b.2,
        "fuel is counted per instruction: it must match exactly"
    );
}
