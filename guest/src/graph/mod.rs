//! The Microsoft side, sans-IO: token requests to the Microsoft identity platform (Entra ID)
//! and, as features grow, Graph calls. Functions build requests and parse responses; nothing
//! here performs I/O.

pub mod aadsts;
pub mod api;
pub mod form;
pub mod notifications;
pub mod presence;
pub mod subscriptions;
pub mod token;
pub mod tokens;
pub mod users;
