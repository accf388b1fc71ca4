//! The `smoothd` binary: flags, settings, logging, signals.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use smoothd::{Roles, Settings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "smoothd",
    version,
    about = "A self-hosted server for the Smooth browser-agent API"
)]
struct Cli {
    /// A TOML settings file (default: config/smoothd.toml if present; or SMOOTHD_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the workers (the default).
    Serve {
        /// Run only the API; tasks wait for `smoothd worker` processes.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run only workers (no HTTP listener).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// The default spend cap of the key's tasks in US dollars (the smallest of it, the
        /// task's `max_cost_usd` and `max_cost_usd` in the settings wins).
        #[arg(long, value_parser = positive_usd)]
        max_cost_usd: Option<f64>,
    },
    /// Set the spend cap of the key with this name in US dollars; without one, clear it.
    MaxCost {
        name: String,
        #[arg(value_parser = positive_usd)]
        usd: Option<f64>,
    },
    /// List keys (names, prefixes, dates; never the keys).
    List,
    /// Revoke the key with this name.
    Revoke { name: String },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with its causes, not a backtrace: these errors are for people.
            eprintln!("smoothd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    init_tracing(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start runtime")?;
    runtime.block_on(async_main(
        cli.command.unwrap_or(Command::Serve { no_workers: false }),
        settings,
    ))
}

async fn async_main(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { no_workers } => {
            serve(
                settings,
                Roles {
                    api: true,
                    workers: !no_workers,
                },
            )
            .await
        }
        Command::Worker => {
            serve(
                settings,
                Roles {
                    api: false,
                    workers: true,
                },
            )
            .await
        }
        Command::Migrate => {
            let store = smoothd::open_store(&settings).await?;
            println!("migrations applied ({})", store.backend_name());
            store.close().await;
            Ok(())
        }
        Command::Keys { command } => keys(settings, command).await,
    }
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    tracing::debug!(?settings, "settings");
    let store = smoothd::open_store(&settings).await?;
    if roles.api {
        smoothd::bootstrap_first_key(&settings, &store).await?;
    }
    let listener = if roles.api {
        Some(
            tokio::net::TcpListener::bind(&settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?,
        )
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    smoothd::run(settings, store, listener, roles, shutdown).await
}

async fn on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    shutdown.cancel();
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let store = smoothd::open_store(&settings).await?;
    match command {
        KeysCommand::Create { name, max_cost_usd } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 64 {
                anyhow::bail!("--name: 1 to 64 characters");
            }
            let key = smoothd_core::ids::api_key();
            match store.create_key(name, &key).await {
                Ok(_) => {}
                Err(smoothd_store::StoreError::Conflict) => {
                    anyhow::bail!("a key named {name:?} already exists")
                }
                Err(e) => return Err(e).context("cannot store the key"),
            }
            if max_cost_usd.is_some() {
                store.set_key_max_cost(name, max_cost_usd).await?;
            }
            eprintln!("Created key {name:?}. It is shown once; store it now:");
            println!("{key}");
        }
        KeysCommand::MaxCost { name, usd } => {
            if !store.set_key_max_cost(&name, usd).await? {
                anyhow::bail!("no active key named {name:?}");
            }
            match usd {
                Some(usd) => println!("{name:?}: max_cost_usd ${usd}"),
                None => println!("{name:?}: no max_cost_usd"),
            }
        }
        KeysCommand::List => {
            let rows = store.list_keys().await?;
            let caps: std::collections::HashMap<String, f64> =
                store.key_max_costs().await?.into_iter().collect();
            if rows.is_empty() {
                println!("no keys");
            }
            for k in rows {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let cap = caps
                    .get(&k.name)
                    .map(|usd| format!("  max_cost_usd ${usd}"))
                    .unwrap_or_default();
                println!(
                    "{:<24} {}…  {:<8} created {}{cap}",
                    k.name,
                    k.prefix,
                    state,
                    k.created_at / 1000
                );
            }
        }
        KeysCommand::Revoke { name } => {
            if store.revoke_key(&name).await? {
                println!("revoked {name:?}");
            } else {
                anyhow::bail!("no active key named {name:?}");
            }
        }
    }
    store.close().await;
    Ok(())
}

/// A `--max-cost-usd` value: a positive number of US dollars.
fn positive_usd(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 => Ok(usd),
        _ => Err(format!("a positive number of US dollars, got {s:?}")),
    }
}

fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).with_current_span(true).init();
    }
}
