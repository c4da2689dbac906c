//! myApps user sessions (items 17-19), sans-IO: a test acts as a user's app (user app, admin
//! app, or the hidden `microsoft365-api` app) connecting to the service. The PBX brokers the
//! login (AppGetLoginResult-equivalent AppLogin signed with the App object's password); the
//! session then drives `Search` relays and the `Config` API and checks the service's answers.

use crate::digest::{encrypt, session_key};
use crate::login::{AppObject, UserLogin, user_login};
use crate::pbx::Pbx;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What a user session needs to log in.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// PBX system name.
    pub domain: String,
    /// PBX the user logs in at (`info.pbx`).
    pub pbx: String,
    /// App object granting access (name → `pbxObj`, password → digest).
    pub obj: AppObject,
    /// HTML name of the app (`app`).
    pub app: String,
    /// User h323.
    pub sip: String,
    /// User GUID.
    pub guid: String,
    /// User display name.
    pub dn: String,
    /// User Long Name.
    pub cn: String,
    /// `info.unlicensed`.
    pub unlicensed: bool,
    /// `info.testmode`.
    pub testmode: bool,
    /// `info.groups`.
    pub groups: Vec<String>,
    /// `info.apps`.
    pub apps: Vec<String>,
    /// `api` field put on relayed Search messages (the hidden app ↔ service wire format is the
    /// connector's own; default `com.innovaphone.search`).
    pub search_api: String,
}

/// Progress of one relayed search.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchTrack {
    /// SearchInfo messages received.
    pub infos: Vec<Value>,
    /// A SearchResult arrived.
    pub done: bool,
}

/// Session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// Waiting for AppChallengeResult.
    AwaitChallenge,
    /// Waiting for AppLoginResult.
    AwaitLoginResult,
    /// Logged in.
    LoggedIn,
    /// Login refused.
    Refused,
}

/// A myApps user session towards the service.
#[derive(Debug, Serialize)]
pub struct UserSession {
    /// Login state.
    pub state: SessionState,
    #[serde(skip)]
    cfg: SessionConfig,
    challenge: Option<String>,
    /// Every frame received from the service.
    pub received: Vec<Value>,
    /// Protocol violations by the service.
    pub violations: Vec<String>,
    /// Searches by src.
    pub searches: BTreeMap<String, SearchTrack>,
    /// Password items from GetConfigItemsResult.
    pub password_items: Vec<String>,
    /// Last ReadConfigResult / ConfigUpdate items.
    pub config: Map<String, Value>,
    /// ConfigUpdate messages received.
    pub config_updates: Vec<Value>,
    seed_counter: u64,
}

const PHONE_FIELDS: &[&str] = &[
    "telephonenumber",
    "mobile",
    "homephone",
    "extension",
    "facsimiletelephonenumber",
    "sip",
    "email",
];

impl UserSession {
    /// A session; call [`UserSession::start`] once the socket is open.
    pub fn new(cfg: SessionConfig) -> Self {
        Self {
            state: SessionState::AwaitChallenge,
            cfg,
            challenge: None,
            received: vec![],
            violations: vec![],
            searches: BTreeMap::new(),
            password_items: vec![],
            config: Map::new(),
            config_updates: vec![],
            seed_counter: 0,
        }
    }

    /// First frame: `AppChallenge`.
    pub fn start(&mut self) -> Vec<String> {
        vec![json!({"mt":"AppChallenge"}).to_string()]
    }

    /// Session key (after the challenge arrived), computed with the App object's password.
    pub fn session_key(&self) -> Option<String> {
        self.challenge
            .as_ref()
            .map(|c| session_key(c, &self.cfg.obj.password))
    }

    /// A frame from the service; returns frames to send.
    pub fn on_frame(&mut self, text: &str) -> Vec<String> {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return vec![];
        };
        self.received.push(msg.clone());
        let mt = msg["mt"].as_str().unwrap_or("");
        match (self.state, mt) {
            (SessionState::AwaitChallenge, "AppChallengeResult") => {
                let ch = msg["challenge"].as_str().unwrap_or("").to_string();
                let c = &self.cfg;
                let l = user_login(
                    &UserLogin {
                        domain: &c.domain,
                        pbx: &c.pbx,
                        obj: &c.obj,
                        app: &c.app,
                        sip: &c.sip,
                        guid: &c.guid,
                        dn: &c.dn,
                        cn: &c.cn,
                        unlicensed: c.unlicensed,
                        testmode: c.testmode,
                        groups: c.groups.clone(),
                        apps: c.apps.clone(),
                    },
                    &ch,
                );
                self.challenge = Some(ch);
                self.state = SessionState::AwaitLoginResult;
                vec![l.text]
            }
            (SessionState::AwaitLoginResult, "AppLoginResult") => {
                self.state = if msg["ok"] == json!(true) {
                    SessionState::LoggedIn
                } else {
                    SessionState::Refused
                };
                vec![]
            }
            (SessionState::LoggedIn, _) => {
                self.on_logged_in(mt, &msg);
                vec![]
            }
            _ => vec![],
        }
    }

    fn on_logged_in(&mut self, mt: &str, msg: &Value) {
        let src = msg["src"].as_str().unwrap_or("").to_string();
        match mt {
            "SearchInfo" => {
                let Some(t) = self.searches.get_mut(&src) else {
                    self.violations
                        .push(format!("SearchInfo with unknown src {src:?}"));
                    return;
                };
                if t.done {
                    self.violations
                        .push(format!("SearchInfo after SearchResult (src {src:?})"));
                }
                for f in PHONE_FIELDS {
                    let v = &msg["contact"][*f];
                    let ok =
                        v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                    if !ok {
                        self.violations
                            .push(format!("SearchInfo contact.{f} is not a string array"));
                    }
                }
                t.infos.push(msg.clone());
            }
            "SearchResult" => match self.searches.get_mut(&src) {
                Some(t) if !t.done => t.done = true,
                Some(_) => self
                    .violations
                    .push(format!("second SearchResult (src {src:?})")),
                None => self
                    .violations
                    .push(format!("SearchResult with unknown src {src:?}")),
            },
            "GetConfigItemsResult" => {
                if let Some(items) = msg["ConfigItems"].as_array() {
                    self.password_items = items
                        .iter()
                        .filter(|i| i["password"] == json!(true))
                        .filter_map(|i| i["name"].as_str().map(String::from))
                        .collect();
                }
            }
            "ReadConfigResult" | "ConfigUpdate" => {
                if let Some(items) = msg["ConfigItems"].as_object() {
                    for p in &self.password_items {
                        if items.get(p).is_some_and(|v| !v.is_null() && v != "") {
                            self.violations
                                .push(format!("{mt} returned password item {p:?}"));
                        }
                    }
                    for (k, v) in items {
                        self.config.insert(k.clone(), v.clone());
                    }
                }
                if mt == "ConfigUpdate" {
                    self.config_updates.push(msg.clone());
                }
            }
            _ => {}
        }
    }

    /// Relays a `Search` from a consumer (e.g. the Phone App) to the service.
    pub fn search(&mut self, src: &str, search: &str, kind: Option<&str>) -> String {
        self.searches.insert(src.into(), SearchTrack::default());
        let mut m = json!({"api": self.cfg.search_api, "mt":"Search","src":src,"search":search});
        if let Some(k) = kind {
            m["type"] = json!(k);
        }
        m.to_string()
    }

    /// `GetConfigItems`.
    pub fn get_config_items(&self, src: &str) -> String {
        json!({"api":"Config","mt":"GetConfigItems","src":src}).to_string()
    }

    /// `ReadConfig`.
    pub fn read_config(&self, src: &str) -> String {
        json!({"api":"Config","mt":"ReadConfig","src":src}).to_string()
    }

    /// `WriteConfig` with plain items and password items encrypted with the session key:
    /// `{"value": encrypt(seed, plaintext), "key": seed}` (spec §9.2).
    pub fn write_config(
        &mut self,
        src: &str,
        items: &Map<String, Value>,
        passwords: &[(&str, &str)],
    ) -> String {
        let key = self.session_key().unwrap_or_default();
        let mut all = items.clone();
        for (name, plain) in passwords {
            self.seed_counter += 1;
            let seed = format!("{:08x}", self.seed_counter.wrapping_mul(2_654_435_761));
            all.insert(
                (*name).into(),
                json!({"value": encrypt(&seed, &key, plain), "key": seed}),
            );
        }
        json!({"api":"Config","mt":"WriteConfig","src":src,"ConfigItems":all}).to_string()
    }
}

/// Which of the connector's apps a user opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppKind {
    /// The user app (HTML name = last segment of the main App URL).
    User,
    /// The admin app (`<html>admin`).
    Admin,
    /// The hidden API app behind the `microsoft365-api` object (`<html>api`).
    Api,
}

impl Pbx {
    /// Prepares a myApps login of user `guid` into one of the connector's apps, as the PBX
    /// would broker it: `pbxObj` = granting App object (the node's App object; for the API app
    /// an object named `microsoft365-api` with the same password), `unlicensed` from the
    /// licence state (head match on `App(<html name>)`), `testmode` from the switch.
    pub fn user_session(&mut self, guid: &str, kind: AppKind) -> Option<SessionConfig> {
        let u = self.users.get(guid)?.clone();
        let ni = self
            .nodes
            .iter()
            .position(|n| n.cfg.name == u.loc)
            .unwrap_or(0);
        let main = self.nodes.get(ni)?.cfg.app.clone();
        let base = main.app_name().to_string();
        let (app, obj) = match kind {
            AppKind::User => (base.clone(), main.clone()),
            AppKind::Admin => (format!("{base}admin"), main.clone()),
            AppKind::Api => {
                let mut o = main.clone();
                o.sip = "microsoft365-api".into();
                o.dn = "microsoft365-api".into();
                let trimmed = o.url.trim_end_matches('/').to_string();
                o.url = format!("{trimmed}api");
                (format!("{base}api"), o)
            }
        };
        let licensed = self.is_licensed(guid, &format!("App({base})"));
        Some(SessionConfig {
            domain: self.domain.clone(),
            pbx: u.loc.clone(),
            obj,
            app,
            sip: u.h323.clone(),
            guid: u.guid.clone(),
            dn: u.dn.clone(),
            cn: u.cn.clone(),
            unlicensed: !licensed,
            testmode: self.switches.testmode,
            groups: u
                .grps
                .iter()
                .filter_map(|g| g["name"].as_str().map(String::from))
                .collect(),
            apps: u.apps.clone(),
            search_api: "com.innovaphone.search".into(),
        })
    }
}
