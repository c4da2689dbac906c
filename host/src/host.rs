//! Starting and stopping the whole host: storage, engine, instances, listeners, plugin watcher.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::HostConfig;
use crate::engine::{Plugin, Runtime};
use crate::instance::InstanceContext;
use crate::keys::MasterKey;
use crate::server::Routes;

/// A running host.
pub struct Host {
    /// Where the public listener is bound.
    pub http_addr: SocketAddr,
    /// Where the control listener is bound.
    pub control_addr: SocketAddr,
    /// Whether the public listener speaks TLS.
    pub tls: bool,
    plugins: Arc<Plugins>,
    tasks: Vec<JoinHandle<()>>,
    db: sled::Db,
}

/// Loads components and swaps them into instances.
pub struct Plugins {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    /// Instances by name.
    pub instances: HashMap<String, Arc<InstanceContext>>,
}

impl Plugins {
    fn path(&self, plugin: &str) -> PathBuf {
        self.dir.join(format!("{plugin}.wasm"))
    }

    async fn load(&self, plugin: &str) -> Result<Arc<Plugin>> {
        self.load_with(plugin, None).await
    }

    /// Loads `plugin`; with `compile_threads`, a compile runs on that many threads only.
    async fn load_with(&self, plugin: &str, compile_threads: Option<usize>) -> Result<Arc<Plugin>> {
        let path = self.path(plugin);
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || {
            let wasm =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let load = || {
                runtime
                    .load(&wasm)
                    .with_context(|| format!("loading {}", path.display()))
                    .map(Arc::new)
            };
            match compile_threads {
                Some(n) => rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("compile-{i}"))
                    .build()
                    .context("starting the compile thread")?
                    .install(load),
                None => load(),
            }
        })
        .await?
    }

    /// Compiles the instance's plugin file off the actor and swaps it in between two events.
    pub async fn reload(&self, instance: &str) -> Result<String> {
        let Some(ctx) = self.instances.get(instance) else {
            bail!("no instance named {instance:?}");
        };
        // Guests keep serving while the new one compiles: one compile thread leaves them the
        // other cores (a start-up compile, with nothing to serve yet, uses them all).
        let plugin = match self.load_with(&ctx.config.plugin, Some(1)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(instance, error = %format!("{e:#}"), "new component rejected; the old guest keeps serving");
                ctx.status.lock().expect("status").last_error = Some(format!("{e:#}"));
                return Err(e);
            }
        };
        ctx.swap(plugin).await
    }
}

impl Host {
    /// Opens storage, loads every plugin, starts instances and listeners.
    pub async fn start(config: HostConfig) -> Result<Host> {
        std::fs::create_dir_all(&config.storage.data_dir)
            .with_context(|| format!("creating {}", config.storage.data_dir.display()))?;
        let master = Arc::new(MasterKey::load(config.storage.master_key_file.as_deref())?);
        let db = sled::Config::new()
            .path(config.storage.data_dir.join("kv"))
            .open()
            .context("opening the sled database")?;
        let runtime = Arc::new(Runtime::for_config(
            &config.storage.data_dir.join("compiled"),
            &config,
        )?);
        let mut plugins = Plugins {
            runtime: runtime.clone(),
            dir: config.plugins_dir.clone(),
            instances: HashMap::new(),
        };
        let mut loaded: HashMap<String, Arc<Plugin>> = HashMap::new();
        let handle = tokio::runtime::Handle::current();
        let mut routes = HashMap::new();
        for instance in &config.instances {
            let plugin = match loaded.get(&instance.plugin) {
                Some(p) => p.clone(),
                None => {
                    let p = plugins.load(&instance.plugin).await?;
                    loaded.insert(instance.plugin.clone(), p.clone());
                    p
                }
            };
            let (rt, cfg, db2, master2, h) = (
                runtime.clone(),
                instance.clone(),
                db.clone(),
                master.clone(),
                handle.clone(),
            );
            let ctx = tokio::task::spawn_blocking(move || {
                crate::instance::start(rt, plugin, cfg, &db2, master2, h)
            })
            .await??;
            routes.insert(
                (instance.domain.clone(), instance.name.clone()),
                ctx.clone(),
            );
            plugins.instances.insert(instance.name.clone(), ctx);
        }
        let plugins = Arc::new(plugins);

        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::server::tls_config(cert, key)?)),
            _ => None,
        };
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let control = TcpListener::bind(config.server.control)
            .await
            .with_context(|| format!("binding control {}", config.server.control))?;
        let http_addr = listener.local_addr()?;
        let control_addr = control.local_addr()?;
        let routes = Arc::new(Routes {
            instances: routes,
            max_body_bytes: config.server.max_body_bytes,
            response_deadline: Duration::from_millis(config.server.response_deadline_ms),
            max_pending_requests: config.server.max_pending_requests,
        });
        let has_tls = tls.is_some();
        let tasks = vec![
            tokio::spawn(crate::server::serve(listener, tls, routes)),
            tokio::spawn(crate::control::serve(control, plugins.clone())),
            tokio::spawn(watch(
                plugins.clone(),
                Duration::from_millis(config.watch_interval_ms),
            )),
        ];
        tracing::info!(%http_addr, %control_addr, tls = has_tls, pooling = runtime.pooling, "host started");
        Ok(Host {
            http_addr,
            control_addr,
            tls: has_tls,
            plugins,
            tasks,
            db,
        })
    }

    /// Swaps an instance to the current content of its plugin file.
    pub async fn reload(&self, instance: &str) -> Result<String> {
        self.plugins.reload(instance).await
    }

    /// An instance's shared context (status, metrics).
    pub fn instance(&self, name: &str) -> Option<Arc<InstanceContext>> {
        self.plugins.instances.get(name).cloned()
    }

    /// Stops listeners and actors and flushes storage.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for ctx in self.plugins.instances.values() {
            ctx.shutdown();
        }
        let _ = self.db.flush_async().await;
    }
}

/// Polls the plugins directory and swaps instances whose component file changed.
async fn watch(plugins: Arc<Plugins>, every: Duration) {
    let mut seen: HashMap<String, (SystemTime, u64)> = HashMap::new();
    for ctx in plugins.instances.values() {
        if let Ok(meta) = std::fs::metadata(plugins.path(&ctx.config.plugin)) {
            seen.insert(
                ctx.config.plugin.clone(),
                (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                ),
            );
        }
    }
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let mut changed = Vec::new();
        for ctx in plugins.instances.values() {
            let plugin = &ctx.config.plugin;
            let Ok(meta) = std::fs::metadata(plugins.path(plugin)) else {
                continue;
            };
            let signature = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            if seen.get(plugin) != Some(&signature) {
                changed.push((plugin.clone(), signature));
            }
        }
        for (plugin, signature) in changed {
            seen.insert(plugin.clone(), signature);
            let Ok(wasm) = tokio::fs::read(plugins.path(&plugin)).await else {
                continue;
            };
            let hash = crate::engine::hex(&<sha2::Sha256 as sha2::Digest>::digest(&wasm));
            for (name, ctx) in &plugins.instances {
                let current = ctx.status.lock().expect("status").wasm_sha256.clone();
                if ctx.config.plugin == plugin && current != hash {
                    tracing::info!(instance = %name, %plugin, "component file changed; reloading");
                    let _ = plugins.reload(name).await;
                }
            }
        }
    }
}
