//! Behaviour switches for everything the spec marks [INFERRED]/[UNKNOWN], with the documented
//! defaults. Tests flip them to check that the connector copes with either real-PBX variant.

use serde::{Deserialize, Serialize};

/// How on-the-phone appears in the presence stream (spec §5.1, open point 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "contact")]
pub enum CallPresence {
    /// Default: the `tel:` item's activity becomes `on-the-phone` and moves first.
    TelActivity,
    /// A separate item with this contact is put first.
    SeparateItem(String),
}

/// Reply to a request for an API not listed in `PbxInfo.apis` (item 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatedReply {
    /// Default: no answer at all.
    Silent,
    /// `<mt>Result` with `error`/`errorText`.
    Error,
}

/// SubscribePresence for an unknown user (item 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSubscription {
    /// Default (assumed real): result, then `PresenceState up:false`.
    UpFalse,
    /// `SubscribePresenceResult` with `error`/`errorText`.
    ResultError,
}

/// Subscription to a user whose `allows` hide presence from the App object (item 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unallowed {
    /// Default: `PresenceState up:false`, no updates.
    UpFalse,
    /// Result only, then nothing.
    Silent,
}

/// AddAlienCall for a user whose `loc` is another PBX (item 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlienNonLocal {
    /// Default: result with `error`/`errorText`.
    Reject,
    /// No answer.
    Ignore,
    /// Accepted like a local user.
    Accept,
}

/// All switches. Every field has a serde default so partial JSON can be PUT by the control API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Switches {
    /// SetPresence with empty activity and note removes the item (default true, per the issue);
    /// false keeps an empty item at the front.
    pub unset_removes_item: bool,
    /// SetPresence with `activity:"on-the-phone"` is accepted (default true, per the issue).
    pub accept_set_on_the_phone: bool,
    /// How PBX calls and alien calls show up in presence.
    pub call_presence: CallPresence,
    /// Requests for APIs not in `PbxInfo.apis`.
    pub gated_reply: GatedReply,
    /// Subscriptions to unknown users.
    pub unknown_subscription: UnknownSubscription,
    /// Subscriptions the visibility rules forbid.
    pub unallowed: Unallowed,
    /// AddAlienCall for non-local users.
    pub alien_non_local: AlienNonLocal,
    /// AddAlienCall on the App object's own PbxApi accepts undocumented `sip`/`guid` fields
    /// (default false: error, the App object is not a user).
    pub alien_accepts_user_fields: bool,
    /// Buffer responses and send them in reverse order (item 6).
    pub reorder_responses: bool,
    /// Echo `src` into replication pushes (ReplicateAdd/Update/Del). Default true.
    pub src_on_replication_pushes: bool,
    /// Licence test mode: every CheckAppLic succeeds, `info.testmode:true`.
    pub testmode: bool,
    /// `info.unlicensed:true` on object logins (as in the real capture). Default true.
    pub object_login_unlicensed: bool,
    /// First reconnect delay in ms after a failed login or dropped connection (real value
    /// [UNKNOWN]; default 1000).
    pub backoff_base_ms: u64,
    /// Maximum reconnect delay (default 30000).
    pub backoff_max_ms: u64,
    /// Random jitter added to each delay, in ms (default 250).
    pub backoff_jitter_ms: u64,
    /// Record outgoing frames in the message log too (incoming are always recorded).
    pub log_outgoing: bool,
    /// Give up on a login the service does not complete within this many ms (close, then
    /// reconnect with backoff). Real value [UNKNOWN]; default 20000.
    pub login_timeout_ms: u64,
    /// Apps to ask about with an unsolicited `AppInfo` right after `PbxInfo` (item 7; the real
    /// moment is [UNKNOWN]). Default empty.
    pub app_info_after_login: Vec<String>,
    /// Alternative `info` key order for object logins (empty = real PBX order
    /// `appobj, appdn, appurl, pbx, cn, unlicensed?, testmode?, lics?, apps`).
    pub info_key_order: Vec<String>,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            unset_removes_item: true,
            accept_set_on_the_phone: true,
            call_presence: CallPresence::TelActivity,
            gated_reply: GatedReply::Silent,
            unknown_subscription: UnknownSubscription::UpFalse,
            unallowed: Unallowed::UpFalse,
            alien_non_local: AlienNonLocal::Reject,
            alien_accepts_user_fields: false,
            reorder_responses: false,
            src_on_replication_pushes: true,
            testmode: false,
            object_login_unlicensed: true,
            backoff_base_ms: 1000,
            backoff_max_ms: 30_000,
            backoff_jitter_ms: 250,
            log_outgoing: true,
            login_timeout_ms: 20_000,
            app_info_after_login: vec![],
            info_key_order: vec![],
        }
    }
}
