//! Start-up: builds the shared services once, binds the listener and runs the HTTP server.
//!
//! Used by `serve`, `demo` and the tests alike (tests bind port 0 and read the real address),
//! so that what is tested is what runs.

use crate::config::Config;
use crate::service::Services;
use actix_web::dev::{Server, ServerHandle};
use actix_web::HttpServer;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// A bound, running-on-await gateway.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    services: Arc<Services>,
}

impl Application {
    /// Builds the services from `config` and binds `config.server.bind` (port 0 allowed).
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        let services = Services::build(config)?;
        if config.refresh.enabled {
            crate::refresher::Refresher::new(&services, &config.cache, &config.refresh).spawn();
        }
        let listener = TcpListener::bind(config.server.bind)
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.server.bind))?;
        let addr = listener.local_addr()?;
        let app_services = services.clone();
        let mut server = HttpServer::new(move || crate::api::app(app_services.clone()))
            .listen(listener)?
            .shutdown_timeout(30);
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let server = server.run();
        services.set_ready();
        Ok(Self {
            server,
            addr,
            services,
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

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
