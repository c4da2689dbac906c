//! Per-app-per-tenant sliding-window budgets (graph.md 7.2, items 11 and 27).

use std::collections::{HashMap, VecDeque};

use crate::core::{Caller, Fake, GraphErr, gerr};

/// Sliding windows per (app, category).
#[derive(Default)]
pub struct Throttle {
    windows: HashMap<(String, &'static str), VecDeque<i64>>,
}

impl Fake {
    pub(crate) fn throttle_check(
        &mut self,
        caller: &Caller,
        method: &str,
        path: &str,
    ) -> Result<(), GraphErr> {
        let now = self.now();
        let lower = path.to_ascii_lowercase();
        let mut cats: Vec<(&'static str, u32, i64)> = vec![];
        if lower.contains("/presence") || lower.contains("getpresencesbyuserid") {
            cats.push(("presence", self.cfg.presence_limit_per_30s, 30_000));
        }
        if lower.starts_with("/subscriptions") {
            cats.push((
                "subscriptions-any",
                self.cfg.subscription_any_per_20s,
                20_000,
            ));
            if method != "GET" {
                cats.push((
                    "subscriptions-write",
                    self.cfg.subscription_writes_per_20s,
                    20_000,
                ));
            }
        }
        let mut retry_after: Option<i64> = None;
        let mut which = "";
        for (cat, limit, win) in cats {
            let q = self
                .throttle
                .windows
                .entry((caller.app_id.clone(), cat))
                .or_default();
            while q.front().is_some_and(|t| now - t >= win) {
                q.pop_front();
            }
            if q.len() as u32 >= limit {
                let ra = q
                    .front()
                    .map_or(1, |t| ((t + win - now) + 999) / 1000)
                    .max(1);
                retry_after = Some(retry_after.map_or(ra, |r| r.max(ra)));
                which = cat;
            }
            // Throttled requests still count toward the limit.
            q.push_back(now);
        }
        match retry_after {
            Some(ra) => {
                let mut e = gerr(
                    429,
                    "TooManyRequests",
                    &format!(
                        "Too many requests from Identifier:{} under category:throttle.{which}. Please try again later.",
                        caller.app_id
                    ),
                );
                e.headers.push(("Retry-After".into(), ra.to_string()));
                Err(e)
            }
            None => Ok(()),
        }
    }
}
