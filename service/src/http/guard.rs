//! What a request must be before any route sees it.
//!
//! - Not cross-site. Any web page the user visits can make the browser send requests to the
//!   service on 127.0.0.1, so a request whose `Origin` is not the service's own, or that the
//!   browser marks as coming from another site (`Sec-Fetch-Site`), is refused. (JSON routes
//!   also require a JSON body, which a page cannot send without the browser asking first;
//!   the extractors check that.)
//! - For this service's host. While the service answers without authentication on a loopback
//!   address, a `Host` that is not a loopback name or address is refused: a page on a name
//!   its attacker later points at 127.0.0.1 (DNS rebinding) reaches nothing.
//! - Of a size that can be read: a URL over [`MAX_URI_BYTES`] or headers over
//!   [`MAX_HEADER_BYTES`] get an error body (the server reads heads far larger than these, so
//!   that they do).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub const MAX_URI_BYTES: usize = 16 << 10;
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// How strict the guard is about hosts.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// Only loopback host names are answered: the service listens on a loopback address and
    /// does not authenticate requests.
    pub loopback_hosts_only: bool,
}

pub async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.refusal(&request) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

impl Guard {
    fn refusal(&self, request: &Request) -> Option<ApiError> {
        let uri_len = request.uri().to_string().len();
        if uri_len > MAX_URI_BYTES {
            return Some(ApiError::UriTooLong(format!(
                "The request URL is {uri_len} bytes long; at most {MAX_URI_BYTES} are accepted."
            )));
        }
        let headers = request.headers();
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Some(ApiError::HeadersTooLarge(format!(
                "The request headers take {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted."
            )));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if self.loopback_hosts_only && !host.is_empty() && !is_loopback_host(host) {
            return Some(ApiError::Forbidden(format!(
                "Requests for host {host:?} are refused: without authentication this service \
                 answers only requests for a loopback name or address (localhost, 127.0.0.1, [::1])."
            )));
        }
        cross_site(headers, host).map(ApiError::Forbidden)
    }
}

/// Why a request comes from another site, if it does.
fn cross_site(headers: &HeaderMap, host: &str) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
        if host.is_empty() || !own {
            return Some(format!(
                "Cross-site requests are refused: the request comes from {origin}, not from this \
                 service."
            ));
        }
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site @ ("cross-site" | "same-site")) => Some(format!(
            "Cross-site requests are refused: the browser marks this request {site}."
        )),
        _ => None,
    }
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((address, _port)) => {
                return address
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_loopback())
            }
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "[::1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn only_the_services_own_origin_is_accepted() {
        let with = |origin: &str, site: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ORIGIN, origin.parse().unwrap());
            if let Some(site) = site {
                headers.insert("sec-fetch-site", site.parse().unwrap());
            }
            headers
        };
        assert!(cross_site(&with("http://localhost:8080", None), "localhost:8080").is_none());
        assert!(cross_site(&with("http://localhost:3000", None), "localhost:8080").is_some());
        assert!(cross_site(&with("null", None), "localhost:8080").is_some());
        assert!(cross_site(&with("http://evil.example", None), "localhost:8080").is_some());
        assert!(cross_site(
            &with("http://localhost:8080", Some("same-site")),
            "localhost:8080"
        )
        .is_some());
        assert!(cross_site(&HeaderMap::new(), "localhost:8080").is_none());
    }
}
