//! `SourceMeta` against the real testbed: a collection created through the source Milvus's
//! gRPC API must show up in etcd metadata exactly as created, and disappear once dropped.
//! Needs the testbed (`scripts/testbed up`); addresses come from `.testbed/env`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use milvus::proto::common::{KeyValuePair, Status};
use milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use milvus::proto::milvus::{
    CreateCollectionRequest, CreatePartitionRequest, DescribeCollectionRequest,
    DropCollectionRequest,
};
use milvus::proto::schema::{CollectionSchema, DataType, FieldSchema};
use milvus_cdc::model::{vchannel_collection_id, vchannel_pchannel};
use milvus_cdc::source::meta::SourceMeta;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

type Milvus = MilvusServiceClient<Channel>;

struct Testbed {
    milvus_uri: String,
    etcd_endpoints: Vec<String>,
    etcd_root: String,
}

fn testbed() -> Testbed {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.testbed/env");
    let vars: HashMap<String, String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let get = |k: &str, default: &str| vars.get(k).cloned().unwrap_or_else(|| default.to_owned());
    Testbed {
        milvus_uri: get("SOURCE_MILVUS_URI", "http://127.0.0.1:19530"),
        etcd_endpoints: get("ETCD_ENDPOINTS", "127.0.0.1:2379")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        etcd_root: get("SOURCE_ETCD_ROOT", "by-dev"),
    }
}

#[allow(deprecated)] // Milvus 2.3 still fills the deprecated error_code next to code.
fn check(what: &str, status: Option<&Status>) {
    let status = status.unwrap_or_else(|| panic!("{what}: reply without status"));
    assert!(
        status.error_code == 0 && status.code == 0,
        "{what} failed: error_code {} code {} reason {:?}",
        status.error_code,
        status.code,
        status.reason
    );
}

fn field(name: &str, dt: DataType, pk: bool, params: &[(&str, &str)]) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: dt as i32,
        is_primary_key: pk,
        type_params: params
            .iter()
            .map(|(k, v)| KeyValuePair {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn drop_collection(client: &mut Milvus, name: &str) -> Result<Status, tonic::Status> {
    let reply = client
        .drop_collection(DropCollectionRequest {
            collection_name: name.into(),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner())
}

#[tokio::test]
async fn sees_a_collection_created_and_dropped_on_the_source() {
    let tb = testbed();
    let channel = Endpoint::from_shared(tb.milvus_uri.clone())
        .expect("SOURCE_MILVUS_URI is a valid URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to source Milvus {}: {e}", tb.milvus_uri));
    let mut client = MilvusServiceClient::new(channel);
    let meta = SourceMeta::connect(&tb.etcd_endpoints, &tb.etcd_root, None)
        .await
        .expect("connect to source etcd");

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let name = format!("cdc_meta_test_{nanos}");

    let outcome = AssertUnwindSafe(scenario(&mut client, &meta, &name))
        .catch_unwind()
        .await;
    // Clean up whatever happened; dropping a collection that was never created is harmless.
    let dropped = drop_collection(&mut client, &name).await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(id) => {
            let dropped = dropped.unwrap_or_else(|e| panic!("DropCollection {name}: {e}"));
            check("DropCollection", Some(&dropped));
            wait_gone(&meta, id).await;
        }
    }
}

/// Creates the collection and checks what etcd says about it; returns its id.
async fn scenario(client: &mut Milvus, meta: &SourceMeta, name: &str) -> i64 {
    let schema = CollectionSchema {
        name: name.into(),
        description: "source meta test".into(),
        fields: vec![
            field("pk", DataType::Int64, true, &[]),
            field("vec", DataType::FloatVector, false, &[("dim", "8")]),
            field("text", DataType::VarChar, false, &[("max_length", "64")]),
        ],
        ..Default::default()
    };
    let status = client
        .create_collection(CreateCollectionRequest {
            collection_name: name.into(),
            schema: schema.encode_to_vec(),
            shards_num: 2,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateCollection: {e}"))
        .into_inner();
    check("CreateCollection", Some(&status));

    let status = client
        .create_partition(CreatePartitionRequest {
            collection_name: name.into(),
            partition_name: "p_extra".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreatePartition: {e}"))
        .into_inner();
    check("CreatePartition", Some(&status));

    let described = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("DescribeCollection: {e}"))
        .into_inner();
    check("DescribeCollection", described.status.as_ref());
    let id = described.collection_id;

    // Milvus acknowledges both calls only after its meta is in etcd.
    let all = meta.collections().await.expect("collections()");
    let listed = all
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("collection {id} ({name}) not in collections()"));
    let single = meta
        .collection(id)
        .await
        .expect("collection(id)")
        .unwrap_or_else(|| panic!("collection({id}) returned None"));
    assert_eq!(listed, &single, "collections() and collection(id) disagree");
    let named = meta
        .collection_named("", name)
        .await
        .expect("collection_named");
    assert_eq!(named.as_ref(), Some(&single), "found by name as by id");
    assert_eq!(
        meta.collection_named("no_such_db", name)
            .await
            .expect("collection_named"),
        None
    );

    let c = single;
    assert_eq!(c.name, name);
    assert_eq!(c.schema.name, name);
    assert_eq!(c.schema.description, "source meta test");
    assert_eq!((c.db_id, c.db_name.as_str()), (1, "default"));
    let fields: Vec<(&str, i32, bool)> = c
        .schema
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.data_type, f.is_primary_key))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("pk", DataType::Int64 as i32, true),
            ("vec", DataType::FloatVector as i32, false),
            ("text", DataType::VarChar as i32, false),
        ]
    );
    assert!(c.schema.fields.iter().all(|f| f.field_id >= 100));
    assert!(
        c.schema
            .fields
            .windows(2)
            .all(|w| w[0].field_id < w[1].field_id)
    );
    let dim = c.schema.fields[1]
        .type_params
        .iter()
        .find(|p| p.key == "dim");
    assert_eq!(dim.map(|p| p.value.as_str()), Some("8"));

    assert_eq!(c.shards_num, 2);
    assert_eq!(c.virtual_channels.len(), 2, "{:?}", c.virtual_channels);
    assert_eq!(c.physical_channels.len(), 2, "{:?}", c.physical_channels);
    for (v, p) in c.virtual_channels.iter().zip(&c.physical_channels) {
        assert_eq!(vchannel_collection_id(v), Some(id), "{v}");
        assert_eq!(vchannel_pchannel(v), Some(p.as_str()), "{v}");
    }
    assert_eq!(c.start_positions.len(), 2, "{:?}", c.start_positions);
    for (pchannel, position) in &c.start_positions {
        assert!(c.physical_channels.contains(pchannel), "{pchannel}");
        assert!(!position.is_empty(), "empty start position on {pchannel}");
    }

    let partitions: Vec<&str> = c.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(partitions, vec!["_default", "p_extra"]);
    assert!(c.partitions.iter().all(|p| p.created > 0));
    assert!(c.create_time > 0);
    id
}

/// The drop is acknowledged before every key is tombstoned, so poll briefly. A lookup by id
/// may still find it while Milvus keeps it in state dropping (its messages are still read).
async fn wait_gone(meta: &SourceMeta, id: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = meta
            .collections()
            .await
            .expect("collections()")
            .iter()
            .any(|c| c.id == id);
        if !listed {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "collection {id} still visible 15 s after DropCollection"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
