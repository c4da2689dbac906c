//! The one wasmtime `Engine` (pooling allocator, epoch interruption), the `Linker` shared by every
//! plugin, and loading components through a cache of precompiled artifacts.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{Connector, ConnectorPre};
use crate::guest_state::GuestState;

/// How often the epoch advances; event deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The major.minor of the contract this host serves.
pub const API_MAJOR_MINOR: (u64, u64) = (0, 1);

/// Engine, linker and artifact cache.
pub struct Runtime {
    /// The shared engine.
    pub engine: Engine,
    linker: Linker<GuestState>,
    cache_dir: PathBuf,
    compat_key: String,
    /// Whether the pooling allocator could be used (else on-demand allocation).
    pub pooling: bool,
    ticker_stop: Arc<AtomicBool>,
}

/// A compiled, type-checked plugin ready to instantiate.
pub struct Plugin {
    /// Pre-instantiated component: imports resolved once.
    pub pre: ConnectorPre<GuestState>,
    /// SHA-256 of the `.wasm`, hex.
    pub wasm_sha256: String,
}

impl Runtime {
    /// [`Runtime::new`] sized for `config`: the largest memory cap of its instances and room
    /// for all of them, with compiled artifacts cached in `cache_dir`.
    pub fn for_config(cache_dir: &Path, config: &crate::config::HostConfig) -> Result<Self> {
        let max_memory_mb = config
            .instances
            .iter()
            .map(|i| i.memory_limit_mb)
            .max()
            .unwrap_or(64);
        Self::new(
            cache_dir,
            usize::try_from(max_memory_mb << 20)?,
            config.instances.len(),
        )
    }

    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(cache_dir: &Path, max_memory_bytes: usize, instances: usize) -> Result<Self> {
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        let mut config = base_config();
        let mut pool = PoolingAllocationConfig::default();
        // Each instance may briefly have a second guest alive (hot swap, restart after a trap).
        let slots = u32::try_from(8 + 4 * instances).unwrap_or(u32::MAX);
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_memory_size(max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Some kernels cannot reserve the pool's address space; fall back rather than fail.
        let (engine, pooling) = match Engine::new(&config) {
            Ok(e) => (e, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable, using on-demand");
                (Engine::new(&base_config())?, false)
            }
        };
        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Connector::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat_key = format!("{:016x}", hasher.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir: cache_dir.to_path_buf(),
            compat_key,
            pooling,
            ticker_stop,
        })
    }

    /// Compiles (or loads from cache) and type-checks a component. Blocking and CPU-heavy:
    /// call it off the actors and off the async executor.
    pub fn load(&self, wasm: &[u8]) -> Result<Plugin> {
        let wasm_sha256 = hex(&Sha256::digest(wasm));
        let cached =
            self.cache_dir
                .join(format!("{}-{}.cwasm", &wasm_sha256[..32], self.compat_key));
        let component = self.load_cached(&cached).map_or_else(
            || -> Result<Component> {
                let component = Component::new(&self.engine, wasm)
                    .map_err(anyhow::Error::from)
                    .context("compiling component")?;
                if let Err(e) = write_atomically(&cached, &component.serialize()?) {
                    tracing::warn!(error = %e, "could not cache the compiled component");
                }
                Ok(component)
            },
            Ok,
        )?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("component does not fit the host's imports")?;
        Ok(Plugin {
            pre: ConnectorPre::new(pre)
                .map_err(anyhow::Error::from)
                .context("component does not export the guest interface")?,
            wasm_sha256,
        })
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache directory holds only artifacts this host serialised itself, and the
        // file name includes the engine's compatibility hash; wasmtime still rejects foreign
        // or version-mismatched artifacts with an error, which sends us back to compiling.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "discarding cached artifact");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .concurrency_support(false);
    config
}

/// Whether a guest's `api-version()` can be served by this host (same 0.x minor, or same major).
pub fn api_compatible(version: &str) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(0), Some(minor)) => API_MAJOR_MINOR == (0, minor),
        (Some(major), Some(_)) => major == API_MAJOR_MINOR.0 && major != 0,
        _ => false,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_versions() {
        assert!(super::api_compatible("0.1.0"));
        assert!(super::api_compatible("0.1.7"));
        assert!(!super::api_compatible("0.2.0"));
        assert!(!super::api_compatible("1.0.0"));
        assert!(!super::api_compatible("garbage"));
    }
}
