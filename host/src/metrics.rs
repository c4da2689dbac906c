//! Host figures per instance and the figures guests publish, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Commit latency histogram bounds, seconds.
const COMMIT_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// Counters of one instance.
#[derive(Default)]
pub struct InstanceMetrics {
    /// Events delivered to the guest (each retry counts).
    pub events: AtomicU64,
    /// `handle` calls.
    pub batches: AtomicU64,
    /// Traps (including epoch deadline and memory cap).
    pub traps: AtomicU64,
    /// Events given up on.
    pub dead_letters: AtomicU64,
    /// Inbound HTTP requests routed to the instance.
    pub requests: AtomicU64,
    /// Events waiting for the actor.
    pub queue_depth: AtomicI64,
    /// Successful hot swaps.
    pub swaps: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
    guest: Mutex<BTreeMap<(String, String), GuestValue>>,
}

#[derive(Clone, Copy)]
enum GuestValue {
    Counter(u64),
    Gauge(f64),
}

impl InstanceMetrics {
    /// Records one commit (KV batch + flush).
    pub fn observe_commit(&self, seconds: f64) {
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Adds to a guest counter; invalid names are dropped.
    pub fn guest_counter_add(&self, name: &str, labels: &[(String, String)], delta: u64) {
        if let Some(key) = series_key(name, labels) {
            let mut map = self.guest.lock().expect("metrics");
            let entry = map.entry(key).or_insert(GuestValue::Counter(0));
            if let GuestValue::Counter(v) = entry {
                *v = v.saturating_add(delta);
            } else {
                *entry = GuestValue::Counter(delta);
            }
        }
    }

    /// Sets a guest gauge; invalid names are dropped.
    pub fn guest_gauge_set(&self, name: &str, labels: &[(String, String)], value: f64) {
        if let Some(key) = series_key(name, labels) {
            self.guest
                .lock()
                .expect("metrics")
                .insert(key, GuestValue::Gauge(value));
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `(metric name, rendered extra labels)`, or `None` if the guest used an invalid name.
fn series_key(name: &str, labels: &[(String, String)]) -> Option<(String, String)> {
    if !valid_name(name)
        || labels
            .iter()
            .any(|(n, _)| !valid_name(n) || n == "instance")
    {
        return None;
    }
    let mut rendered = String::new();
    for (n, v) in labels {
        let _ = write!(rendered, ",{n}=\"{}\"", escape(v));
    }
    Some((name.to_string(), rendered))
}

/// Renders every instance's figures in Prometheus text format.
pub fn render(instances: &[(String, &InstanceMetrics)]) -> String {
    let mut out = String::new();
    type Figure = (&'static str, &'static str, fn(&InstanceMetrics) -> i64);
    let counters: [Figure; 7] = [
        ("apphost_events_total", "counter", |m| {
            m.events.load(Ordering::Relaxed) as i64
        }),
        ("apphost_batches_total", "counter", |m| {
            m.batches.load(Ordering::Relaxed) as i64
        }),
        ("apphost_traps_total", "counter", |m| {
            m.traps.load(Ordering::Relaxed) as i64
        }),
        ("apphost_dead_letters_total", "counter", |m| {
            m.dead_letters.load(Ordering::Relaxed) as i64
        }),
        ("apphost_requests_total", "counter", |m| {
            m.requests.load(Ordering::Relaxed) as i64
        }),
        ("apphost_swaps_total", "counter", |m| {
            m.swaps.load(Ordering::Relaxed) as i64
        }),
        ("apphost_queue_depth", "gauge", |m| {
            m.queue_depth.load(Ordering::Relaxed)
        }),
    ];
    for (name, kind, get) in counters {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (instance, m) in instances {
            let _ = writeln!(
                out,
                "{name}{{instance=\"{}\"}} {}",
                escape(instance),
                get(m)
            );
        }
    }
    let _ = writeln!(out, "# TYPE apphost_commit_seconds histogram");
    for (instance, m) in instances {
        let inst = escape(instance);
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&m.commit_buckets) {
            let _ = writeln!(
                out,
                "apphost_commit_seconds_bucket{{instance=\"{inst}\",le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = m.commit_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "apphost_commit_seconds_bucket{{instance=\"{inst}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "apphost_commit_seconds_count{{instance=\"{inst}\"}} {count}"
        );
        let _ = writeln!(
            out,
            "apphost_commit_seconds_sum{{instance=\"{inst}\"}} {}",
            m.commit_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    for (instance, m) in instances {
        let inst = escape(instance);
        for ((name, labels), value) in m.guest.lock().expect("metrics").iter() {
            match value {
                GuestValue::Counter(v) => {
                    let _ = writeln!(out, "{name}{{instance=\"{inst}\"{labels}}} {v}");
                }
                GuestValue::Gauge(v) => {
                    let _ = writeln!(out, "{name}{{instance=\"{inst}\"{labels}}} {v}");
                }
            }
        }
    }
    out
}
