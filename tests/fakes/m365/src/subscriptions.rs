//! Change-notification subscriptions: create with the real validation handshake, resource and
//! expiry rules, the one-presence-subscription-per-(user, app) 409, PATCH/DELETE/GET/list,
//! reauthorize, expiry and lifecycle events (items 18-21, 25-28).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{iso_offset, iso_z, parse_iso};
use crate::core::{
    Caller, Fake, GResult, GraphErr, OutboundResult, Purpose, Reply, gerr, ok_json, value_list,
};
use crate::crypto::{cert_public_key, encrypt_content};
use crate::delivery::QueuedItem;
use crate::http::{Request, Response, pct_decode, pct_encode};
use crate::odata::{Expr, Lit, parse_filter};

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SubKind {
    /// Presence of these user ids.
    Presence(Vec<String>),
    /// A mailbox's events.
    Events(String),
    /// A mailbox's contacts.
    Contacts(String),
    /// All users.
    Users,
}

/// A subscription.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// Resource as sent.
    pub resource: String,
    /// changeType as sent.
    pub change_type: String,
    /// notificationUrl.
    pub notification_url: String,
    /// lifecycleNotificationUrl.
    pub lifecycle_notification_url: Option<String>,
    /// Expiry (ms).
    pub expiration_ms: i64,
    /// clientState.
    pub client_state: Option<String>,
    /// Rich notifications.
    pub include_resource_data: bool,
    /// encryptionCertificateId.
    pub encryption_certificate_id: Option<String>,
    /// Certificate DER.
    #[serde(skip)]
    pub encryption_certificate: Option<Vec<u8>>,
    /// latestSupportedTlsVersion.
    pub latest_supported_tls_version: String,
    /// Creating app.
    pub application_id: String,
    /// Creator (user or service principal).
    pub creator_id: String,
    /// Delegated user, if any.
    pub user_id: Option<String>,
    /// notificationUrlAppId.
    pub notification_url_app_id: Option<String>,
    /// Parsed resource.
    pub kind: SubKind,
    /// Delivery paused after reauthorizationRequired until PATCH/reauthorize.
    pub paused: bool,
    /// reauthorizationRequired already sent for the current expiry.
    pub reauth_sent: bool,
    /// Last PATCH (ms).
    pub last_patch_ms: Option<i64>,
    /// Last reauthorize (ms).
    pub last_reauthorize_ms: Option<i64>,
    /// Oddities flagged for tests (e.g. PATCH and reauthorize within 10 minutes).
    pub flags: Vec<String>,
    /// Silent outage for this subscription only.
    pub outage: bool,
    /// Expiry of the access token the subscription is bound to (set on create, PATCH and
    /// reauthorize); once it passes, delivery pauses (graph.md 3.4).
    pub token_exp_ms: i64,
    #[serde(skip)]
    held: Vec<QueuedItem>,
}

struct PendingCreate {
    sub: Subscription,
    outstanding: HashSet<u64>,
    token: String,
    error: Option<GraphErr>,
    req: Request,
    /// A PATCH that changed notificationUrl (the new URL is validated first).
    is_patch: bool,
}

/// Subscription state.
#[derive(Default)]
pub struct SubState {
    pub(crate) subs: BTreeMap<String, Subscription>,
    pending: HashMap<u64, PendingCreate>,
    by_outbound: HashMap<u64, u64>,
    presence_watch: HashMap<String, BTreeSet<String>>,
}

impl SubState {
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.subs.values().map(|s| s.expiration_ms).min()
    }
    fn index(&mut self, s: &Subscription) {
        if let SubKind::Presence(ids) = &s.kind {
            for id in ids {
                self.presence_watch
                    .entry(id.clone())
                    .or_default()
                    .insert(s.id.clone());
            }
        }
    }
    fn unindex(&mut self, s: &Subscription) {
        if let SubKind::Presence(ids) = &s.kind {
            for id in ids {
                if let Some(set) = self.presence_watch.get_mut(id) {
                    set.remove(&s.id);
                }
            }
        }
    }
}

const PRESENCE_CONFLICT: &str = "Operation: Create; Exception: [Status Code: Conflict; Reason: A subscripton already exists. It must be deleted before a another can be made.]";
const PRESENCE_FORBIDDEN: &str = "Operation: Create; Exception: [Status Code: Forbidden; Reason: The request is not authorized for this user or application.]";

/// Parse a presence subscription resource (graph.md 4.4, item 19).
pub fn parse_resource(resource: &str, max_ids: usize) -> Result<SubKind, GraphErr> {
    let r = resource.trim().trim_start_matches('/');
    let lower = r.to_lowercase();
    if let Some(q) = lower.strip_prefix("communications/presences?") {
        let orig_q = &r[r.len() - q.len()..];
        let f = orig_q
            .strip_prefix("$filter=")
            .ok_or_else(|| gerr(400, "BadRequest", "Invalid filter clause"))?;
        let f = pct_decode(f, false);
        let e = parse_filter(&f).map_err(|_| gerr(400, "BadRequest", "Invalid filter clause"))?;
        let lits = match e {
            Expr::In(p, l) if p.eq_ignore_ascii_case("id") => l,
            Expr::Cmp(p, op, l) if p.eq_ignore_ascii_case("id") && op == "eq" => vec![l],
            _ => return Err(gerr(400, "BadRequest", "Invalid filter clause")),
        };
        let mut ids: Vec<String> = vec![];
        for l in lits {
            match l {
                Lit::Str(s) => {
                    let s = s.to_lowercase();
                    if !ids.contains(&s) {
                        ids.push(s)
                    }
                }
                // GUIDs must be single-quoted.
                Lit::Bare(_) => return Err(gerr(400, "BadRequest", "Invalid filter clause")),
            }
        }
        if ids.len() > max_ids {
            return Err(gerr(
                400,
                "BadRequest",
                &format!(
                    "The number of presence ids ({}) exceeds the maximum of {max_ids}.",
                    ids.len()
                ),
            ));
        }
        return Ok(SubKind::Presence(ids));
    }
    let segs: Vec<&str> = r.split('/').collect();
    match segs.as_slice() {
        [c, p, id]
            if c.eq_ignore_ascii_case("communications") && p.eq_ignore_ascii_case("presences") =>
        {
            Ok(SubKind::Presence(vec![id.to_lowercase()]))
        }
        [u, id, e] if u.eq_ignore_ascii_case("users") && e.eq_ignore_ascii_case("events") => {
            Ok(SubKind::Events(id.to_string()))
        }
        [u, id, e] if u.eq_ignore_ascii_case("users") && e.eq_ignore_ascii_case("contacts") => {
            Ok(SubKind::Contacts(id.to_string()))
        }
        [m, e] if m.eq_ignore_ascii_case("me") && e.eq_ignore_ascii_case("events") => {
            Ok(SubKind::Events("me".into()))
        }
        [u] if u.eq_ignore_ascii_case("users") => Ok(SubKind::Users),
        _ => Err(gerr(
            400,
            "InvalidRequest",
            &format!("The resource '{resource}' is not supported by the fake."),
        )),
    }
}

fn is_loopback_http(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl Fake {
    /// 0 = not bound.
    fn bound_token_exp(&self, caller: &Caller) -> i64 {
        if self.cfg.bind_subscriptions_to_token {
            caller.token_exp_ms
        } else {
            0
        }
    }

    fn check_url(&self, url: &str, what: &str) -> Result<(), GraphErr> {
        if url.starts_with("https://") || (self.cfg.allow_http_loopback && is_loopback_http(url)) {
            Ok(())
        } else {
            Err(gerr(
                400,
                "ValidationError",
                &format!("The {what} must be HTTPS."),
            ))
        }
    }

    fn max_minutes(&self, kind: &SubKind, rich: bool) -> i64 {
        match kind {
            SubKind::Presence(_) => self.cfg.presence_sub_max_min,
            SubKind::Events(_) | SubKind::Contacts(_) => {
                if rich {
                    self.cfg.event_sub_rich_max_min
                } else {
                    self.cfg.event_sub_max_min
                }
            }
            SubKind::Users => self.cfg.user_sub_max_min,
        }
    }

    fn expiry(&self, v: &Value, kind: &SubKind, rich: bool) -> Result<i64, GraphErr> {
        let now = self.now();
        let exp = v.as_str().and_then(parse_iso).ok_or_else(|| {
            gerr(
                400,
                "BadRequest",
                "expirationDateTime is required and must be an ISO-8601 date-time.",
            )
        })?;
        let max = self.max_minutes(kind, rich);
        if exp > now + max * 60_000 {
            return Err(gerr(
                400,
                "ExtensionError",
                &format!("Subscription expiration can only be {max} minutes in the future."),
            ));
        }
        // Anything under the minimum is silently raised to it.
        Ok(exp.max(now + self.cfg.sub_min_min * 60_000))
    }

    /// JSON of a subscription as Graph returns it.
    pub fn subscription_json(&self, s: &Subscription) -> Value {
        json!({"@odata.context": format!("{}/v1.0/$metadata#subscriptions/$entity", self.graph_base()),
               "id": s.id, "resource": s.resource, "applicationId": s.application_id, "changeType": s.change_type,
               "clientState": s.client_state, "notificationUrl": s.notification_url, "notificationQueryOptions": null,
               "lifecycleNotificationUrl": s.lifecycle_notification_url, "expirationDateTime": iso_z(s.expiration_ms),
               "creatorId": s.creator_id, "includeResourceData": s.include_resource_data,
               "latestSupportedTlsVersion": s.latest_supported_tls_version, "encryptionCertificate": null,
               "encryptionCertificateId": s.encryption_certificate_id, "notificationUrlAppId": s.notification_url_app_id,
               "notificationContentType": "application/json"})
    }

    /// All live subscriptions (read-back).
    pub fn subscriptions(&self) -> Vec<&Subscription> {
        self.subs.subs.values().collect()
    }

    fn kind_permission(&self, kind: &SubKind, caller: &Caller) -> Result<(), GraphErr> {
        match kind {
            SubKind::Presence(_) => {
                if !self.cfg.cloud.presence_subscriptions() {
                    return Err(gerr(
                        400,
                        "ExtensionError",
                        "Presence subscriptions are not supported in this national cloud.",
                    ));
                }
                // Delegated only (graph.md 4.4).
                if caller.is_app_only()
                    || !caller.has(&["Presence.Read.All", "Presence.ReadWrite.All"], &[])
                {
                    return Err(gerr(403, "ExtensionError", PRESENCE_FORBIDDEN));
                }
                Ok(())
            }
            SubKind::Events(u) | SubKind::Contacts(u) => {
                let (d, a) = if matches!(kind, SubKind::Events(_)) {
                    (
                        ["Calendars.Read", "Calendars.ReadWrite"],
                        ["Calendars.Read", "Calendars.ReadWrite"],
                    )
                } else {
                    (
                        ["Contacts.Read", "Contacts.ReadWrite"],
                        ["Contacts.Read", "Contacts.ReadWrite"],
                    )
                };
                if !caller.has(&d, &a) {
                    return Err(gerr(403, "ExtensionError", PRESENCE_FORBIDDEN));
                }
                if !caller.is_app_only() {
                    let own = u == "me"
                        || self
                            .users
                            .find(u)
                            .is_some_and(|e| Some(e.user.id.as_str()) == caller.user_id.as_deref());
                    if !own {
                        return Err(gerr(403, "ExtensionError", PRESENCE_FORBIDDEN));
                    }
                }
                Ok(())
            }
            SubKind::Users => {
                if caller.has(
                    &["User.Read.All", "Directory.Read.All"],
                    &["User.Read.All", "Directory.Read.All"],
                ) {
                    Ok(())
                } else {
                    Err(gerr(403, "ExtensionError", PRESENCE_FORBIDDEN))
                }
            }
        }
    }

    pub(crate) fn create_subscription(&mut self, req: &Request, caller: &Caller) -> GResult {
        let b = req
            .json_body()
            .ok_or_else(|| gerr(400, "BadRequest", "Empty Payload. JSON content expected."))?;
        let s = |k: &str| b[k].as_str().map(str::to_string);
        let change_type =
            s("changeType").ok_or_else(|| gerr(400, "BadRequest", "changeType is required."))?;
        let url = s("notificationUrl")
            .ok_or_else(|| gerr(400, "BadRequest", "notificationUrl is required."))?;
        let resource =
            s("resource").ok_or_else(|| gerr(400, "BadRequest", "resource is required."))?;
        if resource.starts_with("http") {
            return Err(gerr(
                400,
                "InvalidRequest",
                "The resource must be relative to the version root.",
            ));
        }
        let client_state = s("clientState");
        if client_state
            .as_ref()
            .is_some_and(|c| c.chars().count() > 128)
        {
            return Err(gerr(
                400,
                "BadRequest",
                "clientState must be at most 128 characters.",
            ));
        }
        self.check_url(&url, "notificationUrl")?;
        let lifecycle = s("lifecycleNotificationUrl");
        if let Some(l) = &lifecycle {
            self.check_url(l, "lifecycleNotificationUrl")?;
        }
        let mut kind = parse_resource(&resource, self.cfg.presence_max_ids)?;
        let types: Vec<&str> = change_type.split(',').map(str::trim).collect();
        let allowed: &[&str] = match kind {
            SubKind::Presence(_) => &["updated"],
            SubKind::Users => &["updated", "deleted"],
            _ => &["created", "updated", "deleted"],
        };
        if types.iter().any(|t| !allowed.contains(t)) {
            return Err(gerr(
                400,
                "BadRequest",
                &format!(
                    "changeType '{change_type}' is not supported for this resource; allowed: {}.",
                    allowed.join(",")
                ),
            ));
        }
        self.kind_permission(&kind, caller)?;
        // Resolve mailbox owners to object ids.
        if let SubKind::Events(u) | SubKind::Contacts(u) = &mut kind {
            let id = if u == "me" {
                caller.user_id.clone().unwrap_or_default()
            } else {
                self.resolve_user(u)?
            };
            *u = id;
        }
        let rich = b["includeResourceData"].as_bool().unwrap_or(false);
        let (cert, cert_id) = (s("encryptionCertificate"), s("encryptionCertificateId"));
        let cert_der = if rich {
            let (Some(c), Some(_)) = (&cert, &cert_id) else {
                return Err(gerr(
                    400,
                    "BadRequest",
                    "encryptionCertificate and encryptionCertificateId are required when includeResourceData is true.",
                ));
            };
            let der = STANDARD.decode(c.trim()).map_err(|_| {
                gerr(
                    400,
                    "BadRequest",
                    "encryptionCertificate is not valid base64.",
                )
            })?;
            cert_public_key(&der).map_err(|m| gerr(400, "BadRequest", &m))?;
            Some(der)
        } else {
            None
        };
        if cert_id.as_ref().is_some_and(|c| c.chars().count() > 128) {
            return Err(gerr(
                400,
                "BadRequest",
                "encryptionCertificateId must be at most 128 characters.",
            ));
        }
        let expiration = self.expiry(&b["expirationDateTime"], &kind, rich)?;
        // Conflicts.
        if let SubKind::Presence(_) = kind
            && self
                .subs
                .subs
                .values()
                .chain(self.subs.pending.values().map(|p| &p.sub))
                .any(|x| {
                    matches!(x.kind, SubKind::Presence(_))
                        && x.application_id == caller.app_id
                        && x.user_id == caller.user_id
                })
        {
            return Err(gerr(409, "ExtensionError", PRESENCE_CONFLICT));
        }
        if let Some(dup) = self.subs.subs.values().find(|x| {
            x.application_id == caller.app_id
                && x.resource
                    .trim_start_matches('/')
                    .eq_ignore_ascii_case(resource.trim_start_matches('/'))
                && x.change_type == change_type
                && x.notification_url == url
        }) {
            return Err(gerr(
                409,
                "Conflict",
                &format!(
                    "Subscription Id {} already exists for the requested combination",
                    dup.id
                ),
            ));
        }
        if let SubKind::Events(u) = &kind {
            let n = self
                .subs
                .subs
                .values()
                .filter(|x| x.kind == SubKind::Events(u.clone()))
                .count();
            if n >= self.cfg.event_subs_per_mailbox {
                return Err(gerr(
                    403,
                    "ExtensionError",
                    &format!(
                        "The maximum number of subscriptions ({}) for this mailbox has been reached.",
                        self.cfg.event_subs_per_mailbox
                    ),
                ));
            }
        }
        let id = self.new_guid();
        let sub = Subscription {
            id,
            resource,
            change_type,
            notification_url: url.clone(),
            lifecycle_notification_url: lifecycle.clone(),
            expiration_ms: expiration,
            client_state,
            include_resource_data: rich,
            encryption_certificate_id: cert_id,
            encryption_certificate: cert_der,
            latest_supported_tls_version: s("latestSupportedTlsVersion")
                .unwrap_or_else(|| "v1_2".into()),
            application_id: caller.app_id.clone(),
            creator_id: caller
                .user_id
                .clone()
                .unwrap_or_else(|| format!("sp-{}", caller.app_id)),
            user_id: caller.user_id.clone(),
            notification_url_app_id: s("notificationUrlAppId"),
            kind,
            paused: false,
            reauth_sent: false,
            last_patch_ms: None,
            last_reauthorize_ms: None,
            flags: vec![],
            outage: false,
            token_exp_ms: self.bound_token_exp(caller),
            held: vec![],
        };
        // The handshake: POST {url}?validationToken=... to both URLs (twice if identical).
        let urls: Vec<String> = std::iter::once(url).chain(lifecycle).collect();
        Ok(Reply::Pending(self.start_handshake(sub, urls, req, false)))
    }

    fn start_handshake(
        &mut self,
        sub: Subscription,
        urls: Vec<String>,
        req: &Request,
        is_patch: bool,
    ) -> u64 {
        let token = format!(
            "Validation: Testing client application reachability for subscription Request-Id: {}",
            self.new_guid()
        );
        let ticket = self.next_id();
        let mut outstanding = HashSet::new();
        for u in urls {
            let sep = if u.contains('?') { '&' } else { '?' };
            let full = format!("{u}{sep}validationToken={}", pct_encode(&token));
            let oid = self.emit(
                Purpose::Validation,
                full,
                vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                vec![],
                self.cfg.validation_timeout_ms,
            );
            self.subs.by_outbound.insert(oid, ticket);
            outstanding.insert(oid);
        }
        let req_copy = Request {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            body: vec![],
        };
        self.subs.pending.insert(
            ticket,
            PendingCreate {
                sub,
                outstanding,
                token,
                error: None,
                req: req_copy,
                is_patch,
            },
        );
        ticket
    }

    /// Store a PATCHed subscription, releasing what was held while paused.
    fn apply_patch(&mut self, mut s: Subscription) -> Option<Value> {
        let cur = self.subs.subs.remove(&s.id)?;
        self.subs.unindex(&cur);
        s.held = cur.held;
        let held = self.resume(&mut s);
        let body = self.subscription_json(&s);
        self.subs.index(&s);
        self.subs.subs.insert(s.id.clone(), s);
        for q in held {
            self.enqueue(q);
        }
        Some(body)
    }

    pub(crate) fn validation_result(&mut self, oid: u64, res: OutboundResult) {
        let Some(ticket) = self.subs.by_outbound.remove(&oid) else {
            return;
        };
        let timeout = self.cfg.validation_timeout_ms;
        let Some(p) = self.subs.pending.get_mut(&ticket) else {
            return;
        };
        p.outstanding.remove(&oid);
        let err = match res {
            OutboundResult::Timeout => Some(gerr(
                400,
                "InvalidRequest",
                "Subscription validation request timed out.",
            )),
            OutboundResult::Status { elapsed_ms, .. } if elapsed_ms > timeout => Some(gerr(
                400,
                "InvalidRequest",
                "Subscription validation request timed out.",
            )),
            OutboundResult::Failed { tls: true, .. } => Some(gerr(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Could not establish trust relationship for the SSL/TLS secure channel.",
            )),
            OutboundResult::Failed { tls: false, .. } => Some(gerr(
                400,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            )),
            OutboundResult::Status { status, .. } if status != 200 => Some(gerr(
                400,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            )),
            OutboundResult::Status {
                content_type, body, ..
            } => {
                let text_plain = content_type
                    .as_deref()
                    .is_some_and(|c| c.to_ascii_lowercase().starts_with("text/plain"));
                if !text_plain || body != p.token.as_bytes() {
                    Some(gerr(
                        400,
                        "ValidationError",
                        "Subscription validation request failed. Response must exactly match validationToken query parameter.",
                    ))
                } else {
                    None
                }
            }
        };
        if p.error.is_none() {
            p.error = err;
        }
        if !p.outstanding.is_empty() {
            return;
        }
        let p = self.subs.pending.remove(&ticket).expect("pending");
        // Any other outstanding validations of this ticket are moot.
        let resp = match p.error {
            Some(e) => self.graph_error_response(&p.req, e),
            None if p.is_patch => match self.apply_patch(p.sub) {
                Some(body) => {
                    let r = Response::json(200, &body);
                    self.decorate(&p.req, r)
                }
                None => self.graph_error_response(
                    &p.req,
                    gerr(404, "ResourceNotFound", "The object was not found."),
                ),
            },
            None => {
                let body = self.subscription_json(&p.sub);
                self.subs.index(&p.sub);
                self.subs.subs.insert(p.sub.id.clone(), p.sub);
                let r = Response::json(201, &body);
                self.decorate(&p.req, r)
            }
        };
        self.completed.push((ticket, resp));
    }

    fn visible_sub(&self, id: &str, caller: &Caller) -> Result<&Subscription, GraphErr> {
        self.subs
            .subs
            .get(id)
            .filter(|s| {
                s.application_id == caller.app_id
                    && (caller.is_app_only() || s.user_id == caller.user_id)
            })
            .ok_or_else(|| {
                gerr(
                    404,
                    "ResourceNotFound",
                    &format!("The object was not found. Subscription '{id}'."),
                )
            })
    }

    pub(crate) fn list_subscriptions(&mut self, caller: &Caller) -> GResult {
        if self.cfg.throttle_subscription_list {
            let mut e = gerr(
                429,
                "TooManyRequests",
                "Too many requests from Identifier:West Europe under category:throttle.aad.ags.subscriptionservice.dc.list. Please try again later.",
            );
            e.headers.push(("Retry-After".into(), "5".into()));
            return Err(e);
        }
        let items: Vec<Value> = self
            .subs
            .subs
            .values()
            .filter(|s| {
                s.application_id == caller.app_id
                    && (caller.is_app_only() || s.user_id == caller.user_id)
            })
            .map(|s| self.subscription_json(s))
            .collect();
        let mut v = value_list(items);
        v["@odata.context"] = json!(format!(
            "{}/v1.0/$metadata#subscriptions",
            self.graph_base()
        ));
        ok_json(v)
    }

    pub(crate) fn get_subscription(&mut self, id: &str, caller: &Caller) -> GResult {
        let s = self.visible_sub(id, caller)?;
        ok_json(self.subscription_json(s))
    }

    pub(crate) fn patch_subscription(
        &mut self,
        id: &str,
        req: &Request,
        caller: &Caller,
    ) -> GResult {
        let sub = self.visible_sub(id, caller)?.clone();
        let b = req.json_body().unwrap_or(json!({}));
        if b.get("lifecycleNotificationUrl").is_some() {
            return Err(gerr(
                400,
                "BadRequest",
                "lifecycleNotificationUrl cannot be added or changed by PATCH.",
            ));
        }
        let mut s = sub;
        if !b["expirationDateTime"].is_null() {
            let cert = b["encryptionCertificate"].is_string() || s.include_resource_data;
            s.expiration_ms = self.expiry(
                &b["expirationDateTime"],
                &s.kind,
                cert && s.include_resource_data,
            )?;
        }
        let mut new_url = None;
        if let Some(u) = b["notificationUrl"].as_str() {
            self.check_url(u, "notificationUrl")?;
            if u != s.notification_url {
                new_url = Some(u.to_string());
            }
            s.notification_url = u.to_string();
        }
        if let Some(c) = b["encryptionCertificate"].as_str() {
            let der = STANDARD.decode(c.trim()).map_err(|_| {
                gerr(
                    400,
                    "BadRequest",
                    "encryptionCertificate is not valid base64.",
                )
            })?;
            cert_public_key(&der).map_err(|m| gerr(400, "BadRequest", &m))?;
            s.encryption_certificate = Some(der);
        }
        if let Some(c) = b["encryptionCertificateId"].as_str() {
            s.encryption_certificate_id = Some(c.to_string());
        }
        let now = self.now();
        if s.last_reauthorize_ms.is_some_and(|t| now - t < 600_000) {
            s.flags.push(format!(
                "PATCH within 10 minutes of reauthorize at {}",
                iso_z(now)
            ));
        }
        s.last_patch_ms = Some(now);
        s.reauth_sent = false;
        s.token_exp_ms = self.bound_token_exp(caller);
        // A new notificationUrl is validated like on creation before the PATCH takes effect.
        if let Some(u) = new_url {
            return Ok(Reply::Pending(self.start_handshake(s, vec![u], req, true)));
        }
        let body = self
            .apply_patch(s)
            .ok_or_else(|| gerr(404, "ResourceNotFound", "The object was not found."))?;
        ok_json(body)
    }

    fn resume(&self, s: &mut Subscription) -> Vec<QueuedItem> {
        s.paused = false;
        let now = self.now();
        std::mem::take(&mut s.held)
            .into_iter()
            .map(|mut q| {
                q.due = q.due.max(now);
                q
            })
            .collect()
    }

    pub(crate) fn reauthorize_subscription(&mut self, id: &str, caller: &Caller) -> GResult {
        let mut s = self.visible_sub(id, caller)?.clone();
        let now = self.now();
        if s.last_patch_ms.is_some_and(|t| now - t < 600_000) {
            s.flags.push(format!(
                "reauthorize within 10 minutes of PATCH at {}",
                iso_z(now)
            ));
        }
        s.last_reauthorize_ms = Some(now);
        s.reauth_sent = false;
        s.token_exp_ms = self.bound_token_exp(caller);
        let held = self.resume(&mut s);
        self.subs.subs.insert(s.id.clone(), s);
        for q in held {
            self.enqueue(q);
        }
        Ok(Reply::Resp(Response::empty(204)))
    }

    pub(crate) fn delete_subscription(&mut self, id: &str, caller: &Caller) -> GResult {
        self.visible_sub(id, caller)?;
        self.remove_sub(id);
        Ok(Reply::Resp(Response::empty(204)))
    }

    fn remove_sub(&mut self, id: &str) -> Option<Subscription> {
        let s = self.subs.subs.remove(id)?;
        self.subs.unindex(&s);
        self.delivery.drop_subscription(id);
        Some(s)
    }

    /// Put one subscription into (or out of) silent outage (item 28).
    pub fn set_subscription_outage(&mut self, id: &str, on: bool) -> bool {
        self.subs.subs.get_mut(id).map(|s| s.outage = on).is_some()
    }

    /// Emit a lifecycle event for a subscription now (`reauthorizationRequired`,
    /// `subscriptionRemoved` — which also deletes it — or `missed`).
    pub fn lifecycle_event(&mut self, id: &str, event: &str) -> bool {
        let Some(s) = self.subs.subs.get(id).cloned() else {
            return false;
        };
        self.send_lifecycle(&s, event);
        match event {
            "subscriptionRemoved" => {
                self.remove_sub(id);
            }
            "reauthorizationRequired" => {
                let pause = self.cfg.pause_on_reauthorization_required;
                if let Some(x) = self.subs.subs.get_mut(id) {
                    x.paused |= pause;
                    x.reauth_sent = true;
                }
            }
            _ => {}
        }
        true
    }

    fn send_lifecycle(&mut self, s: &Subscription, event: &str) {
        let Some(url) = s.lifecycle_notification_url.clone() else {
            return;
        };
        let item = json!({"subscriptionId": s.id, "subscriptionExpirationDateTime": iso_offset(s.expiration_ms),
                          "tenantId": self.tenant_id, "clientState": s.client_state, "lifecycleEvent": event});
        let now = self.now();
        self.enqueue(QueuedItem {
            url,
            item,
            rich: false,
            app_id: s.application_id.clone(),
            due: now,
            purpose: Purpose::Lifecycle,
        });
    }

    pub(crate) fn subscriptions_tick(&mut self) {
        let now = self.now();
        let lead = self.cfg.reauthorization_lead_ms;
        let expired: Vec<String> = self
            .subs
            .subs
            .values()
            .filter(|s| s.expiration_ms <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.remove_sub(&id);
        }
        let due: Vec<String> = self
            .subs
            .subs
            .values()
            .filter(|s| {
                s.lifecycle_notification_url.is_some()
                    && !s.reauth_sent
                    && (s.expiration_ms - now <= lead
                        || (s.token_exp_ms > 0 && s.token_exp_ms - now <= lead))
            })
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            self.lifecycle_event(&id, "reauthorizationRequired");
        }
        // The bound token expired: delivery pauses (not throttled); what is held for longer than
        // the retry horizon is lost.
        let horizon = self.cfg.retry_horizon_ms;
        for s in self.subs.subs.values_mut() {
            if s.token_exp_ms > 0 && s.token_exp_ms <= now {
                s.paused = true;
            }
            s.held.retain(|q| now - q.due <= horizon);
        }
    }

    /// Queue a change notification for every subscription `pred` selects.
    fn notify(
        &mut self,
        subs: Vec<String>,
        change: &str,
        resource: String,
        resource_data: Value,
        plaintext: Value,
    ) {
        let now = self.now();
        for sid in subs {
            let Some(s) = self.subs.subs.get(&sid).cloned() else {
                continue;
            };
            if self.cfg.notification_outage || s.outage {
                continue;
            }
            let jitter = if self.cfg.delivery_jitter_ms > 0 {
                rand::Rng::gen_range(&mut self.rng, 0..self.cfg.delivery_jitter_ms)
            } else {
                0
            };
            let mut item = json!({"subscriptionId": s.id, "subscriptionExpirationDateTime": iso_offset(s.expiration_ms),
                "clientState": s.client_state, "changeType": change, "resource": resource,
                "tenantId": self.tenant_id, "organizationId": self.tenant_id, "resourceData": resource_data});
            if s.include_resource_data
                && let Some(der) = &s.encryption_certificate
            {
                let pt = serde_json::to_vec(&plaintext).unwrap_or_default();
                if let Ok(enc) = encrypt_content(
                    der,
                    s.encryption_certificate_id.as_deref().unwrap_or(""),
                    &pt,
                    &mut self.rng,
                ) {
                    item["encryptedContent"] = enc;
                }
            }
            let q = QueuedItem {
                url: s.notification_url.clone(),
                item,
                rich: s.include_resource_data,
                app_id: s
                    .notification_url_app_id
                    .clone()
                    .unwrap_or(s.application_id.clone()),
                due: now + self.cfg.delivery_latency_ms + jitter,
                purpose: Purpose::Notification,
            };
            if s.paused || (s.token_exp_ms > 0 && s.token_exp_ms <= now) {
                if let Some(x) = self.subs.subs.get_mut(&sid) {
                    x.paused = true;
                    x.held.push(q);
                }
            } else {
                self.enqueue(q);
            }
        }
    }

    pub(crate) fn notify_presence(&mut self, uid: &str) {
        let subs: Vec<String> = self
            .subs
            .presence_watch
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if subs.is_empty() {
            return;
        }
        let mut pt = self.presence_json(uid, false);
        if let Some(o) = pt.as_object_mut() {
            o.remove("workLocation");
        }
        pt["@odata.type"] = json!("#microsoft.graph.presence");
        pt["@odata.id"] = json!(format!("users/{uid}/presence"));
        let rd = json!({"@odata.type": "#microsoft.graph.presence", "@odata.id": format!("users/{uid}/presence"), "id": uid});
        self.notify(
            subs,
            "updated",
            format!("communications/presences/{uid}"),
            rd,
            pt,
        );
    }

    pub(crate) fn notify_user(&mut self, uid: &str, change: &str) {
        let subs: Vec<String> = self
            .subs
            .subs
            .values()
            .filter(|s| {
                s.kind == SubKind::Users && s.change_type.split(',').any(|c| c.trim() == change)
            })
            .map(|s| s.id.clone())
            .collect();
        if subs.is_empty() {
            return;
        }
        let res = format!("Users/{uid}");
        let rd = json!({"@odata.type": "#Microsoft.Graph.User", "@odata.id": res, "id": uid, "organizationId": self.tenant_id});
        let full = self
            .user(uid)
            .map(|u| u.to_json(None))
            .unwrap_or(json!({ "id": uid }));
        self.notify(subs, change, res, rd, full);
    }

    pub(crate) fn notify_mailbox(
        &mut self,
        uid: &str,
        contacts: bool,
        item_id: &str,
        change: &str,
        full: Value,
    ) {
        let subs: Vec<String> = self
            .subs
            .subs
            .values()
            .filter(|s| {
                if contacts {
                    s.kind == SubKind::Contacts(uid.to_string())
                } else {
                    s.kind == SubKind::Events(uid.to_string())
                }
            })
            .filter(|s| s.change_type.split(',').any(|c| c.trim() == change))
            .map(|s| s.id.clone())
            .collect();
        let (seg, ty) = if contacts {
            ("Contacts", "#Microsoft.Graph.Contact")
        } else {
            ("Events", "#Microsoft.Graph.Event")
        };
        let res = format!("Users/{uid}/{seg}/{item_id}");
        let rd = json!({"@odata.type": ty, "@odata.id": res, "@odata.etag": "W/\"fake\"", "id": item_id});
        self.notify(subs, change, res, rd, full);
    }
}
