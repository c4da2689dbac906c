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
        // (window key, category, limit, window ms); the key is the app unless the budget is
        // per tenant (all apps) or per mailbox.
        let app = caller.app_id.clone();
        let mut cats: Vec<(String, &'static str, u32, i64)> =
            vec![(app.clone(), "global", self.cfg.global_limit_per_10s, 10_000)];
        if lower.contains("/presence") || lower.contains("getpresencesbyuserid") {
            cats.push((
                app.clone(),
                "presence",
                self.cfg.presence_limit_per_30s,
                30_000,
            ));
        }
        if lower.starts_with("/subscriptions") {
            let c = &self.cfg;
            cats.push((
                app.clone(),
                "subscriptions-any",
                c.subscription_any_per_20s,
                20_000,
            ));
            cats.push((
                "*tenant*".into(),
                "subscriptions-tenant-any",
                c.subscription_tenant_any_per_20s,
                20_000,
            ));
            if method != "GET" {
                cats.push((
                    app.clone(),
                    "subscriptions-write",
                    c.subscription_writes_per_20s,
                    20_000,
                ));
                cats.push((
                    "*tenant*".into(),
                    "subscriptions-tenant-write",
                    c.subscription_tenant_writes_per_20s,
                    20_000,
                ));
            }
        }
        // Outlook: per app per mailbox.
        let segs: Vec<&str> = lower.trim_start_matches('/').split('/').collect();
        if segs.len() >= 3
            && segs[0] == "users"
            && ["events", "calendarview", "contacts", "contactfolders"].contains(&segs[2])
        {
            cats.push((
                format!("{app}|{}", segs[1]),
                "outlook",
                self.cfg.outlook_limit_per_10min,
                600_000,
            ));
        }
        let mut retry_after: Option<i64> = None;
        let mut which = "";
        for (key, cat, limit, win) in cats {
            let q = self.throttle.windows.entry((key, cat)).or_default();
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
