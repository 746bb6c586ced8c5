//! Any base64 MsgPosition, and the redelivery rule over any Pulsar and Kafka ids: a message
//! is never admitted twice, and the order of positions agrees with what they admit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| milvus_cdc_fuzz::mq_position(data));
