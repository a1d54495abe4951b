//! The HTTP/1.1 server under the router (axum's `serve` does not let the request head's limit
//! be set). Oversized heads get an error body a client can read, never a bare status:
//!
//! - A request line longer than [`MAX_URI_BYTES`]: the `http` crate cannot even hold a URL
//!   past 64 KiB, so hyper would answer on its own, with an empty 414 (or 431 past its read
//!   limit). The first request line of each connection is therefore read here, before hyper
//!   sees the connection, and a too-long one is answered here, in the API's error form.
//! - Headers larger than the guard's limit (`guard.rs`): hyper reads heads up to
//!   [`MAX_HEAD_BYTES`], far more, so the guard gets to answer them.
//!
//! Shutdown is graceful: stop accepting, let the connections finish their requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::guard::MAX_URI_BYTES;
use super::is_data_api;
use crate::error::ApiError;

/// The most bytes of request line and headers read before hyper refuses a request on its own.
pub const MAX_HEAD_BYTES: usize = 4 << 20;
/// How long a client may take to send a request's head (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A request line may be this much longer than its URL: method, spaces, version, CRLF.
const REQUEST_LINE_SLACK: usize = 32;

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Replies go out as written: without this, a reply written in two parts waits for
        // the client's acknowledgement of the first (Nagle's algorithm).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let http = http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(stream) = first_request_line(stream).await else {
                return;
            };
            let connection = http.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reads the connection's first request line. A normal one is handed on with the stream; a
/// too-long one is answered here (and `None` returned).
async fn first_request_line(mut stream: TcpStream) -> Option<Prefixed> {
    let limit = MAX_URI_BYTES + REQUEST_LINE_SLACK;
    let mut read = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 << 10];
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    while !read.contains(&b'\n') && read.len() <= limit {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        read.extend_from_slice(&chunk[..n]);
    }
    let line_len = read.iter().position(|b| *b == b'\n').unwrap_or(read.len());
    if line_len <= limit {
        return Some(Prefixed {
            prefix: read,
            at: 0,
            stream,
        });
    }
    refuse_long_url(stream, &read, &mut chunk, deadline).await;
    None
}

/// Answers a request whose URL is too long, after reading (and dropping) the rest of its
/// head, so that the client is reading when the answer comes.
async fn refuse_long_url(
    mut stream: TcpStream,
    read: &[u8],
    chunk: &mut [u8],
    deadline: tokio::time::Instant,
) {
    let path = std::str::from_utf8(&read[..read.len().min(256)])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .map(|target| target.split('?').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let mut tail: Vec<u8> = read[read.len().saturating_sub(4)..].to_vec();
    let mut drained = read.len();
    while !tail.windows(4).any(|w| w == b"\r\n\r\n") && drained < MAX_HEAD_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                drained += n;
                tail.extend_from_slice(&chunk[..n]);
                tail.drain(..tail.len().saturating_sub(4));
            }
            _ => break,
        }
    }
    let error = ApiError::UriTooLong(format!(
        "The request URL is longer than {MAX_URI_BYTES} bytes, the most this service reads."
    ));
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, error_type, body) = if is_data_api(&path) {
        let body = serde_json::json!({ "message": error.message() });
        (414, Some("BadRequestException"), body.to_string())
    } else {
        let body = serde_json::to_string(&error.body(&request_id)).unwrap_or_default();
        (error.parts().1.as_u16(), None, body)
    };
    let mut response = format!(
        "HTTP/1.1 {status} URI Too Long\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-amzn-requestid: {request_id}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(error_type) = error_type {
        response.push_str(&format!("x-amzn-errortype: {error_type}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A connection whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
