//! The PostgreSQL protocol, for the volumes of this node: ordinary drivers connect to a
//! volume's database by its name (`database` of its [`VolumeAccess`]) as its user, with
//! SCRAM-SHA-256 against the stored verifier. SQL is SQLite's dialect, run by the same engine
//! calls as the HTTP API (`Engine::execute`, `begin`, `commit`, `rollback`), so its limits,
//! PRAGMA rules and statement time limit hold here too, and a transaction opened here is an
//! open transaction for a backtrack's `Force`.
//!
//! The protocol itself is the `pgwire` crate's; this module answers its callbacks:
//! - `connection`: one connection's message loop, TLS, idle timeout and ending on backtrack;
//! - `auth`: who may connect, from the volumes' access;
//! - `query`: the simple query protocol: a string of statements, run one at a time;
//! - `extended`: the extended query protocol: prepared statements, parameters, portals;
//! - `types`: SQLite's values and declared types as PostgreSQL types;
//! - `infer`: the types of expression columns, from their form, before a query runs;
//! - `errors`: the engine's refusals as SQLSTATEs.

mod auth;
mod connection;
mod errors;
mod extended;
mod infer;
mod query;
mod split;
mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::PgWireServerHandlers;
use pgwire::error::PgWireResult;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use connection::tls_acceptor;
pub use pgwire::tokio::TlsAcceptor;

use crate::engine::sql::SERVER_VERSION;
use crate::engine::Engine;

/// How many connections the node and each database take at once.
#[derive(Clone)]
pub struct Limits {
    node: usize,
    per_database: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    node: usize,
    by_volume: HashMap<String, usize>,
}

impl Limits {
    pub fn new(node: usize, per_database: usize) -> Self {
        Limits {
            node,
            per_database,
            open: Arc::default(),
        }
    }

    /// A place for a connection to `volume`, held until dropped; refused with 53300 when the
    /// node or the database has no room.
    pub(crate) fn admit(&self, volume: &str) -> PgWireResult<Slot> {
        let mut open = self.open.lock().unwrap();
        let here = open.by_volume.get(volume).copied().unwrap_or(0);
        if open.node >= self.node || here >= self.per_database {
            return Err(errors::fatal(
                "53300",
                format!(
                    "sorry, too many clients already (at most {} per database and {} per node)",
                    self.per_database, self.node
                ),
            ));
        }
        open.node += 1;
        *open.by_volume.entry(volume.to_string()).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            volume: volume.to_string(),
        })
    }
}

/// A connection's place, given back when it ends.
pub(crate) struct Slot {
    limits: Limits,
    volume: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap();
        open.node -= 1;
        if let Some(n) = open.by_volume.get_mut(&self.volume) {
            *n -= 1;
            if *n == 0 {
                open.by_volume.remove(&self.volume);
            }
        }
    }
}

/// How the node serves the protocol.
#[derive(Clone)]
pub struct Settings {
    pub limits: Limits,
    /// A session idle this long is ended; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// TLS, when the node has a certificate; clients that ask for none are served in plain.
    pub tls: Option<TlsAcceptor>,
}

/// Serves connections from `listener` until `stop` turns true, each on a thread of its own
/// (as each PostgreSQL backend is a process of its own): its statements run on that thread,
/// from the moment its socket is readable to its answer, with no handoff between threads.
/// Connections still open when `stop` turns true end with 57P01; this returns once they have.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    // Each connection's thread holds a sender: once every one is dropped, all have ended.
    let (open, mut ended) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let handlers = Handlers::new(engine.clone(), settings.limits.clone());
                    let started = connection::start(socket, handlers, &settings, &stop, &open);
                    if let Err(e) = started {
                        tracing::warn!(error = %e, "cannot start a PostgreSQL connection");
                    }
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a PostgreSQL connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
    drop(open);
    if tokio::time::timeout(ENDING, ended.recv()).await.is_err() {
        tracing::warn!("PostgreSQL connections still open after {ENDING:?}; stopping anyway");
    }
}

/// How long connections get, once the node stops, to be told so (their statements are
/// interrupted first).
const ENDING: Duration = Duration::from_secs(5);

/// One connection's handlers: its authentication and its session.
struct Handlers {
    engine: Arc<Engine>,
    startup: Arc<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
    session: Arc<query::Session>,
}

impl Handlers {
    fn new(engine: Arc<Engine>, limits: Limits) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        let scram = pgwire::api::auth::sasl::scram::ScramAuth::new(Arc::new(
            auth::Credentials::new(engine.clone(), limits),
        ));
        Handlers {
            engine: engine.clone(),
            startup: Arc::new(SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(scram)),
            session: Arc::new(query::Session::new(engine)),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(errors::Wording)
    }
}
