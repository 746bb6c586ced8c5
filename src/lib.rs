//! milvus-cdc: captures every change of a source Milvus and replays it on a target Milvus.
//!
//! Layers, each depending only on those above it (`tests/layering.rs` checks it):
//! - [`model`]: the vocabulary every stage shares;
//! - [`metrics`], [`health`], [`failpoint`]: what every stage records into;
//! - the stages of the data flow: [`source`] reads the source Milvus, [`journal`] stages what
//!   it read, [`apply`] replays the journal on the target;
//! - [`task`]: a task's lifecycle and the threads that run its stages;
//! - [`api`], [`config`] and the CLI: how an operator drives it.
//!
//! ARCHITECTURE.md has the data flow, each invariant with the function that enforces it, and
//! the crash behaviour of each write.

pub mod api;
pub mod apply;
pub mod config;
pub mod failpoint;
pub mod group;
pub mod health;
pub mod journal;
pub mod metrics;
pub mod milvus_client;
pub mod model;
pub mod snapshot;
pub mod source;
pub mod task;
pub mod verify;

/// Protos this project owns (`schema/*.proto`).
pub mod proto {
    pub mod etcd_meta {
        include!(concat!(env!("OUT_DIR"), "/milvus_cdc.etcd_meta.rs"));
    }
    pub mod passthrough {
        include!(concat!(env!("OUT_DIR"), "/milvus_cdc.passthrough.rs"));
    }
}
