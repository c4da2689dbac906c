//! Invariants checked after every event of a run. Each one reports whether it was ever
//! *active* (had something to check): a property the guest does not exercise yet passes
//! vacuously, and the summary says so instead of hiding it.

use std::collections::BTreeMap;

use fake_m365::subscriptions::SubKind;

use crate::fakes_world::FakesWorld;
use crate::sim::Sim;

/// Time and size bounds of the checks.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// After the faults stop, every PBX is logged in again within this time (ms).
    pub login_ms: u64,
    /// A Teams presence stable for this long (and faults over this long) shows in the PBX (ms).
    pub presence_ms: u64,
    /// Most KV entries ever.
    pub kv_entries: usize,
    /// Most KV bytes (keys + values) ever.
    pub kv_bytes: usize,
    /// KV bytes may grow by at most this factor from the end of day 2 to any later day end
    /// (plus `kv_bytes / 16` of slack): growth must level off.
    pub kv_daily_growth: f64,
    /// Longest time (ms) an account that had a presence subscription may go without a live
    /// one, counted from the later of the lapse's start and the end of the faults.
    pub lapse_ms: u64,
    /// Most linear memory of a guest instance, bytes.
    pub memory_bytes: usize,
    /// The peak guest memory may grow by at most this factor from the end of day 2 to any
    /// later day end (plus one MiB of slack): growth must level off.
    pub memory_daily_growth: f64,
}

impl Bounds {
    /// Bounds for a tenant of `users` users.
    pub fn for_users(users: usize) -> Self {
        Self {
            // The fake PBX redials after at most 30 s backoff; login and replication are quick.
            login_ms: 3 * 60_000,
            // Lost notifications are only repaired by the guest's reconciliation, every 30
            // minutes by default (`presence.reconcile-interval-s`), so that plus slack.
            presence_ms: 40 * 60_000,
            kv_entries: 1_000 + 40 * users,
            kv_bytes: (1 << 20) + 8 * 1024 * users,
            kv_daily_growth: 1.25,
            lapse_ms: LAPSE_TOLERANCE_MS,
            // The guest holds its tenant in memory (users, matches, presence): about 1.6 MiB
            // at 100 users; ten times that plus a share per user, far below the host's cap.
            memory_bytes: (16 << 20) + 32 * 1024 * users,
            memory_daily_growth: 1.25,
        }
    }
}

/// How long a presence subscription may lapse once nothing is broken any more (ms).
///
/// Derived from graph.md §4.4/§3.5 and the guest's defaults: a presence subscription lives at
/// most 60 min and is renewed by PATCH every `presence.renew-interval-s` (600 s), so in a
/// healthy world five renewals in a row must fail before it expires; one that expired anyway
/// (or was deleted) is recreated at the next renewal tick (at most 10 min later) or by a
/// pending retry (backoff capped at 5 min). Another 5 min cover a token refresh in backoff
/// (same cap) and the request round trips, so: 10 + 5 + 5 = 20 min.
pub const LAPSE_TOLERANCE_MS: u64 = 20 * 60_000;

/// The guest's audit trail (`guest/src/audit.rs`): a ring of presence writes kept 7 days and
/// at most 20,000 entries. It grows over the first week by design, so KV growth is judged
/// without it and the ring against its own documented bounds.
const AUDIT_PREFIX: &str = "audit/";
const AUDIT_MAX_ENTRIES: usize = 20_000;
const AUDIT_RETENTION_MS: u64 = 7 * 86_400_000;

/// The Teams -> PBX activity mapping of the product (`product.md` F1), on Graph's activity.
/// `None` means "online": the connector's own item is unset.
pub fn mapped_activity(availability: &str, activity: &str) -> Option<&'static str> {
    let by = |a: &str| -> Option<Option<&'static str>> {
        Some(match a.to_ascii_lowercase().as_str() {
            "away" | "berightback" | "outofoffice" => Some("away"),
            "busy" => Some("busy"),
            "donotdisturb" | "urgentinterruptionsonly" => Some("dnd"),
            "inacall" | "presenting" | "inaconferencecall" => Some("on-the-phone"),
            "inameeting" => Some("meeting"),
            "inactive" | "presenceunknown" | "available" | "offline" | "offwork" => None,
            _ => return None,
        })
    };
    by(activity).or_else(|| by(availability)).flatten()
}

/// The PBX -> Teams mapping of the product (`product.md` F2) for preferred presences:
/// `Some(None)` means "clear", `None` an activity outside the table (or a call, which is a
/// session, not a preferred presence).
pub fn teams_preferred(activity: &str) -> Option<Option<(&'static str, &'static str)>> {
    Some(match activity.to_ascii_lowercase().as_str() {
        "" => None,
        "busy" | "meeting" => Some(("Busy", "Busy")),
        "dnd" => Some(("DoNotDisturb", "DoNotDisturb")),
        "away" | "vacation" => Some(("Away", "Away")),
        "lunch" => Some(("BeRightBack", "BeRightBack")),
        _ => return None,
    })
}

/// One invariant's record.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Name.
    pub name: &'static str,
    /// How many times it had something to check.
    pub checks: u64,
    /// The first violation.
    pub violation: Option<String>,
}

impl Record {
    /// Whether it ever had something to check.
    pub fn active(&self) -> bool {
        self.checks > 0
    }
}

const PREFIX: usize = 12;

/// Names, in report order.
pub const NAMES: &[&str] = &[
    "pbx-protocol",
    "secrets-not-logged",
    "kv-bounded",
    "pbx-logged-in-after-faults",
    "one-presence-subscription-per-account",
    "presence-converged",
    "no-subscription-lapse",
    "memory-bounded",
    "teams-shows-pbx-presence",
];

/// The checker of one run.
pub struct Checker {
    bounds: Bounds,
    start_ms: u64,
    faults_end: u64,
    secrets: Vec<String>,
    /// The first `PREFIX` bytes of every secret that long (membership only: no order leaks).
    prefixes: std::collections::HashSet<Vec<u8>>,
    /// Secrets shorter than `PREFIX`.
    short: Vec<String>,
    /// How many secrets the two fields above cover.
    indexed: usize,
    presence_contact: String,
    records: BTreeMap<&'static str, Record>,
    logs_seen: usize,
    secrets_seen: usize,
    kv_day2: Option<usize>,
    last_day: u64,
    presence_last_eval: u64,
    presence_seen: bool,
    presence_probe_at: u64,
    /// Per account: since when it has had no live presence subscription (None: it has one),
    /// and the latest expiry seen while it had one.
    lapses: BTreeMap<(String, String), (Option<u64>, u64)>,
    /// Longest lapse seen while faults were still on / after they stopped (ms).
    pub longest_lapse_in_faults_ms: u64,
    /// Longest lapse counted against the tolerance (ms).
    pub longest_lapse_ms: u64,
    memory_day2: Option<usize>,
    memory_day: u64,
    reverse_last_eval: u64,
    /// Teams user id -> the preferred presence last seen and since when (PBX -> Teams runs).
    preferred: BTreeMap<String, (Option<(String, String)>, u64)>,
    /// Subscriptions whose clientState is in `secrets`.
    client_states: std::collections::BTreeSet<String>,
}

impl Checker {
    /// A checker for a run starting at `start_ms` whose faults stop at `faults_end`. `secrets`
    /// are the configured ones (passwords, client secrets); tokens the fake issues and the
    /// subscriptions' clientState values are added as they appear.
    pub fn new(bounds: Bounds, start_ms: u64, faults_end: u64, secrets: Vec<String>) -> Self {
        Self {
            bounds,
            start_ms,
            faults_end,
            secrets,
            prefixes: Default::default(),
            short: Vec::new(),
            indexed: 0,
            presence_contact: "teams:".into(),
            records: NAMES
                .iter()
                .map(|n| {
                    (
                        *n,
                        Record {
                            name: n,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            logs_seen: 0,
            secrets_seen: 0,
            kv_day2: None,
            last_day: 0,
            presence_last_eval: 0,
            presence_seen: false,
            presence_probe_at: 0,
            lapses: BTreeMap::new(),
            longest_lapse_in_faults_ms: 0,
            longest_lapse_ms: 0,
            memory_day2: None,
            memory_day: 0,
            client_states: Default::default(),
            reverse_last_eval: 0,
            preferred: BTreeMap::new(),
        }
    }

    /// Every invariant's record, in report order.
    pub fn records(&self) -> Vec<Record> {
        NAMES.iter().map(|n| self.records[n].clone()).collect()
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<String> {
        self.records()
            .into_iter()
            .find_map(|r| r.violation.map(|v| format!("{}: {v}", r.name)))
    }

    fn result(&mut self, name: &'static str, outcome: Result<bool, String>) -> Result<(), String> {
        let r = self.records.get_mut(name).expect("known invariant");
        match outcome {
            Ok(checked) => {
                r.checks += u64::from(checked);
                Ok(())
            }
            Err(v) => {
                r.checks += 1;
                let message = format!("{name}: {v}");
                r.violation.get_or_insert(v);
                Err(message)
            }
        }
    }

    /// Checks everything after one event; the first violation stops the run.
    pub fn check(&mut self, sim: &Sim<FakesWorld>) -> Result<(), String> {
        let now = sim.now_ms();
        let world = sim.world();
        let out = protocol(world);
        self.result("pbx-protocol", out)?;
        let out = self.secrets(sim);
        self.result("secrets-not-logged", out)?;
        let out = self.kv(sim, now);
        self.result("kv-bounded", out)?;
        let out = self.logged_in(world, now);
        self.result("pbx-logged-in-after-faults", out)?;
        let out = one_subscription(world);
        self.result("one-presence-subscription-per-account", out)?;
        let out = self.presence(world, now);
        self.result("presence-converged", out)?;
        let out = self.lapse(world, now);
        self.result("no-subscription-lapse", out)?;
        let out = self.memory(sim, now);
        self.result("memory-bounded", out)?;
        let out = self.reverse(world, now);
        self.result("teams-shows-pbx-presence", out)?;
        Ok(())
    }

    fn secrets(&mut self, sim: &Sim<FakesWorld>) -> Result<bool, String> {
        // A new subscription's clientState (the shared secret of its notifications) joins too.
        for sub in sim.world().fake.subscriptions() {
            if let Some(state) = &sub.client_state
                && state.len() >= 16
                && self.client_states.insert(sub.id.clone())
            {
                self.secrets.push(state.clone());
            }
        }
        // Tokens issued since the last event join the list (they cannot be in older lines).
        let issued = &sim.world().issued_secrets;
        if issued.len() > self.secrets_seen {
            self.secrets = self
                .secrets
                .iter()
                .cloned()
                .chain(issued.iter().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            self.secrets_seen = issued.len();
        }
        if self.indexed != self.secrets.len() {
            self.indexed = self.secrets.len();
            self.prefixes.clear();
            self.short.clear();
            for s in &self.secrets {
                match s.as_bytes().get(..PREFIX) {
                    Some(p) => {
                        self.prefixes.insert(p.to_vec());
                    }
                    None => self.short.push(s.clone()),
                }
            }
        }
        let logs = &sim.durable().logs;
        let new = &logs[self.logs_seen.min(logs.len())..];
        self.logs_seen = logs.len();
        for line in new {
            for text in [&line.message, &line.target] {
                // A week of logs against hundreds of tokens: look up every window of the line
                // in the set of secret prefixes instead of searching for every secret.
                let hit = text
                    .as_bytes()
                    .windows(PREFIX)
                    .any(|w| self.prefixes.contains(w))
                    || self.short.iter().any(|s| text.contains(s.as_str()));
                if hit && let Some(s) = self.secrets.iter().find(|s| text.contains(s.as_str())) {
                    // The report must not leak it either.
                    return Err(format!(
                        "a secret ({}...) is in the log line `{}`",
                        &s[..s.len().min(4)],
                        line.message.replace(s.as_str(), "<secret>")
                    ));
                }
            }
        }
        Ok(!new.is_empty() && !self.secrets.is_empty())
    }

    fn kv(&mut self, sim: &Sim<FakesWorld>, now: u64) -> Result<bool, String> {
        let kv = &sim.durable().kv;
        let entries = kv.len();
        // The audit trail is a ring with its own bounds (checked below), the rest scales with
        // the tenant.
        if entries > self.bounds.kv_entries + AUDIT_MAX_ENTRIES {
            return Err(format!(
                "{entries} KV entries (bound {} + {AUDIT_MAX_ENTRIES} audit entries)",
                self.bounds.kv_entries
            ));
        }
        // Byte totals cost a pass over the store: once per simulated day is enough for growth,
        // and the entry bound above catches a runaway in between.
        let day = (now - self.start_ms) / 86_400_000;
        if day != self.last_day {
            self.last_day = day;
            let (mut bytes, mut keys) = (0, 0);
            let (mut audit, mut oldest_audit) = (0, None);
            for (k, v) in kv.iter() {
                match k.strip_prefix(AUDIT_PREFIX) {
                    Some(rest) => {
                        audit += 1;
                        // Keys are `audit/<at_ms, 15 digits>-<seq>`: the first is the oldest.
                        if oldest_audit.is_none() {
                            oldest_audit = rest.get(..15).and_then(|t| t.parse::<u64>().ok());
                        }
                    }
                    None => {
                        keys += 1;
                        bytes += k.len() + v.len();
                    }
                }
            }
            if keys > self.bounds.kv_entries {
                return Err(format!(
                    "{keys} KV entries besides the audit trail (bound {}); largest key prefixes: {}",
                    self.bounds.kv_entries,
                    kv_prefixes(kv)
                ));
            }
            if bytes > self.bounds.kv_bytes {
                return Err(format!(
                    "{bytes} KV bytes besides the audit trail (bound {}); largest key prefixes: {}",
                    self.bounds.kv_bytes,
                    kv_prefixes(kv)
                ));
            }
            if audit > AUDIT_MAX_ENTRIES {
                return Err(format!(
                    "{audit} audit entries (the trail keeps at most {AUDIT_MAX_ENTRIES})"
                ));
            }
            if let Some(at) = oldest_audit
                && now.saturating_sub(at) > AUDIT_RETENTION_MS + 86_400_000
            {
                return Err(format!(
                    "an audit entry is {} h old (the trail keeps 7 days)",
                    (now - at) / 3_600_000
                ));
            }
            if day == 2 {
                self.kv_day2 = Some(bytes);
            } else if let Some(base) = self.kv_day2 {
                let limit =
                    base as f64 * self.bounds.kv_daily_growth + (self.bounds.kv_bytes / 16) as f64;
                if bytes as f64 > limit {
                    return Err(format!(
                        "KV keeps growing: {base} bytes after day 2, {bytes} after day {day} (audit trail aside); largest key prefixes: {}",
                        kv_prefixes(kv)
                    ));
                }
            }
        }
        Ok(true)
    }

    fn logged_in(&mut self, world: &FakesWorld, now: u64) -> Result<bool, String> {
        if now < self.faults_end + self.bounds.login_ms {
            return Ok(false);
        }
        for n in world.pbx.node_status() {
            if !world.pbx.is_logged_in(&n.name) {
                return Err(format!(
                    "PBX `{}` not logged in {} s after the faults stopped (state {}, {} logins)",
                    n.name,
                    (now - self.faults_end) / 1_000,
                    n.state,
                    n.logins
                ));
            }
        }
        Ok(true)
    }

    fn presence(&mut self, world: &FakesWorld, now: u64) -> Result<bool, String> {
        // Active once the guest shows it does Teams -> PBX presence: a presence subscription
        // exists, or one of its own presence items is in the PBX.
        // Probing costs a pass over the users: every ten simulated minutes is plenty.
        if !self.presence_seen && now >= self.presence_probe_at {
            self.presence_probe_at = now + 600_000;
            self.presence_seen = world
                .fake
                .subscriptions()
                .iter()
                .any(|s| matches!(s.kind, SubKind::Presence(_)))
                || world.matched.iter().any(|m| {
                    world
                        .pbx
                        .stored_presence(&m.pbx_guid)
                        .iter()
                        .any(|p| p.contact == self.presence_contact && !p.activity.is_empty())
                });
        }
        let settled = self.faults_end + self.bounds.presence_ms;
        // A pass over all users per event would dominate the run; a converged state is steady,
        // so every five simulated seconds loses nothing.
        if now < self.presence_last_eval + 5_000 {
            return Ok(false);
        }
        self.track_preferred(world, now);
        if !self.presence_seen || now < settled {
            return Ok(false);
        }
        self.presence_last_eval = now;
        let mut compared = false;
        for m in world.matched.iter().filter(|m| m.licensed) {
            // When the connector's preferred presence comes or goes, the Teams presence F1
            // sees changes too: the bound counts from then as well.
            let preferred_changed = self.preferred.get(&m.uid).map_or(0, |(_, at)| *at);
            let changed = world
                .teams_changed_at
                .get(&m.uid)
                .copied()
                .unwrap_or(0)
                .max(preferred_changed);
            if now < changed + self.bounds.presence_ms {
                continue;
            }
            let detail = world.fake.presence_detail(&m.uid);
            // A preferred presence is what the connector itself asserted for the PBX state
            // (F2): writing it back into the PBX would be the echo it must not make, so the
            // Teams -> PBX comparison does not apply (teams-shows-pbx-presence covers it).
            let fake_now = world.fake.now();
            if detail.is_some_and(|p| {
                p.preferred
                    .as_ref()
                    .is_some_and(|p| p.expires_at > fake_now)
            }) {
                continue;
            }
            let teams = detail
                .map(|p| p.published.clone())
                .unwrap_or(("Offline".into(), "Offline".into()));
            let want = mapped_activity(&teams.0, &teams.1);
            let items = world.pbx.stored_presence(&m.pbx_guid);
            let have = items
                .iter()
                .find(|p| p.contact == self.presence_contact && !p.activity.is_empty())
                .map(|p| p.activity.as_str());
            compared = true;
            if want != have {
                return Err(format!(
                    "{} is {}/{} in Teams since t+{} s, the PBX shows {:?} (want {:?})",
                    m.upn,
                    teams.0,
                    teams.1,
                    changed.saturating_sub(self.start_ms) / 1_000,
                    have,
                    want
                ));
            }
        }
        Ok(compared)
    }
}

impl Checker {
    fn lapse(&mut self, world: &FakesWorld, now: u64) -> Result<bool, String> {
        let fake_now = world.fake.now();
        let mut live: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in world.fake.subscriptions() {
            if matches!(s.kind, SubKind::Presence(_)) && s.expiration_ms > fake_now {
                let who = s.user_id.clone().unwrap_or_else(|| s.creator_id.clone());
                let e = live.entry((s.application_id.clone(), who)).or_default();
                *e = (*e).max(s.expiration_ms as u64);
            }
        }
        let mut closed = Vec::new();
        for (account, expiry) in &live {
            let entry = self.lapses.entry(account.clone()).or_insert((None, 0));
            closed.extend(entry.0.take());
            entry.1 = *expiry;
        }
        for since in closed {
            self.note_lapse(since, now);
        }
        // Accounts that had a subscription and have none now: the lapse began when the last
        // one expired, or (deleted early) about now.
        let mut longest: Option<(&(String, String), u64)> = None;
        for (account, (since, expiry)) in self.lapses.iter_mut() {
            if live.contains_key(account) {
                continue;
            }
            let since = *since.get_or_insert((*expiry).min(now));
            let counted = now.saturating_sub(since.max(self.faults_end));
            if longest.is_none_or(|(_, l)| counted > l) {
                longest = Some((account, counted));
            }
        }
        if let Some(((_, who), counted)) = longest
            && counted > self.bounds.lapse_ms
        {
            return Err(format!(
                "account {who} has had no live presence subscription for {} s after the faults stopped (tolerance {} s)",
                counted / 1_000,
                self.bounds.lapse_ms / 1_000
            ));
        }
        Ok(!self.lapses.is_empty() && now >= self.faults_end)
    }

    fn note_lapse(&mut self, since: u64, now: u64) {
        let counted = now.saturating_sub(since.max(self.faults_end));
        self.longest_lapse_ms = self.longest_lapse_ms.max(counted);
        if since < self.faults_end {
            let during = now.min(self.faults_end) - since;
            self.longest_lapse_in_faults_ms = self.longest_lapse_in_faults_ms.max(during);
        }
    }

    fn memory(&mut self, sim: &Sim<FakesWorld>, now: u64) -> Result<bool, String> {
        let bytes = sim.memory_bytes();
        if bytes > self.bounds.memory_bytes {
            return Err(format!(
                "the guest instance holds {} KiB of linear memory (bound {} KiB)",
                bytes / 1024,
                self.bounds.memory_bytes / 1024
            ));
        }
        let day = (now - self.start_ms) / 86_400_000;
        if day != self.memory_day {
            self.memory_day = day;
            let peak = sim.stats().peak_memory;
            if day == 2 {
                self.memory_day2 = Some(peak);
            } else if let Some(base) = self.memory_day2 {
                let limit = base as f64 * self.bounds.memory_daily_growth + (1 << 20) as f64;
                if peak as f64 > limit {
                    return Err(format!(
                        "guest memory keeps growing: peak {} KiB after day 2, {} KiB after day {day}",
                        base / 1024,
                        peak / 1024
                    ));
                }
            }
        }
        Ok(bytes > 0)
    }
}

impl Checker {
    /// Notes when each matched user's live preferred presence changed (set, cleared, expired).
    fn track_preferred(&mut self, world: &FakesWorld, now: u64) {
        if !world.has_pbx_workload() {
            return;
        }
        let fake_now = world.fake.now();
        for m in &world.matched {
            let live = world.fake.presence_detail(&m.uid).and_then(|p| {
                p.preferred
                    .as_ref()
                    .filter(|p| p.expires_at > fake_now)
                    .map(|p| (p.availability.clone(), p.activity.clone()))
            });
            match self.preferred.get_mut(&m.uid) {
                Some((seen, at)) if *seen != live => {
                    *seen = live;
                    *at = now;
                }
                Some(_) => {}
                None => {
                    self.preferred.insert(m.uid.clone(), (live, now));
                }
            }
        }
    }

    /// PBX -> Teams: once faults are over, a matched, licensed user's PBX presence (the newest
    /// item that is not the connector's own `teams:` nor `im:`), stable for the bound, is what
    /// the connector asserts in Teams as preferred presence; available clears it. This is also
    /// the no-echo check: a Teams change that F1 wrote into the PBX never comes back as a
    /// preferred presence. A preferred presence lives 1 day (away 7) by design, so after that
    /// it may have expired.
    fn reverse(&mut self, world: &FakesWorld, now: u64) -> Result<bool, String> {
        if !world.has_pbx_workload() {
            return Ok(false);
        }
        let bound = self.bounds.presence_ms;
        if now < self.faults_end + bound || now < self.reverse_last_eval + 5_000 {
            return Ok(false);
        }
        self.reverse_last_eval = now;
        let fake_now = world.fake.now();
        let mut compared = false;
        for m in world.matched.iter().filter(|m| m.licensed) {
            let changed = world
                .pbx_changed_at
                .get(&m.pbx_guid)
                .copied()
                .unwrap_or(0)
                .max(self.start_ms);
            if now < changed + bound {
                continue;
            }
            let items = world.pbx.stored_presence(&m.pbx_guid);
            let counted = items
                .iter()
                .find(|i| {
                    !i.contact.eq_ignore_ascii_case(&self.presence_contact)
                        && !i.contact.eq_ignore_ascii_case("im:")
                })
                .map(|i| i.activity.as_str())
                .unwrap_or("");
            let Some(want) = teams_preferred(counted) else {
                continue;
            };
            let have = world.fake.presence_detail(&m.uid).and_then(|p| {
                p.preferred
                    .as_ref()
                    .filter(|p| p.expires_at > fake_now)
                    .map(|p| (p.availability.as_str(), p.activity.as_str()))
            });
            compared = true;
            if have == want {
                continue;
            }
            let lifetime = match want {
                Some(("Away", _)) => 7 * 86_400_000,
                _ => 86_400_000,
            };
            if have.is_none() && now >= changed + lifetime {
                continue;
            }
            return Err(format!(
                "{} set `{counted}` on the PBX at t+{} s, Teams shows the preferred presence {have:?} (want {want:?})",
                m.upn,
                changed.saturating_sub(self.start_ms) / 1_000
            ));
        }
        Ok(compared)
    }
}

/// The five key prefixes (up to the second `/`) holding the most bytes, with entry counts:
/// what a growth violation needs to be understood.
fn kv_prefixes(kv: &crate::kv::Store) -> String {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (k, v) in kv.iter() {
        let key = String::from_utf8_lossy(k.as_ref());
        let prefix: String = key
            .split_inclusive('/')
            .take(2)
            .filter(|segment| segment.ends_with('/'))
            .collect();
        let e = by.entry(prefix).or_default();
        e.0 += 1;
        e.1 += k.len() + v.len();
    }
    let mut top: Vec<_> = by.into_iter().collect();
    top.sort_by_key(|(_, (_, bytes))| std::cmp::Reverse(*bytes));
    top.iter()
        .take(5)
        .map(|(p, (n, b))| format!("{p} {n} keys {b} B"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn protocol(world: &FakesWorld) -> Result<bool, String> {
    match world.pbx.violations().first() {
        Some(v) => Err(v.clone()),
        None => Ok(true),
    }
}

fn one_subscription(world: &FakesWorld) -> Result<bool, String> {
    let now = world.fake.now();
    let mut by_account: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for s in world.fake.subscriptions() {
        if matches!(s.kind, SubKind::Presence(_)) && s.expiration_ms > now {
            let who = s.user_id.clone().unwrap_or_else(|| s.creator_id.clone());
            by_account
                .entry((s.application_id.clone(), who))
                .or_default()
                .push(s.id.clone());
        }
    }
    if by_account.is_empty() {
        return Ok(false);
    }
    match by_account.iter().find(|(_, subs)| subs.len() > 1) {
        Some(((app, who), subs)) => Err(format!(
            "account {who} (app {app}) has {} live presence subscriptions: {subs:?}",
            subs.len()
        )),
        None => Ok(true),
    }
}
