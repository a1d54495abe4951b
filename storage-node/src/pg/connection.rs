//! One client connection, from TLS negotiation to its end: pgwire's message loop, with what a
//! PostgreSQL server does besides answering messages: end an idle session after the node's
//! idle timeout (57P05, or 25P03 inside a transaction), and end every session of a volume as
//! soon as a backtrack of it goes ahead (57P01), even one waiting idle for its next query.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use pgwire::tokio::tokio_rustls::rustls::{self, pki_types};
use pgwire::tokio::tokio_rustls::TlsAcceptor;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::errors::fatal;
use super::query::{terminated, volume_of};
use super::{Handlers, Settings};

/// How long a client has to finish TLS, startup and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS the node offers, from a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use pki_types::pem::PemObject;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let certs = pki_types::CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} holds no PEM certificate: {e:?}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = pki_types::PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| format!("{} holds no PEM private key: {e:?}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    // For clients that open TLS directly (PostgreSQL 17's sslnegotiation=direct).
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one connection on a thread of its own, with a runtime of its own for its socket and
/// timers, so its engine calls (which block on SQLite and on the log's flushes) run where its
/// messages are read, and no other connection or the HTTP API waits behind them.
pub(super) fn start(
    socket: TcpStream,
    handlers: Handlers,
    settings: &Settings,
    stop: &watch::Receiver<bool>,
    open: &mpsc::Sender<()>,
) -> io::Result<()> {
    let socket = socket.into_std()?;
    let (tls, idle_timeout, stop, open) = (
        settings.tls.clone(),
        settings.idle_timeout,
        stop.clone(),
        open.clone(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("pg-connection".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match TcpStream::from_std(socket) {
                    Ok(socket) => serve(socket, tls, handlers, idle_timeout, stop).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                }
            });
            drop(open);
        })?;
    Ok(())
}

/// Serves one connection until it ends.
async fn serve(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Handlers,
    idle_timeout: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let startup = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup);
    let negotiated = tokio::select! {
        _ = &mut startup => return Ok(()),
        negotiated = negotiate_tls(socket, tls) => negotiated?,
    };
    // A client that asked for TLS directly where none is offered.
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    let startup_handler = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    // Tells of backtracks of the connection's volume, once it is known.
    let mut backtracks: Option<watch::Receiver<u64>> = None;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        if !starting && backtracks.is_none() {
            backtracks = volume_of(&handlers.engine, &socket)
                .ok()
                .and_then(|volume| handlers.engine.volume(&volume).ok())
                .map(|sql| sql.sessions_ended());
        }
        let idle = async {
            match idle_timeout {
                Some(limit) if !starting => tokio::time::sleep(limit).await,
                _ => std::future::pending().await,
            }
        };
        let backtracked = async {
            match backtracks.as_mut() {
                Some(ended) => {
                    if ended.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            _ = &mut startup, if starting => return Ok(()),
            () = idle => {
                let why = if handlers.session.in_transaction() {
                    fatal("25P03", "terminating connection due to idle-in-transaction timeout")
                } else {
                    fatal("57P05", "terminating connection due to idle-session timeout")
                };
                return end(&mut socket, why).await;
            }
            () = backtracked => return end(&mut socket, terminated()).await,
            Ok(_) = stop.wait_for(|stop| *stop) => {
                let why = fatal("57P01", "terminating connection due to administrator command");
                return end(&mut socket, why).await;
            }
            message = socket.next() => message,
        };
        let Some(Ok(message)) = message else {
            return Ok(());
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let cancelling = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let handled = process_message(
            message,
            &mut socket,
            startup_handler.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(mut e) = handled {
            error_handler.on_error(&socket, &mut e);
            let fatal = e.is_fatal();
            process_error(&mut socket, e, extended_query).await?;
            if fatal {
                return Ok(());
            }
        }
        if cancelling {
            return Ok(());
        }
    }
}

/// Ends a session with a FATAL error, as a PostgreSQL backend that is told to stop.
async fn end<S>(socket: &mut S, why: PgWireError) -> io::Result<()>
where
    S: futures::Sink<PgWireBackendMessage, Error = io::Error> + Unpin,
{
    let info: ErrorInfo = why.into();
    socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    socket.close().await
}
