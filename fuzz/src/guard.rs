//! `api_headers`: the request guard's headers through the real router.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};

use super::{GUARDED_TOKEN, LISTED_HOST, LISTEN, check_reply, send, server};

/// The calls the target picks from: (method, path, body, whether the route is public).
const ROUTES: [(Method, &str, &str, bool); 4] = [
    (Method::POST, "/v1/tasks/fuzz-task/pause", "", false),
    (Method::GET, "/v1/tasks", "", false),
    (Method::POST, "/cdc", "{}", false),
    (Method::GET, "/healthz", "", true),
];

/// The input is a flags byte and then `Host`, `Origin`, `Sec-Fetch-Site` and `Authorization`
/// values separated by newlines (which no header value holds). Flags: bits 0-1 pick the route,
/// bit 2 the router with a token and a listed name, bits 3-6 which headers are sent.
///
/// Properties: never a panic; every refusal is the JSON error body; a request a browser sends
/// from another site's page (a foreign `Host` after DNS rebinding, a foreign `Origin`,
/// `Sec-Fetch-Site: cross-site` or `same-site`) is refused before any route, as is a `Host`
/// that is not text; with a token, no
/// request without it reaches a guarded route; a request from the appliance's own page with the
/// token is never refused.
pub fn api_headers(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let (method, path, body, public) = &ROUTES[usize::from(flags & 3)];
    let guarded = flags & 4 != 0;
    let mut fields = rest.split(|b| *b == b'\n');
    let names = [
        header::HOST,
        header::ORIGIN,
        header::HeaderName::from_static("sec-fetch-site"),
        header::AUTHORIZATION,
    ];
    let mut builder = Request::builder().method(method.clone()).uri(*path);
    // What was sent of each, as text when it is UTF-8 (None: not sent).
    let mut sent: [Option<Option<&str>>; 4] = [None; 4];
    let mut sent_host: Option<&[u8]> = None;
    for (i, name) in names.into_iter().enumerate() {
        let field = fields.next().unwrap_or_default();
        let Ok(value) = HeaderValue::from_bytes(field) else {
            continue;
        };
        if flags & (8 << i) == 0 {
            continue;
        }
        sent[i] = Some(std::str::from_utf8(field).ok());
        if i == 0 {
            sent_host = Some(field);
        }
        builder = builder.header(name, value);
    }
    let request = builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(*body))
        .unwrap_or_else(|e| panic!("the harness built a bad request: {e}"));
    let server = server();
    let reply = send(
        if guarded {
            &server.guarded
        } else {
            &server.router
        },
        request,
    );
    let [host, origin, fetch_site, authorization] = sent;
    let what = format!("{path} (guarded: {guarded}) with {sent:?}");
    let refused = [
        StatusCode::MISDIRECTED_REQUEST,
        StatusCode::FORBIDDEN,
        StatusCode::UNAUTHORIZED,
    ]
    .contains(&reply.status);
    if refused || !*public {
        check_reply(&what, &reply);
    }
    let foreign_host = host
        .flatten()
        .is_some_and(|h| foreign_authority(h, guarded));
    // A Host that is not text (a browser never sends one) is no address of the appliance.
    let not_text =
        sent_host.is_some_and(|h| h.iter().any(|b| !(b' '..=b'~').contains(b) && *b != b'\t'));
    if foreign_host || not_text {
        assert_eq!(
            reply.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{what}: a foreign Host"
        );
    }
    let foreign_page = origin.flatten().is_some_and(|o| foreign_origin(o, guarded))
        || matches!(fetch_site, Some(Some("cross-site" | "same-site")));
    if foreign_page {
        assert!(
            [StatusCode::MISDIRECTED_REQUEST, StatusCode::FORBIDDEN].contains(&reply.status),
            "{what}: another site's page got {}",
            reply.status
        );
    }
    let token = format!("Bearer {GUARDED_TOKEN}");
    let has_token = authorization.flatten() == Some(token.as_str());
    if guarded && !*public && !has_token {
        assert!(refused, "{what}: reached a guarded route without the token");
    }
    let own = host.is_none_or(|h| h.is_some_and(|h| own_authority(h, guarded)))
        && origin.is_none_or(|o| {
            o.and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|a| own_authority(a, guarded))
        })
        && fetch_site.is_none_or(|s| matches!(s, Some("same-origin" | "none")));
    if own && (has_token || !guarded || *public) {
        assert!(!refused, "{what}: the appliance's own page was refused");
    }
}

/// The names this appliance answers to, exactly as a browser writes them.
fn own_authority(authority: &str, guarded: bool) -> bool {
    let (_, port) = LISTEN;
    let own = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    own.contains(&authority.to_owned())
        || (guarded && (authority == LISTED_HOST || authority == format!("{LISTED_HOST}:{port}")))
}

/// Whether a browser could send `authority` (`host[:port]`, a name or an IPv4 address) and it
/// names something else than this appliance: another host, or another port of this one.
/// Authorities no browser sends (user info, IPv6, odd characters) are not judged.
fn foreign_authority(authority: &str, guarded: bool) -> bool {
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => return false,
            }
        }
        _ => (authority.as_str(), None),
    };
    let browser_sendable = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !browser_sendable || (guarded && host == LISTED_HOST) {
        return false;
    }
    let this_machine = host == "localhost" || host == "127.0.0.1";
    !this_machine || port != Some(LISTEN.1)
}

/// Whether `origin` is a page a browser could name that this appliance did not serve.
fn foreign_origin(origin: &str, guarded: bool) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b));
    if !scheme_ok {
        return false;
    }
    !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        || foreign_authority(authority, guarded)
}
