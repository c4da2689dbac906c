//! Faithful fake of Microsoft 365 for tests: the Entra ID v2.0 token endpoint and Microsoft Graph
//! v1.0 (users, presence, subscriptions and change notifications, calendar, contacts, `$batch`,
//! throttling, national clouds), built from `shared/spec/graph.md`.
//!
//! # Shape
//! The core ([`Fake`]) is sans-IO: state + an injected [`Clock`] + seeded randomness. Requests go
//! in through [`Fake::handle`]; side effects (validation handshakes, notification POSTs) come out
//! of [`Fake::take_effects`] as [`Outbound`] values, their results go back through
//! [`Fake::outbound_result`], and delayed answers (POST /subscriptions waits for its handshake)
//! come out of [`Fake::take_completed`]. [`Fake::tick`] advances time-driven state and
//! [`Fake::next_deadline`] tells a virtual-time host when to call it next. The core never reads
//! the wall clock, opens a socket or spawns a task.
//!
//! The [`server`] module (used by the `fake-m365` binary and by socket tests in-process) serves
//! the core over HTTPS (rustls + hyper 1) with a generated test CA, performs the outbound POSTs
//! with a real client, and serves the control API ([`Fake::control`]) on a second loopback port.
//!
//! # Starting it
//! In-process, sans-IO (unit tests, simulation):
//! ```no_run
//! use std::sync::Arc;
//! use fake_m365::{AppReg, Config, Fake, ManualClock, Request, UserSpec};
//! let clock = ManualClock::new(fake_m365::clock::TEST_EPOCH_MS);
//! let mut fake = Fake::new(Config::default(), Arc::new(clock.clone()));
//! fake.add_app(AppReg { client_id: "app".into(), public_client: true, ..Default::default() });
//! fake.add_user(UserSpec { display_name: "PBX Service".into(), password: Some("p&ss".into()), ..Default::default() });
//! fake.populate(10_000, 42);
//! let tok = fake.issue_token("app", Some("pbx.service@contoso.onmicrosoft.com"), &["Presence.Read.All"]);
//! let r = fake.handle(Request::new("GET", "/v1.0/users?$top=5").bearer(&tok)).unwrap_response();
//! assert_eq!(r.status, 403); // the token lacks User.Read.All
//! clock.advance(60_000);
//! for effect in fake.take_effects() { /* POST it, then fake.outbound_result(effect.id, ...) */ }
//! ```
//! Over sockets in-process: `fake_m365::server::start(fake, ServerOptions::default()).await`
//! returns the HTTPS base URL (login and Graph paths on one listener), the control URL and the
//! CA PEM. As a binary: `fake-m365 --listen 127.0.0.1:8443 --control 127.0.0.1:8444
//! --ca-out fake-m365-ca.pem [--trust-ca connector-ca.pem] [--populate 10000 --seed 1]
//! [--cloud global|usgovl4|usgovl5|china] [--allow-http-loopback] [--config switches.json]`; it
//! prints one JSON line `{"url","controlUrl","caFile","tenantId"}` when ready. Notification
//! POSTs trust the fake's own CA plus every `--trust-ca` file.
//!
//! # Switches and their defaults (where the spec is unsure)
//! All in [`Config`]; change them in-process or with `PATCH /control/config`.
//! - getPresencesByUserId with unknown/non-Teams ids: `PresenceUnknown` entries
//!   ([`UnknownPresenceIds`]); GET presence of a non-Teams user: `PresenceUnknown`.
//! - Device-code `slow_down` when polled before `interval`: on (RFC 8628; not in Entra docs).
//! - `application/x-www-form-urlencoded; charset=utf-8` accepted (the old ADAL AADSTS90013 quirk is
//!   `reject_form_charset`).
//! - Subscription max lifetimes: presence 60 min, events/contacts 10,080 min (rich 1,440), users
//!   41,760 min; anything under 45 min is silently raised to 45.
//! - A PATCH of an expired (deleted) subscription: 404 `ResourceNotFound` (UNVERIFIED in docs).
//! - Delivery: first attempt counts only if 2xx within the 3 s ack window (a later 2xx is a retry,
//!   which makes realistic duplicates); retries after 1 min doubling, up to 4 h
//!   (`retry_base_ms`, `retry_horizon_ms`); slow/drop evaluated over 10 min with at least
//!   `health_min_samples` (10) samples.
//! - Subscriptions are bound to the access token used to create/PATCH/reauthorize them.
//!   `reauthorizationRequired` goes to the lifecycle URL 15 min before the subscription or that
//!   token expires; once the token has expired delivery pauses (held up to the retry horizon)
//!   until PATCH or `/reauthorize` (`pause_on_reauthorization_required` pauses at once;
//!   `bind_subscriptions_to_token = false` turns the binding off).
//! - Calendar drives Teams presence (`calendar_drives_presence`, on): an ongoing busy/tentative
//!   timed event turns Available into Busy/InAMeeting unless a preferred presence is set; an
//!   ongoing `oof` event sets the activity OutOfOffice.
//! - Directory replication delay for new users in listings: 0 (`directory_replication_delay_ms`).
//! - Subscription requests needing a handshake are refused inside `$batch` (the fake cannot
//!   answer them synchronously there).
//! - Validation tokens: v2 (`azp`, `login.microsoftonline.com/{tid}/v2.0`); `validation_token_v1`
//!   switches to v1. The signing key rotates daily and the previous key stays in the JWKS.
//! - Users `$top` cap 999 (1000 rejected, UNVERIFIED); Outlook default page size 10 (UNVERIFIED).
//! - Delegated 403s on directory endpoints use `Authorization_RequestDenied`, others `Forbidden`.
//! - ROPC on `/common` or `/consumers`: `invalid_request` with AADSTS90023 (code chosen by the
//!   fake; the docs give only the error).
//! - Presence fade: an app session set to Available and not refreshed becomes
//!   Available/AvailableInactive after 5 min and Away/Away after 10 min.
//!
//! # Control API (`/control/...`, JSON)
//! `GET tenant`, `POST users` ([`UserSpec`]), `POST populate {count, seed}`, `GET users`,
//! `PATCH|DELETE users/{id}`, `POST apps` ([`AppReg`]), `POST token {clientId, user?, scopes}`,
//! `POST aadsts {user|clientId, code|null}`, `POST revoke {user}`,
//! `POST device/approve {userCode, user}`, `POST device/decline {userCode}`,
//! `POST presence/teams {user, session?, availability, activity}`, `POST presence/signout`,
//! `POST presence/oof {user, on}`, `GET presence/{user}`, `POST events {user, event}`,
//! `POST events/exception {user, eventId, date, cancel|patch}`, `POST contacts {user, contact}`,
//! `POST faults` ([`Fault`]), `DELETE faults`, `POST clock {skewMs|advanceMs}`,
//! `GET|PATCH config`, `GET|DELETE requests`, `GET subscriptions`,
//! `POST subscriptions/{id}/outage {on}`, `POST subscriptions/{id}/lifecycle {event}`,
//! `GET deliveries`, `POST jwks/rotate`, `POST delta/invalidate`.

#![deny(missing_docs)]

pub mod batch;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod contacts;
pub mod control;
pub mod core;
pub mod crypto;
pub mod delivery;
pub mod http;
pub mod odata;
pub mod presence;
pub mod server;
pub mod subscriptions;
pub mod tenant;
pub mod throttle;
pub mod token;
pub mod users;

pub use crate::clock::{Clock, ManualClock};
pub use crate::config::{Cloud, Config, UnknownPresenceIds, ValidationTokenMode};
pub use crate::core::{Fake, Fault, FaultKind, Handled, Outbound, OutboundResult, Purpose};
pub use crate::http::{Request, Response};
pub use crate::tenant::{AppReg, User, UserSpec};
