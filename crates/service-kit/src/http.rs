//! The HTTP server wiring every service shares: bind, listen, shut down gracefully on our
//! signal (actix's own signal handling is off: [`crate::Supervisor`] decides when to stop).

use std::io;
use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer};

use crate::groups::HttpSettings;

/// A started server and the port it listens on.
pub struct Listening {
    pub server: Server,
    pub port: u16,
}

/// Binds `options.host:options.port` and starts serving the apps `factory` makes (one per
/// worker). The server runs until [`crate::Supervisor::run`] stops it (or its handle does).
pub fn start<F, T, B>(options: &HttpSettings, factory: F) -> io::Result<Listening>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let listener = TcpListener::bind((options.host.as_str(), options.port)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("binding {}:{}: {e}", options.host, options.port),
        )
    })?;
    let port = listener.local_addr()?.port();
    let mut server = HttpServer::new(factory)
        .listen(listener)?
        .shutdown_timeout(options.shutdown_timeout_s)
        .disable_signals();
    if options.http_workers > 0 {
        server = server.workers(options.http_workers);
    }
    Ok(Listening {
        server: server.run(),
        port,
    })
}
