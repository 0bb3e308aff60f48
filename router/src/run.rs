//! `switchyard run`: start-up, signal handling (SIGTERM/SIGINT stop gracefully, SIGHUP reloads), and
//! logging set-up.

use std::path::PathBuf;
use std::sync::Arc;

use switchyard_config::{Config, LogFormat};
use tokio::net::TcpListener;

use crate::app::{App, StartError};

/// Sets up `tracing` output; `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Loads the config file, or the built-in default without one.
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, StartError> {
    match path {
        Some(path) => Ok(switchyard_config::load_file(path)?),
        None => Ok(switchyard_config::parse(
            switchyard_config::DEFAULT_CONFIG,
            &|name| std::env::var(name).ok(),
        )?),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn spawn_reload_on_hangup(app: Arc<App>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            match app.reload().await {
                Ok(report) => {
                    crate::admin::apply_overrides(&app).await;
                    tracing::info!(?report, "SIGHUP: configuration reloaded");
                }
                Err(problems) => {
                    tracing::error!(problems = ?problems, "SIGHUP: configuration not applied; the previous one keeps running")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = app;
}

/// Runs the server until SIGTERM/SIGINT. Prints `switchyard listening on http://ADDR` on stdout once
/// bound (with port 0 in `server.listen`, the port the OS chose).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), StartError> {
    let listen = config.server.listen.clone();
    let admin_listen = config.admin.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| StartError::Setup(vec![format!("server.listen = {listen}: {e}")]))?;
    let admin_listener = match &admin_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| StartError::Setup(vec![format!("admin.listen = {address}: {e}")]))?,
        ),
        None => None,
    };
    let tls = match &config.server.tls {
        Some(settings) => {
            Some(crate::tls::acceptor(settings).map_err(|e| StartError::Setup(vec![e]))?)
        }
        None => None,
    };
    let app = App::start(config, config_path).await?;
    crate::admin::apply_overrides(&app).await;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    println!("switchyard listening on http://{address}");
    if let Some(admin) = &admin_listener {
        if let Ok(admin_address) = admin.local_addr() {
            println!("switchyard admin listening on http://{admin_address}");
        }
    }
    tracing::info!(%address, "switchyard listening");
    spawn_reload_on_hangup(app.clone());
    {
        // Per-IP limiter state for clients that went quiet is dropped now and then, to stay bounded.
        let app = app.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                ticker.tick().await;
                app.runtime().limiters.forget_idle();
            }
        });
    }

    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let admin_task = admin_listener.map(|admin| {
        let app = app.clone();
        let mut stop = stop_receiver.clone();
        tokio::spawn(crate::http::serve(
            app,
            admin,
            crate::http::Role::Admin,
            tls.clone(),
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        ))
    });
    let role = if admin_task.is_some() {
        crate::http::Role::Ingest
    } else {
        crate::http::Role::Both
    };
    crate::http::serve(app.clone(), listener, role, tls, shutdown_signal()).await;
    stop_sender.send_replace(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    tracing::info!("no longer accepting requests; flushing sinks");
    app.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}
