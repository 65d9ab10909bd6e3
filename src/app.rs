//! Start-up: builds the shared services once, binds the listener and runs the HTTP server.
//!
//! Used by `serve`, `demo` and the tests alike (tests bind port 0 and read the real address),
//! so that what is tested is what runs.

use crate::config::Config;
use crate::lifecycle::Reloader;
use crate::service::Services;
use actix_web::dev::{Server, ServerHandle};
use actix_web::HttpServer;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound, running-on-await gateway.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    services: Arc<Services>,
    /// Cancelled to stop gracefully (by `serve`'s signal listener, or by the caller), and once
    /// the server has stopped: background tasks (refresher, reload listener) end on it.
    shutdown: CancellationToken,
    /// Reloads the file this application was built from.
    reloader: Reloader,
    /// How long buffered history readings may take to be written once the server has stopped
    /// (`[server] shutdown_grace_seconds`).
    flush_within: std::time::Duration,
}

impl Application {
    /// Builds the services from `config` and binds `config.server.bind` (port 0 allowed).
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        let services = Services::build(config)?;
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind(config.server.bind)
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.server.bind))?;
        let addr = listener.local_addr()?;
        let app_services = services.clone();
        // Our own stop signal instead of actix's: actix stops *immediately* on SIGINT, and
        // listeners are installed by `serve` only (see `crate::lifecycle`).
        let mut server = HttpServer::new(move || crate::api::app(app_services.clone()))
            .listen(listener)?
            .shutdown_signal(shutdown.clone().cancelled_owned())
            .shutdown_timeout(config.server.shutdown_grace_seconds);
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let server = server.run();
        // Only once the listener is bound and the server built: a start-up that fails above
        // must not leave a refresher calling Defender for a gateway that never served.
        if config.refresh.enabled {
            let refresher =
                crate::refresher::Refresher::new(&services, &config.cache, &config.refresh).spawn();
            // The refresher stops with the server: no background fetch starts once shutdown
            // begins (fetches already running finish on their own and only fill the cache).
            let stop = shutdown.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                refresher.abort();
            });
        }
        services.set_ready();
        let reloader = Reloader::new(services.clone(), config);
        Ok(Self {
            server,
            addr,
            services,
            shutdown,
            reloader,
            flush_within: std::time::Duration::from_secs(config.server.shutdown_grace_seconds),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared services (tests inspect them).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The shutdown token: cancelling it stops the server gracefully (no new connections,
    /// requests in flight finish within `[server] shutdown_grace_seconds`). It is cancelled too
    /// once the server has stopped, however that happened, so background tasks can end on it.
    ///
    /// A request waiting for a score fetch gets the value if the fetch ends within the grace
    /// period: fetches run on the runtime `build` was called on, which outlives every HTTP
    /// worker, so a worker that stops early cancels none of them.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Reloads the configuration file this application was built from (process environment
    /// overrides); what SIGHUP does.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Installs the process signal listeners: SIGTERM/SIGINT stop gracefully, SIGHUP reloads.
    /// For `serve`; a process hosting several gateways (the tests) must not call this for each.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        crate::lifecycle::stop_on_signals(self.shutdown.clone())?;
        crate::lifecycle::reload_on_sighup(self.reloader.clone(), self.shutdown.clone())?;
        Ok(())
    }

    /// Serves until the server is stopped (gracefully after a signal: then `Ok`), writes the
    /// history readings still buffered (within the grace period: a database that is away loses
    /// them rather than holding the process), and cancels the shutdown token so that background
    /// tasks end.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(history) = self.services.history() {
            let pending = history.stats().pending;
            if tokio::time::timeout(self.flush_within, history.flush())
                .await
                .is_err()
            {
                tracing::warn!(
                    pending,
                    "history: buffered readings not written within the grace period; they are lost"
                );
            }
        }
        self.shutdown.cancel();
        result
    }
}
