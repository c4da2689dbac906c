//! Virtual time. The guest's wall clock and monotonic clock both read it, so a simulated week
//! passes in the time it takes to process its events.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Shared virtual clock: milliseconds since the Unix epoch as the outside world sees them, plus
/// a skew that only the guest sees (to test a wrong local clock).
#[derive(Clone, Debug)]
pub struct VirtualClock {
    now_ms: Arc<AtomicU64>,
    guest_skew_ms: Arc<AtomicI64>,
}

impl VirtualClock {
    /// A clock starting at `start_ms` (Unix epoch milliseconds).
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
            guest_skew_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The true time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Moves time forward; virtual time never goes back.
    pub fn advance_to(&self, ms: u64) {
        self.now_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Makes the guest's wall clock read `skew_ms` off the true time.
    pub fn set_guest_skew(&self, skew_ms: i64) {
        self.guest_skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// The skew the guest currently sees.
    pub fn guest_skew(&self) -> i64 {
        self.guest_skew_ms.load(Ordering::Relaxed)
    }

    /// What the guest's wall clock reads now.
    pub fn guest_now_ms(&self) -> u64 {
        self.now_ms().saturating_add_signed(self.guest_skew())
    }

    /// The guest's wall clock, for `WasiCtxBuilder::wall_clock`.
    pub fn guest_wall_clock(&self) -> GuestWallClock {
        GuestWallClock(self.clone())
    }

    /// The guest's monotonic clock, for `WasiCtxBuilder::monotonic_clock`.
    pub fn guest_monotonic_clock(&self) -> GuestMonotonicClock {
        GuestMonotonicClock(self.clone())
    }
}

/// The guest's view of wall-clock time (true time plus skew).
pub struct GuestWallClock(VirtualClock);

impl HostWallClock for GuestWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.guest_now_ms())
    }
}

/// The guest's monotonic clock: true virtual time in nanoseconds (skew does not apply).
pub struct GuestMonotonicClock(VirtualClock);

impl HostMonotonicClock for GuestMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.now_ms().saturating_mul(1_000_000)
    }
}
