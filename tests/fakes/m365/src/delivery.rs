//! Notification delivery: batching, the 3 s ack window, retries with exponential backoff up to a
//! (compressible) horizon, slow/drop endpoint states, optional duplicates and reordering
//! (graph.md 3.4, item 24). The core only emits [`crate::Outbound`] effects; the driver sends them.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ValidationTokenMode;
use crate::core::{Fake, OutboundResult, Purpose};
use crate::tenant::CHANGE_TRACKING_APP_ID;

/// One notification item waiting for delivery.
#[derive(Debug, Clone)]
pub struct QueuedItem {
    /// Target URL.
    pub url: String,
    /// The item JSON.
    pub item: Value,
    /// Rich (carries encryptedContent) — needs a validation token for `app_id`.
    pub rich: bool,
    /// Audience of the validation token.
    pub app_id: String,
    /// When it may be sent.
    pub due: i64,
    /// Notification or lifecycle.
    pub purpose: Purpose,
}

#[derive(Debug, Clone)]
pub(crate) struct Batch {
    url: String,
    items: Vec<QueuedItem>,
    attempt: u32,
    first_at: i64,
    due: i64,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
/// Endpoint health as Graph tracks it.
pub enum HealthState {
    /// Normal.
    Normal,
    /// New notifications delayed (>10 % slower than the ack window).
    Slow,
    /// Notifications dropped (>15 % beyond the retry timeout).
    Drop,
}

#[derive(Debug, Clone)]
struct Health {
    samples: Vec<(i64, i64, bool)>,
    state: HealthState,
    until: i64,
}

/// What happened to one POST (read-back for tests).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Fake time.
    pub at_ms: i64,
    /// URL.
    pub url: String,
    /// Attempt number (0 = first).
    pub attempt: u32,
    /// Items in the POST.
    pub items: usize,
    /// `delivered`, `retry`, `discarded`, `dropped`.
    pub outcome: String,
    /// HTTP status, if any.
    pub status: Option<u16>,
}

/// Delivery state.
#[derive(Default)]
pub struct DeliveryState {
    queue: Vec<QueuedItem>,
    inflight: HashMap<u64, Batch>,
    retries: Vec<Batch>,
    health: HashMap<String, Health>,
    /// Everything that happened.
    pub log: Vec<DeliveryRecord>,
}

impl DeliveryState {
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.queue
            .iter()
            .map(|q| q.due)
            .chain(self.retries.iter().map(|b| b.due))
            .min()
    }
    pub(crate) fn drop_subscription(&mut self, sub_id: &str) {
        // Lifecycle events about the removal itself must still go out.
        self.queue.retain(|q| {
            q.purpose != Purpose::Notification || q.item["subscriptionId"].as_str() != Some(sub_id)
        });
    }
}

impl Fake {
    /// Delivery log (read-back).
    pub fn deliveries(&self) -> &[DeliveryRecord] {
        &self.delivery.log
    }

    /// Health state of an endpoint URL.
    pub fn endpoint_health(&self, url: &str) -> HealthState {
        self.delivery
            .health
            .get(url)
            .map_or(HealthState::Normal, |h| {
                if h.until > self.now() {
                    h.state
                } else {
                    HealthState::Normal
                }
            })
    }

    /// Queue an item, honouring the slow/drop state of its endpoint.
    pub(crate) fn enqueue(&mut self, mut q: QueuedItem) {
        let now = self.now();
        match self.endpoint_health(&q.url) {
            HealthState::Drop => {
                self.delivery.log.push(DeliveryRecord {
                    at_ms: now,
                    url: q.url,
                    attempt: 0,
                    items: 1,
                    outcome: "dropped".into(),
                    status: None,
                });
                return;
            }
            HealthState::Slow => q.due += self.cfg.health_window_ms,
            HealthState::Normal => {}
        }
        self.delivery.queue.push(q);
    }

    pub(crate) fn delivery_tick(&mut self) {
        let now = self.now();
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delivery.queue)
            .into_iter()
            .partition(|q| q.due <= now);
        self.delivery.queue = rest;
        // Batch items for the same URL and purpose, even from different subscriptions.
        let mut groups: Vec<((String, Purpose), Vec<QueuedItem>)> = vec![];
        for q in due {
            match groups.iter_mut().find(|(k, v)| {
                k.0 == q.url && k.1 == q.purpose && v.len() < self.cfg.max_batch_items
            }) {
                Some((_, v)) => v.push(q),
                None => groups.push(((q.url.clone(), q.purpose), vec![q])),
            }
        }
        for ((url, purpose), items) in groups {
            let b = Batch {
                url,
                items,
                attempt: 0,
                first_at: now,
                due: now,
                purpose,
            };
            if self.cfg.duplicate_notifications {
                self.send_batch(b.clone());
            }
            self.send_batch(b);
        }
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delivery.retries)
            .into_iter()
            .partition(|b| b.due <= now);
        self.delivery.retries = rest;
        for b in due {
            self.send_batch(b);
        }
    }

    pub(crate) fn validation_token(&mut self, app_id: &str) -> String {
        let now = self.now();
        let now_s = now / 1000;
        let tid = self.tenant_id.clone();
        let mode = self.cfg.validation_tokens;
        let aud = if mode == ValidationTokenMode::WrongAudience {
            self.new_guid()
        } else {
            app_id.to_string()
        };
        let (iat, exp) = if mode == ValidationTokenMode::Expired {
            (now_s - 7200, now_s - 3600)
        } else {
            (now_s, now_s + 3600)
        };
        let mut claims = json!({"aud": aud, "iat": iat, "nbf": iat, "exp": exp, "tid": tid, "oid": self.new_guid()});
        if self.cfg.validation_token_v1 {
            claims["iss"] = json!(format!("https://sts.windows.net/{tid}/"));
            claims["appid"] = json!(CHANGE_TRACKING_APP_ID);
            claims["appidacr"] = json!("2");
            claims["ver"] = json!("1.0");
        } else {
            claims["iss"] = json!(format!("{}/{tid}/v2.0", self.cfg.cloud.login_host()));
            claims["azp"] = json!(CHANGE_TRACKING_APP_ID);
            claims["azpacr"] = json!("2");
            claims["ver"] = json!("2.0");
        }
        let mut t = self.keys.sign_jwt(&claims, now);
        if mode == ValidationTokenMode::BadSignature {
            // Flip the signature: still well-formed, no longer verifies.
            let (head, sig) = t.rsplit_once('.').expect("jwt");
            let mut s: Vec<char> = sig.chars().collect();
            s[5] = if s[5] == 'A' { 'B' } else { 'A' };
            t = format!("{head}.{}", s.into_iter().collect::<String>());
        }
        t
    }

    fn send_batch(&mut self, b: Batch) {
        let mut items: Vec<Value> = b.items.iter().map(|q| q.item.clone()).collect();
        if self.cfg.reorder_notifications {
            items.reverse();
        }
        let mut body = json!({ "value": items });
        let apps: BTreeSet<String> = b
            .items
            .iter()
            .filter(|q| q.rich)
            .map(|q| q.app_id.clone())
            .collect();
        if !apps.is_empty() {
            body["validationTokens"] = if self.cfg.validation_tokens == ValidationTokenMode::Null {
                Value::Null
            } else {
                json!(
                    apps.iter()
                        .map(|a| self.validation_token(a))
                        .collect::<Vec<_>>()
                )
            };
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let headers = vec![(
            "Content-Type".to_string(),
            "application/json; charset=utf-8".to_string(),
        )];
        let id = self.emit(
            b.purpose,
            b.url.clone(),
            headers,
            bytes,
            self.cfg.retry_timeout_ms,
        );
        self.delivery.inflight.insert(id, b);
    }

    fn record_sample(&mut self, url: &str, elapsed: i64, timed_out: bool) {
        let now = self.now();
        let (win, min, ack, rto) = (
            self.cfg.health_window_ms,
            self.cfg.health_min_samples,
            self.cfg.ack_window_ms,
            self.cfg.retry_timeout_ms,
        );
        let h = self
            .delivery
            .health
            .entry(url.to_string())
            .or_insert(Health {
                samples: vec![],
                state: HealthState::Normal,
                until: 0,
            });
        h.samples.retain(|s| now - s.0 < win);
        h.samples.push((now, elapsed, timed_out));
        if h.until <= now {
            h.state = HealthState::Normal;
        }
        let n = h.samples.len();
        if n >= min && h.state == HealthState::Normal {
            let dropped = h.samples.iter().filter(|s| s.2 || s.1 > rto).count();
            let slow = h.samples.iter().filter(|s| s.2 || s.1 > ack).count();
            if dropped * 100 > n * 15 {
                h.state = HealthState::Drop;
                h.until = now + win;
                h.samples.clear();
            } else if slow * 100 > n * 10 {
                h.state = HealthState::Slow;
                h.until = now + win;
                h.samples.clear();
            }
        }
    }

    pub(crate) fn delivery_result(&mut self, id: u64, res: OutboundResult) {
        let Some(mut b) = self.delivery.inflight.remove(&id) else {
            return;
        };
        let now = self.now();
        let (ok, status) = match &res {
            OutboundResult::Status {
                status, elapsed_ms, ..
            } => {
                self.record_sample(&b.url, *elapsed_ms, false);
                // Delivered = 2xx within the ack window; retries get the longer timeout.
                let window = if b.attempt == 0 {
                    self.cfg.ack_window_ms
                } else {
                    self.cfg.retry_timeout_ms
                };
                (
                    (200..300).contains(status) && *elapsed_ms <= window,
                    Some(*status),
                )
            }
            OutboundResult::Timeout => {
                self.record_sample(&b.url, self.cfg.retry_timeout_ms + 1, true);
                (false, None)
            }
            OutboundResult::Failed { .. } => (false, None),
        };
        let n = b.items.len();
        if ok {
            self.delivery.log.push(DeliveryRecord {
                at_ms: now,
                url: b.url,
                attempt: b.attempt,
                items: n,
                outcome: "delivered".into(),
                status,
            });
            return;
        }
        b.attempt += 1;
        let delay = self
            .cfg
            .retry_base_ms
            .saturating_mul(1i64 << (b.attempt - 1).min(20));
        if now + delay - b.first_at > self.cfg.retry_horizon_ms {
            self.delivery.log.push(DeliveryRecord {
                at_ms: now,
                url: b.url,
                attempt: b.attempt - 1,
                items: n,
                outcome: "discarded".into(),
                status,
            });
            return;
        }
        self.delivery.log.push(DeliveryRecord {
            at_ms: now,
            url: b.url.clone(),
            attempt: b.attempt - 1,
            items: n,
            outcome: "retry".into(),
            status,
        });
        b.due = now + delay;
        self.delivery.retries.push(b);
    }
}
