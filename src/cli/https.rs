//! HTTPS for the API: the certificate and key of `[api] tls_cert_file` / `tls_key_file`, read
//! and checked before the server listens, so a bad file stops it with the file's name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not PEM: {reason}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("certificate {cert} and key {key} cannot serve TLS: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

const CERT: &str = "[api] tls_cert_file";
const KEY: &str = "[api] tls_key_file";

/// A TLS server configuration for the API, from PEM files: the certificate chain (the server's
/// own first) and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, HttpsError> {
    fn parse(what: &'static str, path: &Path) -> impl FnOnce(pem::Error) -> HttpsError {
        let path = path.to_owned();
        move |e| HttpsError::Parse {
            what,
            path,
            reason: e.to_string(),
        }
    }
    let cert_pem = read(CERT, cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(parse(CERT, cert))?;
    if chain.is_empty() {
        return Err(HttpsError::Empty {
            what: CERT,
            path: cert.to_owned(),
            expected: "certificate",
        });
    }
    let key_pem = read(KEY, key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => HttpsError::Empty {
            what: KEY,
            path: key.to_owned(),
            expected: "private key",
        },
        other => parse(KEY, key)(other),
    })?;
    let mismatch = |e: rustls::Error| HttpsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    };
    // The provider named explicitly: the process has ring only, but rustls would refuse to
    // guess should another crate ever bring a second one in.
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(mismatch)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(mismatch)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path).map_err(|source| HttpsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_is_named() {
        let err =
            server_config(Path::new("/nonexistent/cert.pem"), Path::new("/k.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        assert!(err.to_string().contains("tls_cert_file"), "{err}");
    }

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "hello\n").unwrap();
        std::fs::write(&key, "hello\n").unwrap();
        let err = server_config(&cert, &key).unwrap_err();
        assert!(matches!(err, HttpsError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
