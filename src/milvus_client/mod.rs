//! A client of a Milvus's public MilvusService (the target's, and the source's for reading
//! rows): the uri accepted, TLS, the `authorization` header, and reading rows by key range
//! (`query`). Every part that talks to a Milvus connects here, so they accept and refuse the
//! same settings.

pub mod fence;
mod query;
mod rows;

pub use query::{ReadError, RowReader, Seen, Shape};
pub use rows::{RangeDiff, Row, RowsError, diff, keys, rows};

use std::path::Path;
use std::time::Duration;

use milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use tokio::runtime::Handle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use milvus::proto::common::{ErrorCode, Status};

use crate::model::CaFile;

/// Adds the `authorization` header Milvus expects when it has authentication on.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

pub type Service = InterceptedService<Channel, Auth>;
pub type Client = MilvusServiceClient<Service>;

pub const MAX_MESSAGE: usize = 256 << 20;

/// Refuses what [`connect`] would refuse, without connecting, so a task with an unusable
/// Milvus is rejected when it is created rather than failing later. `role` names the Milvus in
/// errors ("target", "source").
pub fn check(role: &str, uri: &str, token: &str, ca_file: Option<&Path>) -> Result<(), String> {
    endpoint(role, uri, ca_file)?;
    auth_header(token)?;
    Ok(())
}

/// An `https://` Milvus is trusted if it chains to `ca_file` when the appliance's config names one, else to
/// the system's roots (tonic's default for `https://`).
fn endpoint(role: &str, uri: &str, ca_file: Option<&Path>) -> Result<Endpoint, String> {
    let endpoint = plain_endpoint(role, uri)?;
    match ca_file {
        Some(path) if uri.starts_with("https://") => {
            let ca = CaFile::read(path).map_err(|e| format!("{role} {uri}: {e}"))?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
            endpoint
                .tls_config(tls)
                .map_err(|e| format!("{role} {uri}: TLS with {}: {e}", path.display()))
        }
        _ => Ok(endpoint),
    }
}

/// Accepts `http(s)://host[:port][/]`, as the API documents it (`ConnectParam::uri`).
pub fn plain_endpoint(role: &str, uri: &str) -> Result<Endpoint, String> {
    let expected = "expected http://host:port or https://host:port";
    let invalid = |why: &dyn std::fmt::Display| format!("invalid {role} uri {uri:?}: {why}");
    let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| invalid(&e))?;
    let parsed = endpoint.uri();
    // The authority must be exactly `host` or `host:port`, with the port in plain digits: the
    // parser reads `h:+1` as port 1, `h:1x` as host `h` without a port, and drops `user@`.
    let authority = parsed.authority().map(|a| a.as_str()).unwrap_or_default();
    let authority_plain = parsed.host().is_some_and(|host| {
        let host_ok = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
            || (!host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        let port_ok = match authority.strip_prefix(host) {
            Some("") => true,
            // Written as the number it is: no sign, no leading zero, at most 65535.
            Some(port) => port.strip_prefix(':').is_some_and(|digits| {
                digits
                    .parse::<u16>()
                    .is_ok_and(|number| number.to_string() == digits)
            }),
            None => false,
        };
        host_ok && port_ok
    });
    // In lower case, as the documented pattern has it: the parser takes `HTTP://` too.
    let plain = (uri.starts_with("http://") || uri.starts_with("https://"))
        && authority_plain
        && matches!(parsed.path(), "" | "/")
        && parsed.query().is_none()
        && !uri.contains('#');
    if plain {
        Ok(endpoint)
    } else {
        Err(invalid(&expected))
    }
}

/// The `authorization` value Milvus expects: base64 of `user:password`; none for no token.
fn auth_header(token: &str) -> Result<Option<MetadataValue<Ascii>>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(token);
    encoded
        .parse()
        .map(Some)
        .map_err(|_| "the token is not valid header text".to_owned())
}

/// A client of the Milvus at `uri`. `token` is `user:password` (or an API key), as the
/// reference CDC's `milvus_connect_param`; `ca_file` is what an `https://` Milvus's
/// certificate must chain to (see [`endpoint`]). It connects lazily: an unreachable Milvus
/// surfaces as an error of the first call.
pub fn connect(
    role: &str,
    uri: &str,
    token: Option<&str>,
    ca_file: Option<&Path>,
    runtime: &Handle,
) -> Result<(Service, Client), String> {
    let endpoint = endpoint(role, uri, ca_file)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120));
    let auth = auth_header(token.unwrap_or_default())?;
    let channel = {
        let _context = runtime.enter();
        endpoint.connect_lazy()
    };
    let service = InterceptedService::new(channel, Auth(auth));
    let client = MilvusServiceClient::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    Ok((service, client))
}

/// Whether a status Milvus answered inside a successful RPC says success. Milvus 2.3 says
/// failure in `error_code` (deprecated upstream), later versions in `code`: both are read.
#[allow(deprecated)]
pub fn succeeded(status: &Status) -> bool {
    status.error_code == ErrorCode::Success as i32 && status.code == 0
}

/// `reason (code N)` of a status that is not a success; None for success or no status.
pub fn failure(status: Option<&Status>) -> Option<String> {
    status
        .filter(|s| !succeeded(s))
        .map(|s| format!("{} (code {})", s.reason, s.code))
}
