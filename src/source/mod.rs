//! Everything about the source Milvus: its etcd metadata, its message queue, decoding and
//! capturing its messages as journal changes.

pub mod capture;
pub mod decode;
pub mod kafka;
pub mod meta;
pub mod mq;
pub mod pulsar;
pub mod reader;
