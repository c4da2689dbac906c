//! How much work each measurement does: [`Plan::full`] for `make bench`, [`Plan::smoke`] for the
//! test that proves the harness works in a few seconds (its figures mean nothing).

use std::time::Duration;

/// Sizes of every measurement.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long each RSA measurement decrypts (after a tenth as long of warm-up).
    pub rsa_time: Duration,
    /// Run `openssl speed` next to aws-lc-rs (about 4 x `rsa_time`: sign, verify per process).
    pub openssl: bool,
    /// Requests per side (guest and plain hyper) in the host-overhead row, after as many
    /// again of warm-up.
    pub http_requests: usize,
    /// Concurrent clients of the host-overhead row.
    pub clients: usize,
    /// Replicated user rows driven through the core, natively and inside the host.
    pub core_rows: u32,
    /// Alternating native/host rounds of the wasm/native row (the median is shown).
    pub core_rounds: usize,
    /// Offered load of the hot-swap row, events per second.
    pub swap_rate: u32,
    /// Steady load before the swap and after it.
    pub swap_settle: Duration,
    /// Cold starts per variant (with and without the precompiled cache); the median is shown.
    pub startup_runs: usize,
    /// Synced users of the two memory points, or `None` to skip (it builds and starts processes).
    pub memory_users: Option<(usize, usize)>,
    /// PBX -> Teams: synced users and the burst of PBX presence changes, or `None` to skip (it
    /// starts the whole stack).
    pub pbx_to_teams: Option<(usize, usize)>,
    /// Restart recovery: synced users, or `None` to skip (it starts the whole stack).
    pub restart_users: Option<usize>,
    /// Teams -> PBX throughput and latency, or `None` to skip (it starts the whole stack twice).
    pub teams_to_pbx: Option<crate::teams_to_pbx::Sizes>,
    /// Scale: users per instance and instances per host, or `None` to skip.
    pub scale: Option<crate::scale::Sizes>,
}

impl Plan {
    /// `make bench`: a few minutes on 2 cores.
    pub fn full() -> Plan {
        Plan {
            rsa_time: Duration::from_secs(3),
            openssl: true,
            http_requests: 20_000,
            clients: 16,
            core_rows: 10_000,
            core_rounds: 3,
            swap_rate: 5_000,
            swap_settle: Duration::from_secs(2),
            startup_runs: 5,
            memory_users: Some((1_000, 10_000)),
            pbx_to_teams: Some((1_000, 10_000)),
            restart_users: Some(1_000),
            teams_to_pbx: Some(crate::teams_to_pbx::Sizes {
                users: 600,
                rounds: 10,
                latency_posts: 5_000,
                latency_rate: 500,
                rich: true,
                plain: true,
            }),
            scale: Some(crate::scale::Sizes::full()),
        }
    }

    /// Tiny sizes for the smoke test.
    pub fn smoke() -> Plan {
        Plan {
            rsa_time: Duration::from_millis(50),
            openssl: false,
            http_requests: 200,
            clients: 4,
            core_rows: 20,
            core_rounds: 1,
            swap_rate: 500,
            swap_settle: Duration::from_millis(100),
            startup_runs: 1,
            memory_users: None,
            pbx_to_teams: None,
            restart_users: None,
            teams_to_pbx: None,
            scale: Some(crate::scale::Sizes::smoke()),
        }
    }
}
