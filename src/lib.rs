//! milvus-cdc: captures every change of a source Milvus and replays it on a target Milvus.
//!
//! The data flow and the exactly-once protocol are described in the repository's README and
//! `schema/`; each stage of the flow is one module.

pub mod api;
pub mod config;
