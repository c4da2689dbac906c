//! The sans-IO PBX core: shared user table, presence, calls and licences, plus one AppWebsocket
//! client state machine per PBX node (master, slaves). Frames go in through [`Pbx::on_frame`],
//! everything the PBX wants to do comes out of [`Pbx::drain`] as [`Output`]s.

use crate::clock::{Clock, Rng};
use crate::login::{AppObject, ObjectLogin, challenge_is_valid, object_login};
use crate::switches::{GatedReply, Switches};
use crate::users::{User, Visibility};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Identifies one WebSocket connection attempt (unique over the PBX's lifetime).
pub type ConnId = u64;

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a WebSocket to `url`; report [`Pbx::on_connected`] or [`Pbx::on_closed`].
    Dial {
        /// Connection id the core assigned.
        conn: ConnId,
        /// PBX node name.
        node: String,
        /// URL to dial (ws:// or wss://).
        url: String,
    },
    /// Send a text frame.
    Send {
        /// Connection.
        conn: ConnId,
        /// JSON text.
        text: String,
    },
    /// Close the connection normally.
    Close {
        /// Connection.
        conn: ConnId,
    },
    /// Fault: write a truncated frame and drop TCP without a close handshake.
    CloseMidMessage {
        /// Connection.
        conn: ConnId,
    },
}

/// Configuration of one PBX (master or slave) and its App object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    /// PBX name (`PbxInfo.pbx`, `info.pbx`, users' `loc`).
    pub name: String,
    /// `PbxInfo.pbxDns`.
    pub dns: String,
    /// The App object on this PBX (its URL is the one dialled).
    pub app: AppObject,
    /// Dial this URL instead of the App URL (e.g. a sub-path below the instance base); the
    /// AppLogin still names the App URL's last segment.
    #[serde(default)]
    pub dial_url: Option<String>,
    /// APIs enabled on the App object, as listed in `PbxInfo.apis`.
    pub apis: Vec<String>,
    /// `PbxInfo.version`.
    #[serde(default = "default_version")]
    pub version: String,
    /// `PbxInfo.build`.
    #[serde(default = "default_build")]
    pub build: String,
}

fn default_version() -> String {
    "14r2 sr12 [143104]".into()
}
fn default_build() -> String {
    "143104".into()
}

/// APIs enabled on the connector's App object by default.
pub fn default_apis() -> Vec<String> {
    ["PbxApi", "PbxTableUsers", "PbxAdminApi", "PbxImpersonation"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Login faults to inject into the next login of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginFault {
    /// Compute the digest with a wrong password.
    WrongPassword,
    /// Compute the digest with the previous connection's challenge.
    StaleChallenge,
    /// Send a garbage frame instead of the AppLogin.
    GarbageBeforeLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ConnState {
    Dialing,
    AwaitChallenge,
    AwaitLoginResult,
    LoggedIn,
}

#[derive(Debug)]
pub(crate) struct Sub {
    pub api: String,
    pub src: Option<String>,
    pub sip: Option<String>,
    pub num: Option<String>,
    pub user: Option<String>,
    pub up: bool,
    pub last: Option<Value>,
}

#[derive(Debug)]
pub(crate) struct Repl {
    pub src: Option<String>,
    pub columns: Vec<String>,
    pub pseudo: Option<Vec<String>>,
    pub pending: VecDeque<String>,
    pub done: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub node: usize,
    pub state: ConnState,
    pub challenge: Option<String>,
    pub fault: Option<LoginFault>,
    pub subs: BTreeMap<u64, Sub>,
    pub next_sub: u64,
    /// User GUID → subscription ids (may hold ids already removed from `subs`).
    pub subs_by_user: HashMap<String, Vec<u64>>,
    pub started_at: u64,
    pub repl: Option<Repl>,
    /// Impersonated API name (`PbxApi.<n>`) → user GUID.
    pub imp: HashMap<String, String>,
    pub next_imp: u32,
    pub held: Vec<Vec<String>>,
}

/// Connection status of a PBX node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// PBX name.
    pub name: String,
    /// Current connection, if any.
    pub conn: Option<ConnId>,
    /// `dialing`, `await-challenge`, `await-login-result`, `logged-in`, `waiting` or `killed`.
    pub state: String,
    /// Failed attempts since the last successful login.
    pub attempts: u32,
    /// When the next dial is due (ms), if waiting.
    pub next_dial_at: Option<u64>,
    /// Number of successful logins so far.
    pub logins: u32,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub cfg: NodeConfig,
    pub conn: Option<ConnId>,
    pub killed: bool,
    pub attempts: u32,
    pub next_dial_at: Option<u64>,
    pub logins: u32,
    pub fault: Option<LoginFault>,
    pub last_challenge: Option<String>,
}

/// One frame seen on a PBX connection.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Sequence number.
    pub seq: u64,
    /// Clock time.
    pub at_ms: u64,
    /// Connection.
    pub conn: ConnId,
    /// PBX node.
    pub node: String,
    /// `in` (from the connector) or `out` (from the PBX).
    pub dir: &'static str,
    /// The frame.
    pub text: String,
}

/// One presence item as the PBX stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceItem {
    /// Source of the item (`tel:`, `im:`, `teams:`...).
    pub contact: String,
    /// `open` or `closed`.
    pub status: String,
    /// Activity (`""` = available).
    pub activity: String,
    /// Note.
    pub note: String,
}

/// An alien call the connector added.
#[derive(Debug, Clone, Serialize)]
pub struct AlienCall {
    /// The id returned in AddAlienCallResult.
    pub id: u64,
    /// Connection it was added on.
    pub conn: ConnId,
    /// PBX node of that connection.
    pub node: String,
    /// User GUID.
    pub user: String,
    /// When it was added.
    pub at_ms: u64,
}

/// A CheckAppLic the connector made.
#[derive(Debug, Clone, Serialize)]
pub struct LicenceCheck {
    /// PBX node.
    pub node: String,
    /// The request as received.
    pub request: Value,
    /// The answer given.
    pub ok: bool,
    /// When.
    pub at_ms: u64,
}

/// An installed licence pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Licence {
    /// Name, e.g. `App(innovaphone-microsoft365)`.
    pub name: String,
    /// Installed count.
    pub count: u32,
}

/// The fake PBX (all nodes, one shared user table).
pub struct Pbx {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Rng,
    /// Behaviour switches (public: flip them at any time).
    pub switches: Switches,
    /// PBX system name (`domain`).
    pub domain: String,
    pub(crate) nodes: Vec<Node>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    pub(crate) out: Vec<Output>,
    pub(crate) group: Option<(ConnId, Vec<String>)>,
    // user table
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) by_h323: HashMap<String, String>,
    pub(crate) by_e164: HashMap<String, String>,
    pub(crate) db_guid: String,
    pub(crate) usn: u64,
    pub(crate) tombstones: Vec<(u64, String, String)>,
    // presence and calls
    pub(crate) presence: HashMap<String, Vec<PresenceItem>>,
    pub(crate) pbx_calls: HashMap<String, u32>,
    pub(crate) alien: BTreeMap<u64, AlienCall>,
    pub(crate) next_alien: u64,
    // licences
    pub(crate) licences: Vec<Licence>,
    pub(crate) lic_cache: HashMap<String, HashSet<String>>,
    pub(crate) lic_seq: u64,
    pub(crate) lic_order: HashMap<(String, String), u64>,
    // configuration objects (PbxAdminApi)
    pub(crate) objects: crate::objects::Objects,
    // observation
    pub(crate) log: Vec<LogEntry>,
    log_seq: u64,
    pub(crate) violations: Vec<String>,
    pub(crate) seen_challenges: HashSet<String>,
    pub(crate) licence_checks: Vec<LicenceCheck>,
    pub(crate) app_info_results: Vec<(String, Value)>,
    /// APIs (exact `api` value) whose requests are left unanswered (fault injection).
    pub unanswered_apis: HashSet<String>,
}

impl Pbx {
    /// An empty PBX with system name `domain`. `seed` drives every random choice.
    pub fn new(domain: &str, clock: Arc<dyn Clock>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let db_guid = rng.guid();
        Self {
            clock,
            rng,
            switches: Switches::default(),
            domain: domain.into(),
            nodes: vec![],
            conns: BTreeMap::new(),
            next_conn: 1,
            out: vec![],
            group: None,
            users: BTreeMap::new(),
            by_h323: HashMap::new(),
            by_e164: HashMap::new(),
            db_guid,
            usn: 1000,
            tombstones: vec![],
            presence: HashMap::new(),
            pbx_calls: HashMap::new(),
            alien: BTreeMap::new(),
            next_alien: 1,
            licences: vec![],
            lic_cache: HashMap::new(),
            lic_seq: 0,
            lic_order: HashMap::new(),
            objects: Default::default(),
            log: vec![],
            log_seq: 0,
            violations: vec![],
            seen_challenges: HashSet::new(),
            licence_checks: vec![],
            app_info_results: vec![],
            unanswered_apis: HashSet::new(),
        }
    }

    /// Current clock time.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Adds a PBX node; it dials at the next [`Pbx::tick`].
    pub fn add_node(&mut self, cfg: NodeConfig) {
        let now = self.now();
        self.nodes.push(Node {
            cfg,
            conn: None,
            killed: false,
            attempts: 0,
            next_dial_at: Some(now),
            logins: 0,
            fault: None,
            last_challenge: None,
        });
    }

    /// Node configs.
    pub fn node_configs(&self) -> Vec<NodeConfig> {
        self.nodes.iter().map(|n| n.cfg.clone()).collect()
    }

    /// Mutable access to a node's config (e.g. change its App object password or APIs; takes
    /// effect at the next login).
    pub fn node_config_mut(&mut self, node: &str) -> Option<&mut NodeConfig> {
        self.nodes
            .iter_mut()
            .find(|n| n.cfg.name == node)
            .map(|n| &mut n.cfg)
    }

    pub(crate) fn node_idx(&self, node: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.cfg.name == node)
    }

    /// Status of every node.
    pub fn node_status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|n| NodeStatus {
                name: n.cfg.name.clone(),
                conn: n.conn,
                state: if n.killed {
                    "killed".into()
                } else if let Some(c) = n.conn.and_then(|c| self.conns.get(&c)) {
                    serde_json::to_value(c.state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                } else {
                    "waiting".into()
                },
                attempts: n.attempts,
                next_dial_at: n.next_dial_at,
                logins: n.logins,
            })
            .collect()
    }

    /// Whether `node` is logged in.
    pub fn is_logged_in(&self, node: &str) -> bool {
        self.node_conn(node)
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.state == ConnState::LoggedIn)
    }

    /// Current connection of `node`.
    pub fn node_conn(&self, node: &str) -> Option<ConnId> {
        self.node_idx(node).and_then(|i| self.nodes[i].conn)
    }

    /// Takes everything the driver must do.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Earliest time at which [`Pbx::tick`] has work (dial due), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let dial = self
            .nodes
            .iter()
            .filter(|n| !n.killed && n.conn.is_none())
            .filter_map(|n| n.next_dial_at);
        let login = self
            .conns
            .values()
            .filter(|c| {
                matches!(
                    c.state,
                    ConnState::AwaitChallenge | ConnState::AwaitLoginResult
                )
            })
            .map(|c| c.started_at.saturating_add(self.switches.login_timeout_ms));
        // Held (reordered) responses are released at the next tick.
        let held = self
            .conns
            .values()
            .any(|c| !c.held.is_empty())
            .then(|| self.now());
        dial.chain(login).chain(held).min()
    }

    /// Time-driven work: dial nodes whose backoff expired, flush reordered responses.
    pub fn tick(&mut self) {
        let now = self.now();
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.killed || n.conn.is_some() || n.next_dial_at.is_none_or(|t| t > now) {
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            let n = &mut self.nodes[i];
            n.conn = Some(id);
            n.next_dial_at = None;
            let fault = n.fault.take();
            let url = n
                .cfg
                .dial_url
                .clone()
                .unwrap_or_else(|| n.cfg.app.url.clone());
            let url = url
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1);
            self.out.push(Output::Dial {
                conn: id,
                node: n.cfg.name.clone(),
                url,
            });
            self.conns.insert(
                id,
                Conn {
                    node: i,
                    state: ConnState::Dialing,
                    challenge: None,
                    fault,
                    subs: BTreeMap::new(),
                    next_sub: 0,
                    subs_by_user: HashMap::new(),
                    started_at: now,
                    repl: None,
                    imp: HashMap::new(),
                    next_imp: 0,
                    held: vec![],
                },
            );
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.flush_held(id);
        }
        // A service that never completes the login is given up on, as a PBX would.
        let limit = self.switches.login_timeout_ms;
        let stuck: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.state,
                    ConnState::AwaitChallenge | ConnState::AwaitLoginResult
                ) && now.saturating_sub(c.started_at) >= limit
            })
            .map(|(id, _)| *id)
            .collect();
        for c in stuck {
            self.out.push(Output::Close { conn: c });
            self.on_closed(c);
        }
    }

    fn flush_held(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut held = std::mem::take(&mut c.held);
        held.reverse();
        for g in held {
            for t in g {
                self.push_send(conn, t);
            }
        }
    }

    /// The WebSocket to `conn` is open: the PBX always starts with `AppChallenge`.
    pub fn on_connected(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.state = ConnState::AwaitChallenge;
        c.started_at = self.clock.now_ms();
        self.send(conn, json!({"mt":"AppChallenge"}));
    }

    /// The connection is gone (closed by either side, dial failed, TCP reset). All its
    /// subscriptions, replications, impersonations and alien calls vanish; the node reconnects
    /// after a backoff delay unless it was killed.
    pub fn on_closed(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let ni = c.node;
        let ids: Vec<u64> = self
            .alien
            .values()
            .filter(|a| a.conn == conn)
            .map(|a| a.id)
            .collect();
        let mut touched = vec![];
        for id in ids {
            if let Some(a) = self.alien.remove(&id) {
                touched.push(a.user);
            }
        }
        let now = self.now();
        let sw = &self.switches;
        let (base, max, jit) = (sw.backoff_base_ms, sw.backoff_max_ms, sw.backoff_jitter_ms);
        let jitter = if jit > 0 { self.rng.below(jit + 1) } else { 0 };
        let n = &mut self.nodes[ni];
        if n.conn == Some(conn) {
            n.conn = None;
            let delay = base
                .saturating_mul(1u64 << n.attempts.min(16))
                .min(max)
                .saturating_add(jitter);
            n.attempts = n.attempts.saturating_add(1);
            n.next_dial_at = if n.killed { None } else { Some(now + delay) };
        }
        for u in touched {
            self.notify_user(&u);
        }
    }

    /// Kills a node's connection abruptly and keeps it down until [`Pbx::restore`].
    pub fn kill(&mut self, node: &str) {
        if let Some(i) = self.node_idx(node) {
            self.nodes[i].killed = true;
            self.nodes[i].next_dial_at = None;
            if let Some(c) = self.nodes[i].conn {
                self.out.push(Output::Close { conn: c });
                self.on_closed(c);
            }
        }
    }

    /// Lets a killed node reconnect (immediately).
    pub fn restore(&mut self, node: &str) {
        let now = self.now();
        if let Some(i) = self.node_idx(node) {
            let n = &mut self.nodes[i];
            n.killed = false;
            n.attempts = 0;
            if n.conn.is_none() {
                n.next_dial_at = Some(now);
            }
        }
    }

    /// Fault: drop the node's TCP connection in the middle of a frame.
    pub fn close_mid_message(&mut self, node: &str) {
        if let Some(c) = self.node_conn(node) {
            self.out.push(Output::CloseMidMessage { conn: c });
            self.on_closed(c);
        }
    }

    /// Fault: the node's next login misbehaves.
    pub fn inject_login_fault(&mut self, node: &str, fault: LoginFault) {
        if let Some(i) = self.node_idx(node) {
            self.nodes[i].fault = Some(fault);
        }
    }

    /// Sends an arbitrary frame (garbage, unsolicited messages) on the node's connection.
    pub fn inject_frame(&mut self, node: &str, text: &str) -> bool {
        match self.node_conn(node) {
            Some(c) => {
                self.push_send(c, text.to_string());
                true
            }
            None => false,
        }
    }

    /// Item 7: asks the service about an app (`AppInfo`), e.g. the `microsoft365-api` HTML name.
    pub fn send_app_info(&mut self, node: &str, app: &str) -> bool {
        match self.node_conn(node) {
            Some(c) if self.conns[&c].state == ConnState::LoggedIn => {
                self.send(c, json!({"mt":"AppInfo","app":app}));
                true
            }
            _ => false,
        }
    }

    /// AppInfoResults received: `(node, message)`.
    pub fn app_info_results(&self) -> &[(String, Value)] {
        &self.app_info_results
    }

    /// Every frame seen (both directions unless `log_outgoing` is off).
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// Frames received from the connector on `node` (all connections, in order).
    pub fn received(&self, node: &str) -> Vec<Value> {
        self.log
            .iter()
            .filter(|e| e.dir == "in" && e.node == node)
            .filter_map(|e| serde_json::from_str(&e.text).ok())
            .collect()
    }

    /// Clears the message log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// Protocol violations by the connector detected so far (challenge reuse, accepted stale or
    /// wrong digests, API traffic before login, ...). Tests assert this is empty.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub(crate) fn violation(&mut self, v: String) {
        self.violations.push(v);
    }

    fn record(&mut self, conn: ConnId, dir: &'static str, text: &str) {
        if dir == "out" && !self.switches.log_outgoing {
            return;
        }
        let node = self
            .conns
            .get(&conn)
            .map(|c| self.nodes[c.node].cfg.name.clone())
            .unwrap_or_default();
        self.log_seq += 1;
        self.log.push(LogEntry {
            seq: self.log_seq,
            at_ms: self.clock.now_ms(),
            conn,
            node,
            dir,
            text: text.to_string(),
        });
    }

    fn push_send(&mut self, conn: ConnId, text: String) {
        self.record(conn, "out", &text);
        self.out.push(Output::Send { conn, text });
    }

    /// Sends a message; while a request of `conn` is being handled, frames to it are grouped so
    /// that `reorder_responses` can shuffle whole responses.
    pub(crate) fn send(&mut self, conn: ConnId, msg: Value) {
        let text = msg.to_string();
        if let Some((c, g)) = &mut self.group
            && *c == conn
        {
            g.push(text);
            return;
        }
        self.push_send(conn, text);
    }

    /// A text frame from the connector.
    pub fn on_frame(&mut self, conn: ConnId, text: &str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.record(conn, "in", text);
        // Robustness (item 20): garbage, non-objects and unknown fields are ignored.
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let msg = Value::Object(msg);
        let mt = msg["mt"].as_str().unwrap_or("").to_string();
        if mt == "KeepAlive" {
            return;
        }
        let state = self.conns[&conn].state;
        match state {
            ConnState::Dialing => {}
            ConnState::AwaitChallenge => {
                if mt == "AppChallengeResult" {
                    self.on_challenge(conn, &msg);
                } else {
                    self.pre_login_traffic(conn, &mt);
                }
            }
            ConnState::AwaitLoginResult => {
                if mt == "AppLoginResult" {
                    self.on_login_result(conn, &msg);
                } else {
                    self.pre_login_traffic(conn, &mt);
                }
            }
            ConnState::LoggedIn => self.on_logged_in(conn, &mt, &msg),
        }
    }

    fn pre_login_traffic(&mut self, conn: ConnId, mt: &str) {
        // A real PBX ignores it; the connector must not send API traffic before login.
        self.violation(format!(
            "conn {conn}: message {mt:?} received before AppLoginResult"
        ));
    }

    fn on_challenge(&mut self, conn: ConnId, msg: &Value) {
        let challenge = msg["challenge"].as_str().unwrap_or("").to_string();
        if !challenge_is_valid(&challenge) {
            self.violation(format!("conn {conn}: invalid challenge {challenge:?}"));
        }
        if !self.seen_challenges.insert(challenge.clone()) {
            self.violation(format!(
                "conn {conn}: challenge {challenge:?} reused across connections"
            ));
        }
        let c = self.conns.get_mut(&conn).expect("conn");
        c.challenge = Some(challenge.clone());
        c.state = ConnState::AwaitLoginResult;
        let fault = c.fault;
        let ni = c.node;
        let node = &self.nodes[ni];
        let stale = node.last_challenge.clone();
        let mut password = node.cfg.app.password.clone();
        let mut used = challenge.clone();
        match fault {
            Some(LoginFault::WrongPassword) => password.push_str("-wrong"),
            Some(LoginFault::StaleChallenge) => {
                used = stale.unwrap_or_else(|| "0000000000000000".into())
            }
            Some(LoginFault::GarbageBeforeLogin) | None => {}
        }
        let built = object_login(
            &ObjectLogin {
                domain: &self.domain,
                pbx: &node.cfg.name,
                obj: &node.cfg.app,
                unlicensed: self.switches.object_login_unlicensed,
                testmode: self.switches.testmode,
                info_order: &self.switches.info_key_order,
            },
            &used,
            &password,
        );
        self.nodes[ni].last_challenge = Some(challenge);
        if fault == Some(LoginFault::GarbageBeforeLogin) {
            self.push_send(conn, "\u{1}garbage{ not json".into());
        }
        self.push_send(conn, built.text);
    }

    fn on_login_result(&mut self, conn: ConnId, msg: &Value) {
        let ok = msg["ok"].as_bool() == Some(true);
        let c = &self.conns[&conn];
        let ni = c.node;
        let faulty = matches!(
            c.fault,
            Some(LoginFault::WrongPassword | LoginFault::StaleChallenge)
        );
        if ok && faulty {
            self.violation(format!(
                "conn {conn}: service accepted an AppLogin with a bad digest ({:?})",
                c.fault
            ));
        }
        if !ok {
            // Anything but ok:true: close and reconnect with backoff.
            self.out.push(Output::Close { conn });
            self.on_closed(conn);
            return;
        }
        self.conns.get_mut(&conn).expect("conn").state = ConnState::LoggedIn;
        let n = &mut self.nodes[ni];
        n.attempts = 0;
        n.logins += 1;
        let info = json!({
            "mt": "PbxInfo",
            "domain": self.domain,
            "pbx": n.cfg.name,
            "pbxDns": n.cfg.dns,
            "apis": n.cfg.apis,
            "version": n.cfg.version,
            "build": n.cfg.build,
        });
        self.send(conn, info);
        // Unsolicited AppInfo requests (no src), as the PBX does to learn an app's APIs.
        for app in self.switches.app_info_after_login.clone() {
            self.send(conn, json!({"mt":"AppInfo","app":app}));
        }
    }

    fn api_enabled(&self, conn: ConnId, api: &str) -> bool {
        let c = &self.conns[&conn];
        let apis = &self.nodes[c.node].cfg.apis;
        if api.starts_with("PbxApi.") {
            return c.imp.contains_key(api) && apis.iter().any(|a| a == "PbxImpersonation");
        }
        apis.iter().any(|a| a == api)
    }

    fn on_logged_in(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        let Some(api) = msg["api"].as_str().map(String::from) else {
            // Unknown base messages are ignored.
            if mt == "AppInfoResult" {
                let node = self.nodes[self.conns[&conn].node].cfg.name.clone();
                self.check_app_info_result(conn, msg);
                self.app_info_results.push((node, msg.clone()));
            }
            return;
        };
        if !self.api_enabled(conn, &api) {
            if self.switches.gated_reply == GatedReply::Error {
                let mut r = result_of(msg);
                r["error"] = json!(1);
                r["errorText"] = json!(format!("api {api} not available"));
                self.send(conn, r);
            }
            return;
        }
        if self.unanswered_apis.contains(&api) {
            return;
        }
        self.group = Some((conn, vec![]));
        match api.as_str() {
            "PbxTableUsers" => self.on_replication(conn, mt, msg),
            "PbxAdminApi" => self.on_admin(conn, mt, msg),
            "PbxImpersonation" => self.on_impersonation(conn, mt, msg),
            a if a == "PbxApi" || a.starts_with("PbxApi.") => self.on_pbxapi(conn, mt, msg),
            _ => {}
        }
        let (_, frames) = self.group.take().expect("group");
        if frames.is_empty() {
            return;
        }
        if self.switches.reorder_responses {
            let c = self.conns.get_mut(&conn).expect("conn");
            c.held.push(frames);
            // Release in reverse order once two responses are pending.
            if c.held.len() >= 2 {
                self.flush_held(conn);
            }
        } else {
            for f in frames {
                self.push_send(conn, f);
            }
        }
    }

    fn check_app_info_result(&mut self, conn: ConnId, msg: &Value) {
        let app = msg["app"].as_str().unwrap_or("");
        if app.ends_with("api") {
            if msg["info"]["hidden"] != json!(true) {
                self.violation(format!("conn {conn}: AppInfoResult for {app} not hidden"));
            }
            if msg["info"]["apis"]["com.innovaphone.search"].is_null() {
                self.violation(format!(
                    "conn {conn}: AppInfoResult for {app} lacks apis.com.innovaphone.search"
                ));
            }
        }
    }

    fn on_impersonation(&mut self, conn: ConnId, mt: &str, msg: &Value) {
        match mt {
            "CreateApi" => {
                let mut r = result_of(msg);
                let sip = msg["sip"].as_str().unwrap_or("");
                let target = msg["target"].as_str().unwrap_or("");
                match self.find_user_by_sip(sip) {
                    Some(g) if target == "PbxApi" => {
                        let c = self.conns.get_mut(&conn).expect("conn");
                        let name = format!("PbxApi.{}", c.next_imp);
                        c.next_imp += 1;
                        c.imp.insert(name.clone(), g);
                        r["target"] = json!(name);
                    }
                    Some(_) => {
                        r["error"] = json!(2);
                        r["errorText"] = json!(format!("target {target} not supported"));
                    }
                    None => {
                        r["error"] = json!(1);
                        r["errorText"] = json!("user not found");
                    }
                }
                self.send(conn, r);
            }
            "DeleteApi" => {
                let target = msg["target"].as_str().unwrap_or("");
                let removed = self
                    .conns
                    .get_mut(&conn)
                    .expect("conn")
                    .imp
                    .remove(target)
                    .is_some();
                let mut r = result_of(msg);
                r["ok"] = json!(removed);
                self.send(conn, r);
            }
            _ => {}
        }
    }

    /// Users, for read-back.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// A user by GUID.
    pub fn user(&self, guid: &str) -> Option<&User> {
        self.users.get(guid)
    }

    /// GUID of the user with this `h323` (case-insensitive).
    pub fn find_user_by_sip(&self, sip: &str) -> Option<String> {
        self.by_h323.get(&sip.to_lowercase()).cloned()
    }

    /// GUID of the user with this number.
    pub fn find_user_by_num(&self, num: &str) -> Option<String> {
        self.by_e164.get(num).cloned()
    }

    /// Resolves `guid`, `sip`, `h323`, `cn` or `num` fields of a request to a user GUID.
    pub(crate) fn resolve(&self, msg: &Value) -> Option<String> {
        if let Some(g) = msg["guid"].as_str() {
            return self.users.contains_key(g).then(|| g.to_string());
        }
        if let Some(s) = msg["sip"].as_str().or(msg["h323"].as_str()) {
            return self.find_user_by_sip(s);
        }
        if let Some(cn) = msg["cn"].as_str() {
            return self
                .users
                .values()
                .find(|u| u.cn == cn)
                .map(|u| u.guid.clone());
        }
        if let Some(n) = msg["num"].as_str() {
            return self.find_user_by_num(n);
        }
        None
    }

    /// Inserts or replaces a user (assigns a new usn) and pushes the change to replications.
    pub fn upsert_user(&mut self, mut u: User) {
        self.usn += 1;
        u.usn = self.usn;
        let existed = self.users.get(&u.guid).cloned();
        if let Some(old) = &existed {
            self.by_h323.remove(&old.h323.to_lowercase());
            if !old.e164.is_empty() {
                self.by_e164.remove(&old.e164);
            }
        }
        self.by_h323.insert(u.h323.to_lowercase(), u.guid.clone());
        if !u.e164.is_empty() {
            self.by_e164.insert(u.e164.clone(), u.guid.clone());
        }
        for l in &u.lics {
            let key = (u.guid.clone(), l.clone());
            if !self.lic_order.contains_key(&key) {
                self.lic_seq += 1;
                self.lic_order.insert(key, self.lic_seq);
            }
        }
        self.lic_cache.clear();
        let guid = u.guid.clone();
        let vis_changed = existed.as_ref().map(|o| o.visibility) != Some(u.visibility);
        self.users.insert(guid.clone(), u);
        self.replicate_change(&guid, existed.is_some());
        if vis_changed && existed.is_some() {
            self.visibility_changed(&guid);
        }
    }

    /// Slow-consumer load: `changes` rapid `tel:` presence changes of random users.
    pub fn presence_storm(&mut self, changes: usize) {
        const ACT: &[&str] = &["away", "busy", "dnd", "", "lunch", "vacation"];
        let guids: Vec<String> = self
            .users
            .values()
            .filter(|u| u.pseudo.is_none())
            .map(|u| u.guid.clone())
            .collect();
        if guids.is_empty() {
            return;
        }
        for n in 0..changes {
            let g = &guids[self.rng.below(guids.len() as u64) as usize];
            let a = ACT[n % ACT.len()];
            self.set_presence(g, "tel:", a, "");
        }
    }

    /// Adds many users at once (population).
    pub fn add_users(&mut self, users: Vec<User>) {
        for u in users {
            self.upsert_user(u);
        }
    }

    /// Deletes a user; replications get ReplicateDel.
    pub fn delete_user(&mut self, guid: &str) -> bool {
        let Some(u) = self.users.remove(guid) else {
            return false;
        };
        self.by_h323.remove(&u.h323.to_lowercase());
        if !u.e164.is_empty() {
            self.by_e164.remove(&u.e164);
        }
        self.usn += 1;
        self.tombstones
            .push((self.usn, guid.to_string(), u.pseudo_type().to_string()));
        self.presence.remove(guid);
        self.pbx_calls.remove(guid);
        self.lic_cache.clear();
        self.replicate_delete(&u);
        // Watchers of a deleted object see their monitor go down.
        self.notify_user(guid);
        true
    }

    /// Changes what the App object may see of a user (item 12).
    pub fn set_visibility(&mut self, guid: &str, v: Visibility) -> bool {
        let Some(mut u) = self.users.get(guid).cloned() else {
            return false;
        };
        u.visibility = v;
        self.upsert_user(u);
        true
    }
}

/// `<mt>Result` skeleton with `api` and `src` copied from the request (src discipline, item 6).
pub(crate) fn result_of(msg: &Value) -> Value {
    let mut r = json!({"mt": format!("{}Result", msg["mt"].as_str().unwrap_or(""))});
    if let Some(a) = msg.get("api") {
        r["api"] = a.clone();
    }
    if let Some(s) = msg.get("src") {
        r["src"] = s.clone();
    }
    r
}
