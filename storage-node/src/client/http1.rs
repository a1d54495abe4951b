//! HTTP/1.1 to one node over kept-alive connections, each driven by the call that uses it.
//!
//! A general client (reqwest, hyper-util's pool) gives every connection a task of its own: a
//! call hands its request to that task and is woken with the answer, and on a multi-threaded
//! runtime each handoff wakes another thread. For the control plane's SQL calls that was
//! most of a call's cost (measured: a Data API point query took twice as long through it).
//! Here the call polls its connection itself, from the request's first byte to the answer's
//! last, then gives it back. What the node does not support is not here: TLS, HTTP/2,
//! redirects, proxies.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::cause_chain;

/// Connections kept for later calls, per node.
const KEPT: usize = 64;
/// A kept connection unused this long is closed rather than reused: the node may be about to
/// close it from its side.
const KEPT_FOR: Duration = Duration::from_secs(20);

type Io = TokioIo<TcpStream>;

struct Conn {
    send: SendRequest<Full<Bytes>>,
    io: Connection<Io, Full<Bytes>>,
    since: Instant,
}

/// A node's address and its kept connections.
pub(super) struct Connections {
    /// `host:port`, what the calls connect to and name in `Host`.
    authority: String,
    /// Prefixed to every path (the base URL's own path, usually empty).
    prefix: String,
    /// Why the base URL cannot be called, if it cannot.
    invalid: Option<String>,
    kept: Mutex<Vec<Conn>>,
}

/// A call's answer: its status and its whole body.
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Connections {
    /// For a base URL `http://host[:port][/prefix]`.
    pub(super) fn new(base: &str) -> Connections {
        let (authority, prefix, invalid) = match base.strip_prefix("http://") {
            Some(rest) => {
                let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let authority = if authority.rsplit_once(':').is_some_and(|(_, port)| {
                    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                }) {
                    authority.to_string()
                } else {
                    format!("{authority}:80")
                };
                let invalid = authority
                    .starts_with(':')
                    .then(|| format!("{base:?} names no host"));
                (authority, prefix.trim_end_matches('/').to_string(), invalid)
            }
            None => (
                String::new(),
                String::new(),
                Some(format!("{base:?} is not an http:// URL")),
            ),
        };
        Connections {
            authority,
            prefix,
            invalid,
            kept: Mutex::new(Vec::new()),
        }
    }

    /// Sends one request and reads its whole answer, within `timeout` (connecting within
    /// `connect_timeout` of it). An error is the transport's, in one line.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Answer, String> {
        if let Some(why) = &self.invalid {
            return Err(why.clone());
        }
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority)
            .header(
                AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| e.to_string())?,
            );
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let attempts = async {
            let mut request = request;
            // A kept connection the node closed meanwhile gives the request back unsent: it
            // goes on a new one then (at most once more, since a new one was just opened).
            for fresh in [false, true] {
                let mut conn = match self.kept_conn().filter(|_| !fresh) {
                    Some(conn) => conn,
                    None => self.connect(connect_timeout).await?,
                };
                match exchange(&mut conn, request).await {
                    Ok(answer) => {
                        self.keep(conn);
                        return Ok(answer);
                    }
                    Err(Failure::Unsent(back)) => request = *back,
                    Err(Failure::Failed(why)) => return Err(why),
                }
            }
            Err("the node closed each connection before the request was sent".to_string())
        };
        tokio::time::timeout(timeout, attempts)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    }

    /// A kept connection that is still open, if there is one.
    fn kept_conn(&self) -> Option<Conn> {
        let mut kept = self.kept.lock().unwrap();
        while let Some(mut conn) = kept.pop() {
            // Polling the connection once reads what the node sent meanwhile: a close ends it.
            let ended = (&mut conn.io).now_or_never().is_some();
            if !ended && conn.since.elapsed() < KEPT_FOR && conn.send.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn keep(&self, mut conn: Conn) {
        if !conn.send.is_ready() {
            return;
        }
        conn.since = Instant::now();
        let mut kept = self.kept.lock().unwrap();
        if kept.len() < KEPT {
            kept.push(conn);
        }
    }

    async fn connect(&self, within: Duration) -> Result<Conn, String> {
        let connected = tokio::time::timeout(within, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| format!("cannot connect to {} within {within:?}", self.authority))?
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        // Requests and answers are small and waited for: never hold one back.
        connected.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, io) = http1::handshake(TokioIo::new(connected))
            .await
            .map_err(|e| cause_chain(&e))?;
        Ok(Conn {
            send,
            io,
            since: Instant::now(),
        })
    }
}

enum Failure {
    /// The request was not sent (the connection had closed): it can go on another.
    Unsent(Box<Request<Full<Bytes>>>),
    Failed(String),
}

/// One request and its answer on `conn`, polling the connection meanwhile.
async fn exchange(conn: &mut Conn, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
    let Conn { send, io, .. } = conn;
    let response = match alongside(io, send.try_send_request(request)).await? {
        Ok(response) => response,
        Err(mut e) => {
            return Err(match e.take_message() {
                Some(request) if e.error().is_canceled() => Failure::Unsent(Box::new(request)),
                _ => Failure::Failed(cause_chain(e.error())),
            })
        }
    };
    let status = response.status();
    let body = alongside(io, response.into_body().collect())
        .await?
        .map_err(|e| Failure::Failed(cause_chain(&e)))?
        .to_bytes();
    Ok(Answer { status, body })
}

/// Runs `work` while polling the connection that carries it. If the connection ends first:
/// what `work` came to by then, if anything (an answer the node sent just before it closed,
/// or the request given back unsent), else why it ended.
async fn alongside<F: Future>(
    io: &mut Connection<Io, Full<Bytes>>,
    work: F,
) -> Result<F::Output, Failure> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        done = &mut work => Ok(done),
        ended = io => match work.as_mut().now_or_never() {
            Some(done) => Ok(done),
            None => Err(Failure::Failed(match ended {
                Err(e) => cause_chain(&e),
                Ok(()) => "the node closed the connection before answering".into(),
            })),
        },
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("authority", &self.authority)
            .field("kept", &self.kept.lock().map(|k| k.len()).unwrap_or(0))
            .finish()
    }
}

/// Shared by every clone of a node's client.
pub(super) type Shared = Arc<Connections>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

    /// A server that reads one request per connection, then answers it with `answer` (or
    /// not at all) and closes the connection a moment later, though its answer said nothing
    /// of closing.
    async fn server(answer: Option<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Some(answer) => {
                        socket.write_all(answer).await.unwrap();
                        // Closed once the client has taken the answer and kept the connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            }
        });
        (base, requests)
    }

    async fn get(connections: &Connections) -> Result<Answer, String> {
        let second = Duration::from_secs(1);
        connections
            .call(Method::GET, "/healthz", "t", None, second, second)
            .await
    }

    #[tokio::test]
    async fn a_connection_the_node_closed_is_not_used_again() {
        let (base, requests) = server(Some(OK)).await;
        let connections = Connections::new(&base);
        for _ in 0..3 {
            let answer = get(&connections).await.unwrap();
            assert_eq!(
                (answer.status, &answer.body[..]),
                (StatusCode::OK, &b"{}"[..])
            );
            // The server has closed it by now.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_the_node_took_and_never_answered_is_not_sent_again() {
        let (base, requests) = server(Some(b"")).await;
        let e = get(&Connections::new(&base)).await.err().unwrap();
        assert!(e.contains("closed"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        let (base, requests) = server(None).await;
        let e = get(&Connections::new(&base)).await.err().unwrap();
        assert!(e.contains("no answer within 1s"), "{e}");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn base_urls() {
        let c = Connections::new("http://node-0.nodes:7000/prefix/");
        assert_eq!(
            (c.authority.as_str(), c.prefix.as_str()),
            ("node-0.nodes:7000", "/prefix")
        );
        assert_eq!(Connections::new("http://node").authority, "node:80");
        assert!(Connections::new("https://node:7000").invalid.is_some());
        assert!(Connections::new("http://:7000").invalid.is_some());
    }
}
