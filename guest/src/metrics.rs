//! Operational figures the host exposes at `/metrics` (each series gets the host's `instance`
//! label). Most counters are added where things happen; this module holds the ones that are
//! derived in one place for the whole guest:
//!
//! | series | kind | what |
//! |---|---|---|
//! | `graph_calls_total{status}` | counter | completed outgoing HTTP calls (all go to Entra ID / Graph) by HTTP status, or `timeout` / `denied` / `connection` / `tls` / `too-large` / `invalid` |
//! | `graph_subscriptions{feature,state}` | gauge | Graph subscriptions by feature (`presence`: one per account, `calendar`: one per user) and state: `active`, `expired`, `missing` |
//! | `presence_writes_total{direction,result}` | counter | every presence write on either side (see `crate::audit`) |
//! | `audit_entries` | gauge | entries in the audit trail |
//!
//! Elsewhere: `graph_notifications_total`, `graph_notifications_rejected_total{reason}`,
//! `calendar_notifications_total`, `graph_token_failures_total{account}`,
//! `graph_throttled_total{call}`, `presence_pbx_writes_total`, `presence_out_writes_total{call}`,
//! `pbx_connections`, `pbx_login_failures_total`, `presence_matched_users`,
//! `guest_events_total{kind}` and the feature-specific ones listed in `guest/README.md`.

use crate::Connector;
use crate::env::Env;
use crate::event::{HttpError, HttpResponse};

/// Counts one completed outgoing call by its outcome.
pub fn http_completed(env: &mut impl Env, result: &Result<HttpResponse, HttpError>) {
    let status = match result {
        Ok(r) => r.status.to_string(),
        Err(HttpError::Timeout) => "timeout".into(),
        Err(HttpError::Denied(_)) => "denied".into(),
        Err(HttpError::Connection(_)) => "connection".into(),
        Err(HttpError::Tls(_)) => "tls".into(),
        Err(HttpError::TooLarge) => "too-large".into(),
        Err(HttpError::Invalid(_)) => "invalid".into(),
    };
    env.counter_add("graph_calls_total", &[("status", &status)], 1);
}

/// Sets the `graph_subscriptions` gauges of one feature from the expiry of each subscription
/// it wants (`None`: it has none yet).
pub fn subscriptions(env: &mut impl Env, feature: &str, expiries: &[Option<u64>]) {
    let now = env.now_ms();
    let (mut active, mut expired, mut missing) = (0u32, 0u32, 0u32);
    for e in expiries {
        match e {
            Some(at) if *at > now => active += 1,
            Some(_) => expired += 1,
            None => missing += 1,
        }
    }
    for (state, n) in [
        ("active", active),
        ("expired", expired),
        ("missing", missing),
    ] {
        env.gauge_set(
            "graph_subscriptions",
            &[("feature", feature), ("state", state)],
            f64::from(n),
        );
    }
}

/// The gauges derived from the connector's state after each event (cheap: in memory only).
pub fn after_event(env: &mut impl Env, c: &Connector) {
    if let Some(p) = &c.presence {
        subscriptions(env, "presence", &p.subscription_expiries());
    }
    if let Some(cal) = &c.calendar {
        subscriptions(env, "calendar", &cal.subscription_expiries());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::TestEnv;

    #[test]
    fn calls_are_counted_by_status_or_failure() {
        let mut env = TestEnv::new();
        http_completed(&mut env, &Ok(HttpResponse::text(200, "")));
        http_completed(&mut env, &Ok(HttpResponse::text(200, "")));
        http_completed(&mut env, &Ok(HttpResponse::text(429, "")));
        http_completed(&mut env, &Err(HttpError::Timeout));
        let c = |k: &str| env.counters.get(k).copied();
        assert_eq!(c("graph_calls_total{status=200}"), Some(2));
        assert_eq!(c("graph_calls_total{status=429}"), Some(1));
        assert_eq!(c("graph_calls_total{status=timeout}"), Some(1));
    }

    #[test]
    fn subscription_states_by_expiry() {
        let mut env = TestEnv::new();
        let now = env.now_ms;
        subscriptions(
            &mut env,
            "presence",
            &[Some(now + 1), Some(now - 1), None, None],
        );
        let g = |s: &str| env.gauges[&format!("graph_subscriptions{{feature=presence,state={s}}}")];
        assert_eq!((g("active"), g("expired"), g("missing")), (1.0, 1.0, 2.0));
        // A later call replaces the figures (gauges, not counters).
        subscriptions(&mut env, "presence", &[Some(now + 1)]);
        let g = |s: &str| env.gauges[&format!("graph_subscriptions{{feature=presence,state={s}}}")];
        assert_eq!((g("active"), g("expired"), g("missing")), (1.0, 0.0, 0.0));
    }
}
