//! The process's one wasmtime engine: component model, async, pooling allocator, epoch
//! interruption; plus the on-disk cache of compiled plugins.
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::plugin::settings::MAX_MEMORY_LIMIT;
use crate::plugin::state::CallState;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugin instances alive at once across all plugins (sizes the pooling allocator).
const POOL_INSTANCES: u32 = 256;

pub struct PluginRuntime {
    pub(crate) engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Where plugins' HTTP requests are counted and timed (once the gateway has metrics).
    metrics: std::sync::OnceLock<Arc<crate::observe::Metrics>>,
}

/// `$XDG_CACHE_HOME/containerssh/plugins`, else `~/.cache/containerssh/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("containerssh").join("plugins"))
}

impl PluginRuntime {
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES);
        pool.total_core_instances(POOL_INSTANCES * 8);
        pool.total_memories(POOL_INSTANCES * 2);
        pool.total_tables(POOL_INSTANCES * 4);
        pool.max_memory_size(usize::try_from(MAX_MEMORY_LIMIT).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Keep the virtual reservation per memory near the largest allowed limit.
        config.memory_reservation(MAX_MEMORY_LIMIT);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine")?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the plugin epoch thread")?;
        let cache_dir = cache_dir.and_then(|dir| match prepare_cache_dir(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "plugin cache disabled");
                None
            }
        });
        Ok(Arc::new(Self {
            engine,
            cache_dir,
            metrics: std::sync::OnceLock::new(),
        }))
    }

    /// Plugins loaded from now on report each HTTP request to `metrics`.
    pub fn set_metrics(&self, metrics: Arc<crate::observe::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub(crate) fn metrics(&self) -> Option<Arc<crate::observe::Metrics>> {
        self.metrics.get().cloned()
    }

    /// The linker every plugin gets: WASI (nothing granted), wasi:http (through our hooks) and
    /// the containerssh host interface.
    pub(crate) fn linker(&self) -> anyhow::Result<Linker<CallState>> {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Every API version's host interfaces (distinct package versions, so no clash).
        crate::plugin::bindings::v0_1::authenticator::AuthenticatorPlugin::add_to_linker::<
            _,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |s| s)?;
        crate::plugin::bindings::v0_2::authenticator::AuthenticatorPlugin::add_to_linker::<
            _,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |s| s)?;
        Ok(linker)
    }

    /// Compiles (or loads from the cache) the component of `source`.
    pub(crate) fn component(&self, source: &str) -> anyhow::Result<Component> {
        let bytes: std::borrow::Cow<'static, [u8]> = match source.strip_prefix("builtin:") {
            Some(name) => crate::plugin::builtin::get(name)
                .with_context(|| format!("unknown built-in plugin {name:?}"))?
                .into(),
            None => std::fs::read(source)
                .with_context(|| format!("cannot read plugin {source}"))?
                .into(),
        };
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, &bytes)
                .map_err(anyhow::Error::from)
                .context("cannot compile the plugin");
        };
        let key = self.cache_key(&bytes);
        let artifact = dir.join(format!("{key}.cwasm"));
        let checksum = dir.join(format!("{key}.sha256"));
        if let Some(component) = self.load_cached(&artifact, &checksum) {
            return Ok(component);
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(anyhow::Error::from)
            .context("cannot compile the plugin")?;
        if let Err(e) = store_cached(&component, &artifact, &checksum) {
            tracing::warn!(error = format!("{e:#}"), "cannot cache the compiled plugin");
        }
        Ok(component)
    }

    fn cache_key(&self, wasm: &[u8]) -> String {
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        format!(
            "{}-{:016x}",
            hex::encode(Sha256::digest(wasm)),
            engine_hash.finish()
        )
    }

    /// A cached artifact is used only if its checksum matches what we wrote.
    fn load_cached(&self, artifact: &Path, checksum: &Path) -> Option<Component> {
        let expected = std::fs::read_to_string(checksum).ok()?;
        let data = std::fs::read(artifact).ok()?;
        if hex::encode(Sha256::digest(&data)) != expected.trim() {
            tracing::warn!(path = %artifact.display(), "cached plugin is corrupt; recompiling");
            return None;
        }
        // SAFETY: the artifact was produced by `Component::serialize` of this engine
        // configuration (the key includes the engine's compatibility hash) and its checksum
        // matches the one written next to it, so it is the bytes we wrote.
        match unsafe { Component::deserialize(&self.engine, &data) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %artifact.display(), error = %e, "cached plugin unusable; recompiling");
                None
            }
        }
    }
}

fn prepare_cache_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))?;
    Ok(())
}

fn store_cached(component: &Component, artifact: &Path, checksum: &Path) -> anyhow::Result<()> {
    let data = component.serialize()?;
    let sum = hex::encode(Sha256::digest(&data));
    write_atomically(artifact, &data)?;
    write_atomically(checksum, sum.as_bytes())?;
    Ok(())
}

/// Temp file + rename, so a concurrent reader never sees half a file.
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let Some(dir) = path.parent() else {
        bail!("{} has no parent directory", path.display());
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
