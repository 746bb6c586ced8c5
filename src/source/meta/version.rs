//! Which source Milvus versions the decoder was written for. Messages and etcd values change
//! between minor versions (2.4 moved collection and partition keys, and changed some message
//! shapes), so a task is refused, at create, on a source it would misread.

use serde::Deserialize;

/// Major and minor version the decoder reads; any patch release of it.
pub const SUPPORTED: (u32, u32) = (2, 3);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VersionError {
    #[error(
        "no Milvus root coordinator is registered at etcd key {key:?}: is the source Milvus \
         running, and is [source] etcd_root_path its etcd root?"
    )]
    NotRunning { key: String },
    #[error("cannot read the source Milvus version at etcd key {key:?}: {reason}")]
    Unreadable { key: String, reason: String },
    #[error(
        "the source Milvus is version {version}; milvus-cdc reads Milvus {}.{}.x only",
        SUPPORTED.0,
        SUPPORTED.1
    )]
    Unsupported { version: String },
}

/// The version in the root coordinator's session value (`{root}/meta/session/rootcoord`),
/// if it is one the decoder reads.
pub fn supported_version(key: &str, session: Option<&[u8]>) -> Result<String, VersionError> {
    #[derive(Deserialize)]
    struct Session {
        #[serde(rename = "Version")]
        version: String,
    }
    let session = session.ok_or_else(|| VersionError::NotRunning { key: key.into() })?;
    let version = serde_json::from_slice::<Session>(session)
        .map_err(|e| VersionError::Unreadable {
            key: key.into(),
            reason: e.to_string(),
        })?
        .version;
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok());
    if (number(parts.next()), number(parts.next())) == (Some(SUPPORTED.0), Some(SUPPORTED.1)) {
        Ok(version)
    } else {
        Err(VersionError::Unsupported { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(version: &str) -> Vec<u8> {
        format!(r#"{{"ServerID":1,"ServerName":"rootcoord","Version":"{version}"}}"#).into_bytes()
    }

    #[test]
    fn every_2_3_release_is_read_and_any_other_version_is_refused_by_name() {
        for ok in ["2.3.5", "2.3.0", "2.3.21", "v2.3.3"] {
            assert_eq!(supported_version("k", Some(&session(ok))).unwrap(), ok);
        }
        for refused in ["2.4.0", "2.2.16", "3.0.0", "2.30.1", "", "two"] {
            let err = supported_version("k", Some(&session(refused))).unwrap_err();
            assert_eq!(
                err,
                VersionError::Unsupported {
                    version: refused.into()
                }
            );
            assert!(err.to_string().contains("reads Milvus 2.3.x only"), "{err}");
        }
    }

    #[test]
    fn a_missing_or_unreadable_session_is_said_so() {
        let missing = supported_version("by-dev/meta/session/rootcoord", None).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("by-dev/meta/session/rootcoord"),
            "{missing}"
        );
        assert!(matches!(
            supported_version("k", Some(b"{}")),
            Err(VersionError::Unreadable { .. })
        ));
    }
}
