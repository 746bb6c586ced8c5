//! milvus-cdc: captures every change of a source Milvus and replays it on a target Milvus.
//!
//! The data flow and the exactly-once protocol are described in DESIGN.md; each stage of the
//! flow is one module.

pub mod api;
pub mod apply;
pub mod config;
pub mod failpoint;
pub mod health;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod source;
pub mod task;

/// Protos this project owns (`schema/*.proto`).
pub mod proto {
    pub mod etcd_meta {
        include!(concat!(env!("OUT_DIR"), "/milvus_cdc.etcd_meta.rs"));
    }
    pub mod passthrough {
        include!(concat!(env!("OUT_DIR"), "/milvus_cdc.passthrough.rs"));
    }
}
