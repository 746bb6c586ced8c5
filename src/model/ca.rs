//! A CA file of the appliance's config: the certificates a TLS connection to the target, etcd or
//! the broker trusts. Every stage that connects reads one the same way, so it lives here.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path} is not PEM certificates: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("CA file {path} holds no PEM certificate")]
    Empty { path: PathBuf },
}

/// PEM certificates read from a file, at least one, each of which parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    path: PathBuf,
    pem: Vec<u8>,
}

impl CaFile {
    /// Reads `path` and checks it. TLS clients skip a PEM block they cannot parse, which would
    /// leave them trusting nothing, and every handshake failing with a vague error: this says
    /// what is wrong with which file instead.
    pub fn read(path: &Path) -> Result<Self, CaFileError> {
        let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            cert.map_err(|e| CaFileError::Parse {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(CaFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            pem,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text, as it was read.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let err = CaFile::read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = CaFile::read(&path).unwrap_err();
        assert!(matches!(err, CaFileError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = CaFile::read(&path).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
