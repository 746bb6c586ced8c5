//! Who may use the API. Three checks, in this order, on every request:
//!
//! 1. **Host** (421 when refused): the request must be addressed to the appliance, by the
//!    address it listens on, by `localhost` when it listens on loopback, or by a name in
//!    `[api] allowed_hosts`. A page whose name an attacker re-points at 127.0.0.1 (DNS
//!    rebinding) sends its own name here, so it can neither drive the API nor read its answers.
//! 2. **Origin** (403): a browser names the page that sent a request in `Origin` and
//!    `Sec-Fetch-Site`. Only pages served by the appliance itself (the status page) may call
//!    it: a cross-site form post (`text/plain`, no preflight) is refused before it is read.
//!    Requests without these headers (curl, scripts, the CLI) are not browser-borne and pass.
//! 3. **Token** (401), when one is set, on every route but the public ones: compared in
//!    constant time; a failure is logged with the peer address.
//!
//! Every refusal is counted in `/metrics` (`milvus_cdc_api_requests_refused_total{reason}`).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::ApiError;
use crate::metrics::METRICS;
use crate::model::Secret;

/// The names a request may be addressed to, as `Host` (or HTTP/2's `:authority`) gives them.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen: SocketAddr,
    /// Lower-case `name` (any port) or `name:port`.
    extra: Vec<String>,
}

impl AllowedHosts {
    pub fn new(listen: SocketAddr, extra: &[String]) -> Self {
        Self {
            listen,
            extra: extra
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `authority` (`host[:port]`) names this appliance.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(parsed) = authority.parse::<Authority>() else {
            return false;
        };
        let host = parsed.host().to_ascii_lowercase();
        let port = parsed.port_u16();
        let listed = self
            .extra
            .iter()
            .any(|entry| *entry == host || port.is_some_and(|p| *entry == format!("{host}:{p}")));
        if listed {
            return true;
        }
        // A browser leaves the scheme's default port out of `Host`.
        let port_matches = match port {
            Some(port) => port == self.listen.port(),
            None => matches!(self.listen.port(), 80 | 443),
        };
        let ip = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .parse::<IpAddr>()
            .ok();
        let listen_ip = self.listen.ip();
        let named = match ip {
            // A rebound page always sends a name, never an address: on a wildcard listen
            // address, any address of this machine may be used to reach it.
            Some(ip) => ip == listen_ip || listen_ip.is_unspecified(),
            None => host == "localhost" && (listen_ip.is_loopback() || listen_ip.is_unspecified()),
        };
        named && port_matches
    }
}

/// What the API requires of a request.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Option<Secret>,
    pub hosts: AllowedHosts,
}

impl Access {
    /// No token; addressed to `listen` (or `localhost` on loopback) only.
    pub fn local(listen: SocketAddr) -> Self {
        Self {
            token: None,
            hosts: AllowedHosts::new(listen, &[]),
        }
    }
}

fn refuse(status: StatusCode, reason: &'static str, message: String) -> Response {
    METRICS.api_refused(reason);
    ApiError { status, message }.into_response()
}

fn peer(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |info| info.0.to_string())
}

/// Checks 1 and 2 of the module's list.
pub async fn same_origin_only(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // A Host that is not text names no address of this appliance: refused as any other.
    let host = match headers.get(header::HOST) {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes())),
        None => request.uri().authority().map(|a| Cow::Borrowed(a.as_str())),
    };
    if let Some(host) = host
        && !hosts.allows(&host)
    {
        warn!(peer = %peer(&request), ?host, "refused a request addressed to a name that is not this appliance's");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "host",
            format!(
                "Host {host:?} is not this appliance's address: add it to [api] allowed_hosts if clients use that name"
            ),
        );
    }
    if let Some(why) = foreign_page(headers, &hosts) {
        warn!(peer = %peer(&request), why, "refused a request sent by another site's page");
        return refuse(StatusCode::FORBIDDEN, "origin", why);
    }
    next.run(request).await
}

/// Why the request comes from a page the appliance did not serve; `None` when it did, or when
/// no browser sent it.
fn foreign_page(headers: &HeaderMap, hosts: &AllowedHosts) -> Option<String> {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site @ ("cross-site" | "same-site")) = fetch_site {
        return Some(format!(
            "requests from another site's pages are refused (Sec-Fetch-Site: {site})"
        ));
    }
    let origin = headers.get(header::ORIGIN)?;
    let own = origin
        .to_str()
        .ok()
        .and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        })
        .is_some_and(|authority| hosts.allows(authority));
    (!own).then(|| {
        format!(
            "requests from another site's pages are refused (Origin: {})",
            String::from_utf8_lossy(origin.as_bytes())
        )
    })
}

/// Check 3 of the module's list.
pub async fn require_token(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(p) = presented
        && bool::from(p.as_bytes().ct_eq(token.expose().as_bytes()))
    {
        return next.run(request).await;
    }
    warn!(
        peer = %peer(&request),
        method = %request.method(),
        path = request.uri().path(),
        presented = presented.is_some(),
        "refused an API request with a missing or wrong bearer token"
    );
    let mut response = refuse(
        StatusCode::UNAUTHORIZED,
        "token",
        "missing or wrong bearer token (Authorization: Bearer <token>)".into(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(listen.parse().unwrap(), &extra)
    }

    #[test]
    fn on_loopback_the_listen_address_and_localhost_with_its_port_are_this_appliance() {
        let h = hosts("127.0.0.1:8444", &[]);
        for ok in ["127.0.0.1:8444", "localhost:8444", "LocalHost:8444"] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "attacker.example:8444",
            "attacker.example",
            "localhost:9999",
            "localhost",
            "127.0.0.2:8444",
            "localhost.attacker.example:8444",
            "",
            "a b:8444",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[test]
    fn ipv6_loopback_is_bracketed() {
        let h = hosts("[::1]:8444", &[]);
        assert!(h.allows("[::1]:8444"));
        assert!(h.allows("localhost:8444"));
        assert!(!h.allows("[::2]:8444"));
    }

    #[test]
    fn a_wildcard_listener_takes_any_address_but_only_listed_names() {
        let h = hosts("0.0.0.0:8444", &["cdc.internal", "proxy.example:443"]);
        assert!(h.allows("10.1.2.3:8444"));
        assert!(h.allows("cdc.internal:8444"), "a listed name, any port");
        assert!(h.allows("cdc.internal"));
        assert!(h.allows("proxy.example:443"));
        assert!(!h.allows("proxy.example:8444"), "listed with another port");
        assert!(!h.allows("attacker.example:8444"));
        assert!(!h.allows("10.1.2.3:9999"));
    }

    #[test]
    fn a_default_port_may_be_left_out_only_when_it_is_the_listen_port() {
        assert!(hosts("127.0.0.1:80", &[]).allows("localhost"));
        assert!(!hosts("127.0.0.1:8444", &[]).allows("127.0.0.1"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_pages_this_appliance_served_pass_the_origin_check() {
        let h = hosts("127.0.0.1:8444", &[]);
        assert_eq!(
            foreign_page(&headers(&[]), &h),
            None,
            "curl sends no Origin"
        );
        for own in [
            &[("origin", "http://127.0.0.1:8444")][..],
            &[
                ("origin", "http://localhost:8444"),
                ("sec-fetch-site", "same-origin"),
            ],
            &[("sec-fetch-site", "none")],
        ] {
            assert_eq!(foreign_page(&headers(own), &h), None, "{own:?}");
        }
        for foreign in [
            &[("origin", "http://evil.example")][..],
            &[("origin", "null")],
            &[("origin", "http://localhost:3000")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("origin", "http://127.0.0.1:8444"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let why = foreign_page(&headers(foreign), &h).expect("refused");
            assert!(why.contains("another site"), "{why}");
        }
    }
}
