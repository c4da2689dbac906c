//! Teams -> PBX (issue 10, items 1 and 2): presence changes per second reaching the PBX with
//! rich and with plain notifications, and the latency of one rich notification.
//!
//! The real host runs the connector against both fakes (e2e `Stack`, release binaries), N
//! people synced Teams -> PBX through one presence subscription. The bench then posts change
//! notifications to the connector's notification URL itself, built exactly as Graph (and the
//! fake) builds them: the subscription id and clientState the fake recorded, content encrypted
//! with the fake's own code for the certificate the connector registered (one wrapped key per
//! item), and a `validationTokens` entry signed by the fake's key set
//! (`POST /control/validation-token`). Posting from the bench keeps the fake's own work (one
//! control call and one RSA encryption per change) out of the figure; the fake's deliveries are
//! switched off (subscription outage) so only the bench's notifications arrive.
//!
//! Every change alternates a user between two Teams states, so each one must become one
//! `SetPresence` at the fake PBX; the rows fail unless the PBX received exactly as many and
//! every user ends in the state of its last change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use e2e::people::{Person, people, synced_stack};
use e2e::{Stack, TeamsAccount};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::table::{Row, dur, thousands};

/// Users per presence subscription (graph.md): all users fit one account.
pub const MAX_USERS: usize = 650;
/// Changes per rich or plain POST (issue 10).
const ITEMS_PER_POST: usize = 100;
/// POSTs in flight at once in the throughput rows: Graph delivers notifications to one
/// endpoint over several connections concurrently, not one after the other.
const CONCURRENT_POSTS: usize = 4;

/// How much work the Teams -> PBX rows do.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Synced users (at most [`MAX_USERS`]).
    pub users: usize,
    /// Rounds of the throughput rows: every user changes once per round.
    pub rounds: usize,
    /// Posts of the latency row (one item each), after a tenth as many of warm-up.
    pub latency_posts: usize,
    /// Offered rate of the latency row, POSTs per second.
    pub latency_rate: u32,
    /// Measure rich notifications (throughput and latency).
    pub rich: bool,
    /// Measure plain notifications.
    pub plain: bool,
}

/// The two Teams states changes alternate between, and what the PBX shows for them.
const STATES: [(&str, &str, &str); 2] = [
    ("Busy", "InAMeeting", "meeting"),
    ("DoNotDisturb", "DoNotDisturb", "dnd"),
];

type PostClient = Client<HttpConnector, Full<Bytes>>;

/// What the bench needs to post notifications as Graph would.
struct Target {
    url: String,
    sub_id: String,
    client_state: String,
    tenant: String,
    expiry: String,
    /// Certificate DER and id, for rich notifications.
    cert: Option<(Vec<u8>, String)>,
    token: Option<String>,
    /// (Entra id, PBX guid) of every synced user.
    users: Vec<(String, String)>,
}

fn options(persons: &[Person], plain: bool) -> e2e::StackOptions {
    let mut o = synced_stack(
        persons,
        vec![TeamsAccount::Password {
            name: "teams1".into(),
            username: "teams.sync1@contoso.onmicrosoft.com".into(),
            password: "Passw0rd!".into(),
        }],
    );
    if plain {
        o.settings
            .push(("presence.notifications".into(), "\"plain\"".into()));
    }
    // `BENCH_LOG=info` keeps the host's log for a look at a failed row.
    o.log_filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    o
}

/// Waits for the presence subscription of all users and reads what posting needs.
fn target(stack: &Stack, persons: &[Person], rich: bool) -> Result<Target> {
    let n = persons.len() as u64;
    stack.wait_for_pbx_logins()?;
    let sub = stack.wait_until(&format!("a presence subscription of {n} users"), |s| {
        let st = s.connector().status_json()?;
        let subs = st["presence"]["subscriptions"]
            .as_array()
            .or_else(|| st["presence_in"]["subscriptions"].as_array())
            .cloned()
            .unwrap_or_default();
        let ready = subs.iter().any(|a| a["users"].as_u64() == Some(n));
        if !ready {
            return Ok(None);
        }
        let all = s.m365().call("GET", "/subscriptions", None)?;
        Ok(all.as_array().and_then(|list| {
            list.iter()
                .find(|x| {
                    x["resource"]
                        .as_str()
                        .is_some_and(|r| r.contains("presences"))
                        && x["includeResourceData"].as_bool() == Some(rich)
                })
                .cloned()
        }))
    })?;
    let sub_id = sub["id"].as_str().context("subscription id")?.to_string();
    // No deliveries of the fake's own: only the bench's notifications arrive.
    stack.m365().subscription_outage(&sub_id, true)?;
    // The connector re-reads every user once the subscription exists (changes before it were
    // never notified); the bench's own changes must come after that read, or their frames
    // arrive before the PBX log is cleared.
    stack.wait_for_presence_reads()?;
    let cert = if rich {
        let requests = stack.m365().requests()?;
        let body = requests
            .iter()
            .rev()
            .filter(|r| {
                r["method"] == "POST"
                    && r["target"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("/subscriptions"))
            })
            .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
            .find(|b| b["encryptionCertificate"].is_string())
            .context("no POST /subscriptions with an encryptionCertificate")?;
        let der = STANDARD.decode(body["encryptionCertificate"].as_str().unwrap_or(""))?;
        let id = body["encryptionCertificateId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Some((der, id))
    } else {
        None
    };
    let token = if rich {
        let app = sub["notificationUrlAppId"]
            .as_str()
            .or(sub["applicationId"].as_str())
            .context("subscription application id")?;
        let t = stack
            .m365()
            .call("POST", "/validation-token", Some(json!({ "appId": app })))?;
        Some(t["token"].as_str().context("validation token")?.to_string())
    } else {
        None
    };
    let by_mail: HashMap<String, String> = stack
        .m365()
        .users()?
        .into_iter()
        .filter_map(|u| {
            let mail = u["mail"].as_str()?.to_ascii_lowercase();
            Some((mail, u["id"].as_str()?.to_string()))
        })
        .collect();
    let users = persons
        .iter()
        .map(|p| {
            by_mail
                .get(&p.email.to_ascii_lowercase())
                .map(|id| (id.clone(), p.guid.clone()))
                .with_context(|| format!("{} not in the fake tenant", p.email))
        })
        .collect::<Result<Vec<_>>>()?;
    let url = sub["notificationUrl"].as_str().unwrap_or("").to_string();
    if !url.starts_with("http://") {
        bail!("notification URL {url:?} is not plain HTTP on loopback");
    }
    let expiry = sub["expirationMs"].as_i64().unwrap_or(0);
    Ok(Target {
        url,
        sub_id,
        client_state: sub["clientState"].as_str().unwrap_or("").to_string(),
        tenant: stack.m365().tenant_id.clone(),
        expiry: format!("{expiry}"),
        cert,
        token,
        users,
    })
}

/// One notification item for `uid` in `state`, as Graph sends it; encrypted when the target
/// is rich (a fresh key per item, wrapped for the connector's certificate).
fn item(t: &Target, uid: &str, state: usize, seq: u64, rng: &mut StdRng) -> Result<Value> {
    let (availability, activity, _) = STATES[state];
    let mut item = json!({"subscriptionId": t.sub_id, "subscriptionExpirationDateTime": t.expiry,
        "clientState": t.client_state, "changeType": "updated",
        "resource": format!("communications/presences/{uid}"),
        "tenantId": t.tenant, "organizationId": t.tenant,
        "resourceData": {"@odata.type": "#microsoft.graph.presence",
            "@odata.id": format!("users/{uid}/presence"), "id": uid}});
    if let Some((der, id)) = &t.cert {
        let content = json!({"id": uid, "availability": availability, "activity": activity,
            "statusMessage": null, "outOfOfficeSettings": {"message": null, "isOutOfOffice": false},
            // Far above anything the fake numbered, so no change is taken as out of order.
            "sequenceNumber": format!("C{:028}", 1_000_000_000_000u64 + seq),
            "@odata.type": "#microsoft.graph.presence", "@odata.id": format!("users/{uid}/presence")});
        let plain = serde_json::to_vec(&content)?;
        item["encryptedContent"] = fake_m365::crypto::encrypt_content(der, id, &plain, rng)
            .map_err(|e| anyhow::anyhow!("encrypting: {e}"))?;
    }
    Ok(item)
}

/// A notification collection of `items`.
fn body(t: &Target, items: Vec<Value>) -> Bytes {
    let mut b = json!({ "value": items });
    if let Some(token) = &t.token {
        b["validationTokens"] = json!([token]);
    }
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

/// POSTs one collection; the connector must acknowledge it with 202.
async fn post(client: &PostClient, url: &str, body: Bytes) -> Result<()> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await?;
    if status != 202 {
        bail!("the connector answered a notification with {status}");
    }
    Ok(())
}

/// `SetPresence` frames the fake PBX received since its log was last cleared: (count, first
/// and last PBX-clock ms).
fn set_presences(stack: &Stack) -> Result<(usize, u64, u64)> {
    let log = stack.pbx().call("GET", "/log", None)?;
    let mut n = 0;
    let (mut first, mut last) = (u64::MAX, 0);
    for e in log.as_array().map(Vec::as_slice).unwrap_or_default() {
        if e["dir"] != "in" {
            continue;
        }
        let text = e["text"].as_str().unwrap_or("");
        if !text.contains("SetPresence") {
            continue;
        }
        let frame: Value = serde_json::from_str(text).unwrap_or_default();
        if frame["mt"] == "SetPresence" {
            n += 1;
            let at = e["atMs"].as_u64().or(e["at_ms"].as_u64()).unwrap_or(0);
            first = first.min(at);
            last = last.max(at);
        }
    }
    Ok((n, first, last))
}

/// Waits until the PBX received `expected` `SetPresence` frames (never more).
fn wait_frames(stack: &Stack, expected: usize) -> Result<(usize, u64, u64)> {
    let got = stack.wait_until(&format!("{expected} SetPresence frames at the PBX"), |s| {
        let r = set_presences(s)?;
        Ok((r.0 >= expected).then_some(r))
    })?;
    // A duplicate would arrive right behind the last expected frame.
    std::thread::sleep(Duration::from_millis(300));
    let got = set_presences(stack).map(|r| if r.0 == got.0 { got } else { r })?;
    if got.0 != expected {
        bail!(
            "the PBX received {} SetPresence frames for {expected} changes",
            got.0
        );
    }
    Ok(got)
}

/// Every user's `teams:` item at the PBX must show `state`'s activity.
fn check_final(
    stack: &Stack,
    users: &[(String, String)],
    state_of: impl Fn(usize) -> usize,
) -> Result<()> {
    let mut wrong = Vec::new();
    for (i, (_, guid)) in users.iter().enumerate() {
        let v = stack.pbx().presence(guid)?;
        let shown = v["stored"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["contact"] == "teams:"))
            .and_then(|i| i["activity"].as_str())
            .unwrap_or("")
            .to_string();
        if shown != STATES[state_of(i)].2 {
            wrong.push(format!("{guid} shows {shown:?}"));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{} of {} users not in their last state at the PBX, e.g. {}",
            wrong.len(),
            users.len(),
            wrong[..wrong.len().min(3)].join("; ")
        );
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start with the state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of each process of the stack and of the bench itself, by process name; the
/// host's own threads apart (its actor, runtime workers, sled threads), and what is left of
/// the host (threads that ended, such as decryption workers) as "apphost other".
fn cpu_snapshot(stack: &Stack) -> Vec<(String, f64)> {
    let mut pids: Vec<String> = stack.pids().iter().map(u32::to_string).collect();
    pids.push("self".into());
    let mut out = Vec::new();
    for pid in &pids {
        let name = if pid == "self" {
            "bench".to_string()
        } else {
            match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                Ok(n) => n.trim().to_string(),
                Err(_) => continue,
            }
        };
        let Some(total) = cpu_seconds(pid) else {
            continue;
        };
        if name != "apphost" {
            out.push((name, total));
            continue;
        }
        let mut threads: Vec<(String, f64)> = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let path = format!("{pid}/task/{tid}");
            let (Ok(comm), Some(secs)) = (
                std::fs::read_to_string(format!("/proc/{path}/comm")),
                cpu_seconds(&path),
            ) else {
                continue;
            };
            // Thread names end in numbers (sled-io-3) or carry the instance (actor-e2e).
            let kind = comm
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            let kind = if kind.starts_with("actor") {
                "actor"
            } else {
                kind
            };
            let label = format!("apphost {kind}");
            match threads.iter_mut().find(|(n, _)| *n == label) {
                Some((_, sum)) => *sum += secs,
                None => threads.push((label, secs)),
            }
        }
        let live: f64 = threads.iter().map(|(_, s)| s).sum();
        out.push(("apphost other".into(), total - live));
        out.extend(threads);
    }
    out
}

/// CPU seconds each process used between two snapshots, added to `total`.
fn add_cpu(total: &mut Vec<(String, f64)>, before: &[(String, f64)], after: &[(String, f64)]) {
    for (name, end) in after {
        let Some((_, start)) = before.iter().find(|(n, _)| n == name) else {
            continue;
        };
        match total.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += end - start,
            None => total.push((name.clone(), end - start)),
        }
    }
}

/// "apphost 21.0 ms, fake-pbx 3.1 ms, ..." of CPU per 100 changes.
fn cpu_per_post(cpu: &[(String, f64)], changes: usize) -> String {
    let per = |s: f64| 1000.0 * s * ITEMS_PER_POST as f64 / changes.max(1) as f64;
    let total: f64 = cpu.iter().map(|(_, s)| s).sum();
    let parts: Vec<String> = cpu
        .iter()
        .map(|(n, s)| format!("{n} {:.1}", per(*s)))
        .collect();
    format!(
        "CPU ms per 100 changes (/proc/<pid>/stat): {}, all {:.1}",
        parts.join(", "),
        per(total)
    )
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn post_client() -> PostClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// What the throughput rounds measured.
struct Throughput {
    changes: usize,
    seconds: f64,
    /// CPU seconds per process over the timed part of the rounds.
    cpu: Vec<(String, f64)>,
}

/// Throughput: `rounds` rounds in which every user changes once, 100 changes per POST,
/// [`CONCURRENT_POSTS`] POSTs in flight (each connection sends its next POST when its previous
/// one is acknowledged).
fn throughput(stack: &Stack, t: &Target, rounds: usize, first_round: usize) -> Result<Throughput> {
    let rt = runtime()?;
    let client = post_client();
    let mut rng = StdRng::seed_from_u64(10);
    let mut changes = 0;
    let mut seconds = 0.0;
    let mut cpu = Vec::new();
    for round in first_round..first_round + rounds {
        let state = round % 2;
        if t.cert.is_none() {
            // Plain notifications carry no state: Teams must really have changed.
            for (uid, _) in &t.users {
                stack
                    .m365()
                    .set_teams_presence(uid, STATES[state].0, STATES[state].1)?;
            }
        }
        // Built before the clock starts: the bench's own encryption is not the connector's.
        let mut bodies = Vec::new();
        for (c, chunk) in t.users.chunks(ITEMS_PER_POST).enumerate() {
            let items = chunk
                .iter()
                .enumerate()
                .map(|(k, (uid, _))| {
                    let seq = (round * t.users.len() + c * ITEMS_PER_POST + k) as u64;
                    item(t, uid, state, seq, &mut rng)
                })
                .collect::<Result<Vec<_>>>()?;
            bodies.push(body(t, items));
        }
        stack.pbx().call("DELETE", "/log", None)?;
        let cpu_before = cpu_snapshot(stack);
        let started = Instant::now();
        let first_ack = rt.block_on(post_all(&client, &t.url, bodies, started))?;
        let acked = started.elapsed();
        add_cpu(&mut cpu, &cpu_before, &cpu_snapshot(stack));
        let (n, first, last) = wait_frames(stack, t.users.len())?;
        // Rich: the host sends the frames before it answers, so the last answer is the end.
        // Plain: the frames follow presence reads after the answers; the span between the first
        // and the last frame on the PBX's clock, plus the first answer, is the time taken.
        let took = if t.cert.is_some() {
            acked
        } else {
            first_ack + Duration::from_millis(last - first)
        };
        changes += n;
        seconds += took.as_secs_f64();
    }
    check_final(stack, &t.users, |_| (first_round + rounds - 1) % 2)?;
    Ok(Throughput {
        changes,
        seconds,
        cpu,
    })
}

/// Posts `bodies` over [`CONCURRENT_POSTS`] connections, each sending its next body when its
/// previous one was acknowledged; returns when the first was acknowledged.
async fn post_all(
    client: &PostClient,
    url: &str,
    bodies: Vec<Bytes>,
    started: Instant,
) -> Result<Duration> {
    let queue = Arc::new(Mutex::new(bodies.into_iter()));
    let first_ack = Arc::new(Mutex::new(None));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_POSTS {
        let (client, url) = (client.clone(), url.to_string());
        let (queue, first_ack) = (queue.clone(), first_ack.clone());
        senders.spawn(async move {
            loop {
                let Some(b) = queue.lock().expect("queue").next() else {
                    return anyhow::Ok(());
                };
                post(&client, &url, b).await?;
                first_ack
                    .lock()
                    .expect("first ack")
                    .get_or_insert_with(|| started.elapsed());
            }
        });
    }
    while let Some(result) = senders.join_next().await {
        result??;
    }
    let first = first_ack.lock().expect("first ack").unwrap_or_default();
    Ok(first)
}

/// Latency: `posts` rich notifications of one change each, sent at a steady `rate` whether or
/// not earlier ones were answered; each one's time from sending to the connector's answer.
fn latency(
    stack: &Stack,
    t: &Target,
    posts: usize,
    rate: u32,
    round_base: usize,
) -> Result<Vec<Duration>> {
    let rt = runtime()?;
    let client = post_client();
    let mut rng = StdRng::seed_from_u64(11);
    let users = t.users.len();
    let warmup = posts / 10;
    let total = warmup + posts;
    // Change k is user k % users; it alternates its state on every visit.
    let state_of = |k: usize| (round_base + k / users) % 2;
    let mut bodies = Vec::with_capacity(total);
    for k in 0..total {
        let uid = &t.users[k % users].0;
        let seq = (round_base * users + k) as u64;
        bodies.push(body(t, vec![item(t, uid, state_of(k), seq, &mut rng)?]));
    }
    stack.pbx().call("DELETE", "/log", None)?;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let times = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for (k, b) in bodies.into_iter().enumerate() {
            tokio::time::sleep_until(start + interval * k as u32).await;
            let (client, url) = (client.clone(), t.url.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                post(&client, &url, b).await.map(|()| sent.elapsed())
            }));
        }
        let mut times = Vec::with_capacity(total);
        for task in tasks {
            times.push(task.await??);
        }
        anyhow::Ok(times)
    })?;
    wait_frames(stack, total)?;
    // The last visit of each user decides its final state.
    let last_state = |i: usize| {
        match (0..total).rev().find(|k| k % users == i) {
            Some(last_k) => state_of(last_k),
            // Not visited: still in the state of the last throughput round.
            None => (round_base + 1) % 2,
        }
    };
    check_final(stack, &t.users, last_state)?;
    Ok(times[warmup..].to_vec())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The three Teams -> PBX rows; `rsa_bound` is row 1's native bound from the same run.
pub fn measure(sizes: Sizes, rsa_bound: Option<f64>) -> Vec<Row> {
    let users = sizes.users.min(MAX_USERS);
    let persons = people(users, 55);
    let rich_target = match rsa_bound {
        Some(b) => format!(">= 80% of RSA bound (>= {} /s)", thousands(0.8 * b)),
        None => ">= 80% of RSA bound".into(),
    };
    let mut rows = Vec::new();
    let rich = (|| -> Result<(Row, Row)> {
        if !sizes.rich {
            bail!("not measured in this run");
        }
        let stack = Stack::start(options(&persons, false))?;
        let result = (|| {
            let t = target(&stack, &persons, true)?;
            // Warm-up round (key set fetched, caches warm), then the measured rounds.
            throughput(&stack, &t, 1, 0)?;
            let measured = throughput(&stack, &t, sizes.rounds, 1)?;
            let changes = measured.changes;
            let rate = changes as f64 / measured.seconds;
            let pass = rsa_bound.is_some_and(|b| rate >= 0.8 * b);
            let share = rsa_bound.map_or(String::new(), |b| {
                format!(" ({:.0}% of the bound)", 100.0 * rate / b)
            });
            let throughput_row = Row::check(
                "Teams -> PBX, rich notifications (100 items/POST): presence changes/s",
                format!("{} /s{share}", thousands(rate)),
                &rich_target,
                pass,
                &format!(
                    "{} users, {} rounds of one change each, {} changes in POSTs of 100 encrypted items (one wrapped key each, as Graph sends them, validation token signed by the fake), {CONCURRENT_POSTS} POSTs in flight on {CONCURRENT_POSTS} connections as Graph delivers them; first POST -> last answer (the host sends SetPresence before answering); every frame counted at the fake PBX and every final state checked; {}",
                    thousands(users as f64),
                    sizes.rounds,
                    thousands(changes as f64),
                    cpu_per_post(&measured.cpu, changes)
                ),
            );
            let rounds_done = 1 + sizes.rounds;
            let mut times = latency(
                &stack,
                &t,
                sizes.latency_posts,
                sizes.latency_rate,
                rounds_done,
            )?;
            times.sort();
            let (p50, p99, max) = (
                percentile(&times, 0.50),
                percentile(&times, 0.99),
                times.last().copied().unwrap_or_default(),
            );
            let latency_row = Row::check(
                "latency notification -> SetPresence at 500/s: p50 / p99 / max",
                format!("{} / {} / {}", dur(p50), dur(p99), dur(max)),
                "p99 <= 3 ms",
                p99 <= Duration::from_millis(3),
                &format!(
                    "{} rich POSTs of one item at a steady {}/s (open loop) after {} of warm-up; bench sends -> 202 received, which includes storing the notification, the durable flush and sending SetPresence (frames go out before the answer); every frame counted at the fake PBX",
                    thousands(times.len() as f64),
                    sizes.latency_rate,
                    sizes.latency_posts / 10
                ),
            );
            Ok((throughput_row, latency_row))
        })();
        stack.note(result)
    })();
    let plain = (|| -> Result<Row> {
        if !sizes.plain {
            bail!("not measured in this run");
        }
        let stack = Stack::start(options(&persons, true))?;
        let result = (|| {
            let t = target(&stack, &persons, false)?;
            throughput(&stack, &t, 1, 0)?;
            let measured = throughput(&stack, &t, sizes.rounds, 1)?;
            let changes = measured.changes;
            let rate = changes as f64 / measured.seconds;
            Ok(Row::check(
                "Teams -> PBX, plain notifications: presence changes/s",
                format!("{} /s", thousands(rate)),
                ">= 50,000 /s",
                rate >= 50_000.0,
                &format!(
                    "same users and rounds, {} changes; plain POSTs of 100 items (no crypto), {CONCURRENT_POSTS} in flight, so the connector reads them with getPresencesByUserId before SetPresence; first POST -> last SetPresence at the fake PBX (its log's clock); every frame counted and every final state checked; {}",
                    thousands(changes as f64),
                    cpu_per_post(&measured.cpu, changes)
                ),
            ))
        })();
        stack.note(result)
    })();
    let failed = |what: &str, e: &anyhow::Error| Row::failed(what, &format!("{e:#}"));
    match rich {
        Ok((t, l)) => {
            rows.push(t);
            rows.push(match plain {
                Ok(r) => r,
                Err(e) => failed("Teams -> PBX, plain notifications", &e),
            });
            rows.push(l);
        }
        Err(e) => {
            rows.push(failed("Teams -> PBX, rich notifications", &e));
            rows.push(match plain {
                Ok(r) => r,
                Err(e) => failed("Teams -> PBX, plain notifications", &e),
            });
            rows.push(failed("latency notification -> SetPresence", &e));
        }
    }
    rows
}
