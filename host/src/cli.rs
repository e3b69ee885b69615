//! Command line: `containerssh [run] --config FILE`, `containerssh validate FILE`,
//! `--dump-config`, `--healthcheck`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::backend::Backends;
use crate::config::{self, Config};
use crate::observe::{self, Metrics, Routes};
use crate::plugin::{
    AuthenticatorPlugin, ConfigPlugin, FilterPlugin, PluginRuntime, PluginSettings, Plugins,
};
use crate::ssh::{self, Gateway};

#[derive(Parser)]
#[command(
    name = "containerssh",
    version,
    about = "SSH gateway that gives every connection its own container"
)]
struct Cli {
    /// Configuration file (YAML, or JSON with a .json extension).
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/containerssh/config.yaml"
    )]
    config: PathBuf,
    /// Print the effective configuration (defaults filled in) as YAML, secrets redacted, and exit.
    #[arg(long)]
    dump_config: bool,
    /// Ask the health endpoint (`health.listen` of the configuration); exit 0 if healthy.
    #[arg(long)]
    healthcheck: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Check a configuration file and print every problem found.
    Validate {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Work with audit files.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: crate::plugin_cli::PluginCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Play a session recording (.cast) with its timing, or print an audit log (.jsonl).
    Replay {
        file: PathBuf,
        /// Play this many times faster.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause between two outputs, in seconds.
        #[arg(long, default_value_t = 2.0)]
        max_wait: f64,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.dump_config {
        return crate::operator::dump_config(&cli.config);
    }
    if cli.healthcheck {
        return crate::operator::healthcheck(&cli.config);
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate { file } => validate(file.as_deref().unwrap_or(&cli.config)),
        Command::Plugin { command } => crate::plugin_cli::main(command),
        Command::Audit {
            command:
                AuditCommand::Replay {
                    file,
                    speed,
                    max_wait,
                },
        } => {
            let max_wait = std::time::Duration::try_from_secs_f64(max_wait).unwrap_or_default();
            match crate::audit::replay::replay(&file, speed, max_wait) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("containerssh: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("containerssh: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(run(&cli.config));
            // Blocking work still running (an fsync on a hung disk) must not hold the exit:
            // like every other shutdown step, dropping the runtime has a deadline.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "containerssh stopped");
                    eprintln!("containerssh: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Plugins are checked as at start-up: compiled, imports and exports verified.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("containerssh: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems: Vec<String> = match runtime.block_on(plugins(&config, None)) {
        Ok(loaded) => loaded
            .errors()
            .into_iter()
            .map(|e| format!("{e:#}"))
            .collect(),
        Err(e) => vec![format!("{e:#}")],
    };
    // Kerberos as at start-up: the libraries loaded, the configuration and keytab read.
    if let Some(kerberos) = &config.kerberos {
        if let Err(e) = crate::kerberos::Kerberos::new(kerberos) {
            problems.push(format!("{e:#}"));
        }
    }
    if problems.is_empty() {
        println!("{}: configuration is valid", path.display());
        ExitCode::SUCCESS
    } else {
        eprint!("{}", config::ConfigError { problems });
        ExitCode::FAILURE
    }
}

/// Each plugin loaded on its own, so that `validate` reports every one that fails.
struct Loaded {
    auth: anyhow::Result<Option<AuthenticatorPlugin>>,
    config: anyhow::Result<Option<ConfigPlugin>>,
    filter: anyhow::Result<FilterPlugin>,
}

impl Loaded {
    fn errors(self) -> Vec<anyhow::Error> {
        [self.auth.err(), self.config.err(), self.filter.err()]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Loads every plugin as at start-up: compiled, imports and exports checked, and the
/// security settings tried once so that a bad `security` section stops the start.
async fn load_plugins(config: &Config, metrics: Option<Arc<Metrics>>) -> anyhow::Result<Plugins> {
    let loaded = plugins(config, metrics).await?;
    Ok(Plugins {
        auth: loaded.auth?,
        config: loaded.config?,
        filter: loaded.filter?,
    })
}

async fn plugins(config: &Config, metrics: Option<Arc<Metrics>>) -> anyhow::Result<Loaded> {
    let cache_dir = match config.plugin_cache_dir.as_deref() {
        Some("") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => crate::plugin::default_cache_dir(),
    };
    let runtime = PluginRuntime::new(cache_dir).context("cannot start the plugin runtime")?;
    if let Some(metrics) = metrics {
        runtime.set_metrics(metrics);
    }
    let auth = match &config.auth {
        Some(auth) => runtime
            .load_authenticator("auth", auth)
            .context("auth plugin")
            .map(Some),
        None if config.oauth2.is_some() || config.kerberos.is_some() => Ok(None),
        None => Err(anyhow::anyhow!(
            "auth: an authentication plugin is required"
        )),
    };
    let config_plugin = match &config.configserver {
        Some(settings) => runtime
            .load_config_provider("configserver", settings)
            .context("configserver plugin")
            .map(Some),
        None => Ok(None),
    };
    let filter_settings = config
        .filter
        .clone()
        .unwrap_or_else(|| PluginSettings::builtin("security-policy"));
    let filter = match runtime
        .load_filter("security", &filter_settings)
        .context("request filter plugin")
    {
        Ok(filter) => filter
            .check_policy(&config.security.to_string())
            .await
            .context("security")
            .map(|()| filter),
        Err(e) => Err(e),
    };
    Ok(Loaded {
        auth,
        config: config_plugin,
        filter,
    })
}

async fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _log = crate::logging::init(&config.log)?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let plugins = load_plugins(&config, Some(metrics.clone())).await?;
    let listener = tokio::net::TcpListener::bind(&config.ssh.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.ssh.listen))?;
    let auditor = crate::audit::Auditor::new(&config.audit)?;
    let geoip_config = config.geoip.clone();
    let geoip = tokio::task::spawn_blocking(move || observe::geoip::GeoIp::load(&geoip_config))
        .await
        .context("loading the GeoIP database")??;
    let oauth2 = start_oauth2(&config).await?;
    let kerberos = match config.kerberos.clone() {
        Some(settings) => Some(
            tokio::task::spawn_blocking(move || crate::kerberos::Kerberos::new(&settings))
                .await
                .context("setting up Kerberos")??,
        ),
        None => None,
    };
    // Bound now (a port in use stops the start here), served once the gateway exists.
    let observability = bind_observability(&config).await?;
    // Last of what may fail: the backends set up state (a runtime directory, a cleanup of
    // what an earlier run left) that a failed start would otherwise leave behind.
    let instance = instance_id(&config);
    let backends = Backends::connect(config.clone(), instance, Some(metrics.clone())).await?;
    let gateway = Gateway::new(
        config.clone(),
        plugins,
        auditor,
        backends,
        metrics.clone(),
        geoip,
        ssh::BuiltinLogins { oauth2, kerberos },
    );
    serve_observability(observability, metrics, gateway.ready.clone());
    ssh::run(gateway, listener, shutdown_signal()).await
}

/// The OAuth2 login's provider clients, and its redirect page when a flow needs one.
async fn start_oauth2(config: &Config) -> anyhow::Result<Option<Arc<crate::oauth2::OAuth2>>> {
    let Some(settings) = config.oauth2.clone() else {
        return Ok(None);
    };
    let for_clients = settings.clone();
    let oauth2 = tokio::task::spawn_blocking(move || crate::oauth2::OAuth2::new(&for_clients))
        .await
        .context("setting up the OAuth2 login")??;
    if settings.uses_redirect_server() {
        crate::oauth2::redirect::start(&settings.redirect).await?;
    }
    Ok(Some(oauth2))
}

/// A bound metrics/health listener, what it answers, and its TLS settings.
type ObservabilityListener = (
    tokio::net::TcpListener,
    Routes,
    Option<Arc<rustls::ServerConfig>>,
);

/// Binds the metrics and health listeners (one listener when they share an address, with
/// the same TLS settings, which `Config::validate` checked).
async fn bind_observability(config: &Config) -> anyhow::Result<Vec<ObservabilityListener>> {
    let mut servers: Vec<(String, Routes, &str, observe::ServerTls)> = Vec::new();
    if config.metrics.enable {
        servers.push((
            config.metrics.listen.clone(),
            Routes {
                metrics_path: Some(config.metrics.path.clone()),
                health: false,
            },
            "metrics",
            config.metrics.tls(),
        ));
    }
    if config.health.enable {
        match servers
            .iter_mut()
            .find(|(listen, ..)| *listen == config.health.listen)
        {
            Some((_, routes, ..)) => routes.health = true,
            None => servers.push((
                config.health.listen.clone(),
                Routes {
                    metrics_path: None,
                    health: true,
                },
                "health",
                config.health.tls(),
            )),
        }
    }
    let mut bound = Vec::new();
    for (listen, routes, section, tls) in servers {
        // Certificates and keys are read off the async workers, before anything is served.
        let tls = tokio::task::spawn_blocking(move || tls.server_config())
            .await
            .context("reading the metrics/health TLS settings")?
            .map_err(|e| anyhow::anyhow!("{section}.{e:#}"))?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for metrics/health"))?;
        bound.push((listener, routes, tls));
    }
    Ok(bound)
}

/// Serves the bound metrics and health listeners until the process ends.
fn serve_observability(
    listeners: Vec<ObservabilityListener>,
    metrics: Arc<Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    for (listener, routes, tls) in listeners {
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Err(e) = observe::serve(listener, routes, metrics, ready, tls).await {
                tracing::error!(error = format!("{e:#}"), "observability endpoint stopped");
            }
        });
    }
}

/// Identifies this gateway's containers: host name plus listen address, so two gateways on one
/// engine never reap each other's containers, and a restarted one reaps its own.
fn instance_id(config: &Config) -> String {
    if !config.instance_id.is_empty() {
        return config.instance_id.clone();
    }
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", config.ssh.listen)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    // SIGHUP would end the process by default (log rotation tools send it). The configuration
    // is read once at start, as ContainerSSH does; HUP is logged and otherwise ignored.
    let hup = signal(SignalKind::hangup());
    match (term, int, hup) {
        (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
                _ = int.recv() => { tracing::info!("SIGINT received"); return; }
                _ = hup.recv() => tracing::warn!("SIGHUP received: the configuration is read only at start; restart the gateway to apply changes (connections drain on SIGTERM)"),
            }
        },
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL only");
            std::future::pending::<()>().await
        }
    }
}
