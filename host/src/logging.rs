//! tracing setup with a filter switchable at run time. Directives `guest.<target>=<level>`
//! switch guest targets; everything else is an ordinary `EnvFilter` directive for host targets.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use anyhow::{Result, anyhow};
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

type ReloadHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static RELOAD: OnceLock<ReloadHandle> = OnceLock::new();
static GUEST_FILTER: RwLock<Option<GuestFilter>> = RwLock::new(None);
static CURRENT: RwLock<String> = RwLock::new(String::new());

/// Guest target levels, plus the level for targets not named.
struct GuestFilter {
    default: Level,
    targets: HashMap<String, Level>,
}

/// Installs the global subscriber (human or JSON) with `filter`.
pub fn init(json: bool, filter: &str) -> Result<()> {
    let (host_filter, guest) = split(filter)?;
    let (layer, handle) = tracing_subscriber::reload::Layer::new(host_filter);
    let registry = tracing_subscriber::registry().with(layer);
    if json {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .try_init()?;
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()?;
    }
    let _ = RELOAD.set(handle);
    *GUEST_FILTER.write().expect("log filter") = Some(guest);
    *CURRENT.write().expect("log filter") = filter.to_string();
    Ok(())
}

/// Replaces the filter at run time.
pub fn set_filter(filter: &str) -> Result<()> {
    let (host_filter, guest) = split(filter)?;
    if let Some(handle) = RELOAD.get() {
        handle.reload(host_filter)?;
    }
    *GUEST_FILTER.write().expect("log filter") = Some(guest);
    *CURRENT.write().expect("log filter") = filter.to_string();
    Ok(())
}

/// The filter in force.
pub fn current_filter() -> String {
    CURRENT.read().expect("log filter").clone()
}

fn parse_level(text: &str) -> Result<Level> {
    text.parse()
        .map_err(|_| anyhow!("unknown log level {text:?}"))
}

/// Splits guest directives off; the host filter always lets `guest` lines through to our own check.
fn split(filter: &str) -> Result<(EnvFilter, GuestFilter)> {
    let mut host = Vec::new();
    let mut guest = GuestFilter {
        default: Level::INFO,
        targets: HashMap::new(),
    };
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.split_once('=') {
            Some((target, level)) if target.starts_with("guest.") => {
                guest
                    .targets
                    .insert(target["guest.".len()..].to_string(), parse_level(level)?);
            }
            Some(("guest", level)) => guest.default = parse_level(level)?,
            None => {
                // A bare level sets the default for host and guest alike.
                guest.default = parse_level(directive)?;
                host.push(directive.to_string());
            }
            _ => host.push(directive.to_string()),
        }
    }
    host.push("guest=trace".into());
    let host = EnvFilter::try_new(host.join(","))?;
    Ok((host, guest))
}

/// Whether a guest line at `level` under `target` is written now.
pub fn guest_enabled(level: Level, target: &str) -> bool {
    match GUEST_FILTER.read().expect("log filter").as_ref() {
        Some(f) => level <= *f.targets.get(target).unwrap_or(&f.default),
        None => level <= Level::INFO,
    }
}

/// Writes a guest line under the `guest` target with instance and guest target as fields.
pub fn write_guest_line(level: Level, instance: &str, target: &str, message: &str) {
    match level {
        Level::TRACE => {
            tracing::trace!(target: "guest", instance, guest_target = target, "{message}")
        }
        Level::DEBUG => {
            tracing::debug!(target: "guest", instance, guest_target = target, "{message}")
        }
        Level::INFO => {
            tracing::info!(target: "guest", instance, guest_target = target, "{message}")
        }
        Level::WARN => {
            tracing::warn!(target: "guest", instance, guest_target = target, "{message}")
        }
        Level::ERROR => {
            tracing::error!(target: "guest", instance, guest_target = target, "{message}")
        }
    }
}
