//! Switches. Every behaviour the spec marks UNVERIFIED or unsure is a field here; the default is
//! the documented (or most likely) behaviour and is listed in the crate docs.

use serde::{Deserialize, Serialize};

/// Which Microsoft cloud the fake pretends to be (graph.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Cloud {
    /// login.microsoftonline.com / graph.microsoft.com
    #[default]
    Global,
    /// US Gov L4 (GCC High): login.microsoftonline.us / graph.microsoft.us
    UsGovL4,
    /// US Gov L5 (DoD): login.microsoftonline.us / dod-graph.microsoft.us
    UsGovL5,
    /// China (21Vianet): login.partner.microsoftonline.cn / microsoftgraph.chinacloudapi.cn
    China,
}

impl Cloud {
    /// Graph host of this cloud.
    pub fn graph_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGovL4 => "https://graph.microsoft.us",
            Cloud::UsGovL5 => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
    /// Login (authority) host of this cloud.
    pub fn login_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGovL4 | Cloud::UsGovL5 => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }
    /// Presence change-notification subscriptions exist only in the global cloud (4.10).
    pub fn presence_subscriptions(self) -> bool {
        self == Cloud::Global
    }
    /// getPresencesByUserId / setPresence / clearPresence / setUserPreferredPresence (4.10).
    pub fn presence_bulk_and_set(self) -> bool {
        self != Cloud::China
    }
    /// setStatusMessage / clearUserPreferredPresence are global only (4.10).
    pub fn presence_global_only_apis(self) -> bool {
        self == Cloud::Global
    }
}

/// How getPresencesByUserId treats ids that are unknown or not Teams users (UNVERIFIED, 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum UnknownPresenceIds {
    /// Return `PresenceUnknown/PresenceUnknown` for them (default).
    #[default]
    PresenceUnknown,
    /// Leave them out of `value`.
    Omit,
    /// Fail the whole request with 404.
    NotFound,
}

/// Variant of the `validationTokens` JWTs (item 23).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ValidationTokenMode {
    /// Correctly signed tokens (default).
    #[default]
    Valid,
    /// Signature does not verify.
    BadSignature,
    /// Wrong audience.
    WrongAudience,
    /// Already expired.
    Expired,
    /// `"validationTokens": null` (appRoleAssignmentRequired misconfiguration).
    Null,
}

/// All switches of the fake.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Cloud rules and hosts.
    pub cloud: Cloud,
    /// Base URL the fake is reachable at for Graph (used in `@odata.nextLink`); defaults to
    /// `{cloud graph host}`. The binary sets it to its listening address.
    pub graph_base: Option<String>,
    /// Base URL of the login host as served (used in the OpenID configuration); defaults to the
    /// cloud's login host. The binary sets it to its listening address.
    pub login_base: Option<String>,
    /// Access-token lifetime in seconds (item 4; real: 60-90 min, use `expires_in`).
    pub access_token_lifetime_s: i64,
    /// Random extra access-token lifetime, 0..=this many seconds (seeded; default 0).
    pub access_token_lifetime_jitter_s: i64,
    /// Refresh-token lifetime in seconds (90 days).
    pub refresh_token_lifetime_s: i64,
    /// Device code lifetime (900 s) and polling interval (5 s).
    pub device_code_expires_s: i64,
    /// Device code polling interval.
    pub device_code_interval_s: i64,
    /// Answer `slow_down` when a device-code poll comes earlier than `interval` (RFC 8628; not in
    /// the Entra docs). Default true.
    pub device_code_slow_down: bool,
    /// Reject `application/x-www-form-urlencoded; charset=...` with AADSTS90013 like ADAL.NET saw
    /// (graph.md 1.2, an old report). Default false.
    pub reject_form_charset: bool,
    /// Allow `http://` notification URLs on loopback (test switch; Graph requires https).
    pub allow_http_loopback: bool,
    /// Validation handshake timeout (10 s).
    pub validation_timeout_ms: i64,
    /// Ack window for notification POSTs (3 s).
    pub ack_window_ms: i64,
    /// Timeout of a retried notification POST (10 s).
    pub retry_timeout_ms: i64,
    /// Retry horizon (4 h); compress it in tests.
    pub retry_horizon_ms: i64,
    /// First retry delay; doubles each attempt.
    pub retry_base_ms: i64,
    /// Window in which slow/drop ratios are measured (10 min) and the length of the slow/drop state.
    pub health_window_ms: i64,
    /// Minimum samples in the window before slow/drop can trigger (older doc: 100).
    pub health_min_samples: usize,
    /// Delay between a change and its notification (presence typical < 10 s).
    pub delivery_latency_ms: i64,
    /// Max items per notification POST.
    pub max_batch_items: usize,
    /// Deliver every notification twice (item 24, duplicates on request).
    pub duplicate_notifications: bool,
    /// Deliver the items of a batch in reverse order (out-of-order on request).
    pub reorder_notifications: bool,
    /// Silent outage: subscriptions are accepted and renewable but nothing is delivered (item 28).
    pub notification_outage: bool,
    /// validationTokens variant (item 23).
    pub validation_tokens: ValidationTokenMode,
    /// Use v1 (`sts.windows.net`, `appid`) instead of v2 (`login.../v2.0`, `azp`) validation tokens.
    pub validation_token_v1: bool,
    /// Rotate the JWKS signing key this often (keys rotate daily); old keys stay published for one
    /// more period.
    pub jwks_rotation_ms: i64,
    /// Max lifetime of presence subscriptions in minutes (60).
    pub presence_sub_max_min: i64,
    /// Max lifetime of event/contact subscriptions in minutes (10,080 in 2026 docs; 4,230 older).
    pub event_sub_max_min: i64,
    /// Max lifetime of rich event subscriptions in minutes (1,440).
    pub event_sub_rich_max_min: i64,
    /// Max lifetime of user subscriptions in minutes (41,760).
    pub user_sub_max_min: i64,
    /// Minimum subscription lifetime in minutes: shorter requests are silently raised (45).
    pub sub_min_min: i64,
    /// Max event subscriptions per mailbox across all apps (1,000).
    pub event_subs_per_mailbox: usize,
    /// Max ids per presence subscription / getPresencesByUserId (650).
    pub presence_max_ids: usize,
    /// Unknown ids in getPresencesByUserId (UNVERIFIED).
    pub unknown_presence_ids: UnknownPresenceIds,
    /// Idle fade of an Available app session: Available -> AvailableInactive after this (5 min),
    /// then Away after twice this.
    pub presence_idle_fade_ms: i64,
    /// Presence requests per app per tenant per 30 s (1,500; 10,000 in the 2026 table).
    pub presence_limit_per_30s: u32,
    /// Subscription writes per app per tenant per 20 s (1,000).
    pub subscription_writes_per_20s: u32,
    /// Any subscription requests per app per tenant per 20 s (5,000).
    pub subscription_any_per_20s: u32,
    /// Subscription writes per tenant (all apps) per 20 s (2,000).
    pub subscription_tenant_writes_per_20s: u32,
    /// Any subscription requests per tenant (all apps) per 20 s (10,000).
    pub subscription_tenant_any_per_20s: u32,
    /// Outlook requests per app per mailbox per 10 min (10,000).
    pub outlook_limit_per_10min: u32,
    /// Requests per app per 10 s, all endpoints (130,000).
    pub global_limit_per_10s: u32,
    /// Reproduce the real 429 on GET /subscriptions with `Retry-After: 5` (item 27).
    pub throttle_subscription_list: bool,
    /// Max page size for /users (999).
    pub users_max_top: usize,
    /// Default page size for /users (100).
    pub users_default_top: usize,
    /// Default page size for Outlook collections (10, UNVERIFIED).
    pub outlook_default_top: usize,
    /// Lifetime of a users delta token (7 days).
    pub delta_token_lifetime_ms: i64,
    /// Emit `reauthorizationRequired` this long before a subscription or its bound access token
    /// expires.
    pub reauthorization_lead_ms: i64,
    /// Bind subscriptions to the access token that created/renewed them: reauthorizationRequired
    /// before it expires and paused delivery after (default true, graph.md 1.7/3.4/3.6).
    pub bind_subscriptions_to_token: bool,
    /// Pause delivery as soon as `reauthorizationRequired` is sent (default false: delivery
    /// pauses only once the bound access token has expired, graph.md 3.4/3.6).
    pub pause_on_reauthorization_required: bool,
    /// Random extra delivery latency, 0..this many ms (seeded).
    pub delivery_jitter_ms: i64,
    /// Ongoing calendar events drive presence (Busy/InAMeeting, OutOfOffice) like Teams does.
    pub calendar_drives_presence: bool,
    /// New users stay invisible to `/users` listings for this long (replication delay, 2.1).
    pub directory_replication_delay_ms: i64,
    /// Seed of the fake's randomness.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cloud: Cloud::Global,
            graph_base: None,
            login_base: None,
            access_token_lifetime_s: 3599,
            access_token_lifetime_jitter_s: 0,
            refresh_token_lifetime_s: 90 * 86_400,
            device_code_expires_s: 900,
            device_code_interval_s: 5,
            device_code_slow_down: true,
            reject_form_charset: false,
            allow_http_loopback: false,
            validation_timeout_ms: 10_000,
            ack_window_ms: 3_000,
            retry_timeout_ms: 10_000,
            retry_horizon_ms: 4 * 3_600_000,
            retry_base_ms: 60_000,
            health_window_ms: 600_000,
            health_min_samples: 10,
            delivery_latency_ms: 0,
            max_batch_items: 100,
            duplicate_notifications: false,
            reorder_notifications: false,
            notification_outage: false,
            validation_tokens: ValidationTokenMode::Valid,
            validation_token_v1: false,
            jwks_rotation_ms: 86_400_000,
            presence_sub_max_min: 60,
            event_sub_max_min: 10_080,
            event_sub_rich_max_min: 1_440,
            user_sub_max_min: 41_760,
            sub_min_min: 45,
            event_subs_per_mailbox: 1_000,
            presence_max_ids: 650,
            unknown_presence_ids: UnknownPresenceIds::PresenceUnknown,
            presence_idle_fade_ms: 300_000,
            presence_limit_per_30s: 1_500,
            subscription_writes_per_20s: 1_000,
            subscription_any_per_20s: 5_000,
            subscription_tenant_writes_per_20s: 2_000,
            subscription_tenant_any_per_20s: 10_000,
            outlook_limit_per_10min: 10_000,
            global_limit_per_10s: 130_000,
            throttle_subscription_list: false,
            users_max_top: 999,
            users_default_top: 100,
            outlook_default_top: 10,
            delta_token_lifetime_ms: 7 * 86_400_000,
            reauthorization_lead_ms: 15 * 60_000,
            bind_subscriptions_to_token: true,
            pause_on_reauthorization_required: false,
            delivery_jitter_ms: 0,
            calendar_drives_presence: true,
            directory_replication_delay_ms: 0,
            seed: 1,
        }
    }
}
