//! `MilvusService.Insert` and `Upsert` requests (the same fields) written straight from a
//! call's column parts into the gRPC buffer, sized once: no merged copy of the columns is made
//! and the buffer never grows by reallocation.

use bytes::BufMut;
use milvus::proto::milvus::MutationResult;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder, ProstCodec};

use crate::apply::columns::MergedColumn;
use crate::proto::passthrough::InsertCall;

/// The key of `fields_data` (field 5, length-delimited) in `InsertCall`: each column is written
/// as this key, its length, then its parts.
const FIELDS_DATA_KEY: u8 = (5 << 3) | 2;

pub struct InsertRequest {
    pub db_name: String,
    pub collection_name: String,
    pub partition_name: String,
    pub columns: Vec<MergedColumn>,
    pub num_rows: u32,
}

impl InsertRequest {
    /// Every field but the columns, which follow: protobuf reads fields in any order.
    fn head(&self) -> InsertCall {
        InsertCall {
            db_name: self.db_name.clone(),
            collection_name: self.collection_name.clone(),
            partition_name: self.partition_name.clone(),
            fields_data: Vec::new(),
            num_rows: self.num_rows,
        }
    }

    pub fn encoded_len(&self) -> usize {
        let columns: usize = self
            .columns
            .iter()
            .map(|c| 1 + prost::length_delimiter_len(c.len()) + c.len())
            .sum();
        self.head().encoded_len() + columns
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        self.head().encode_raw(buf);
        for column in &self.columns {
            buf.put_u8(FIELDS_DATA_KEY);
            // Fails only on a buffer that cannot grow; tonic's and a Vec can.
            let _ = prost::encode_length_delimiter(column.len(), buf);
            for part in column.parts() {
                buf.put_slice(part);
            }
        }
    }
}

/// Encodes [`InsertRequest`]s; replies decode as the generated client's would.
#[derive(Default)]
pub struct InsertCodec;

type ReplyCodec = ProstCodec<InsertCall, MutationResult>;

impl Codec for InsertCodec {
    type Encode = InsertRequest;
    type Decode = MutationResult;
    type Encoder = InsertEncoder;
    type Decoder = <ReplyCodec as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        InsertEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReplyCodec::default().decoder()
    }
}

pub struct InsertEncoder;

impl Encoder for InsertEncoder {
    type Item = InsertRequest;
    type Error = Status;

    fn encode(&mut self, item: InsertRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use milvus::proto::schema::{
        DataType, FieldData, LongArray, ScalarField, field_data, scalar_field,
    };

    use super::*;
    use crate::apply::columns::append_columns;
    use crate::model::EncodedColumn;

    fn ids(values: &[i64]) -> MergedColumn {
        let column = FieldData {
            r#type: DataType::Int64 as i32,
            field_name: "id".into(),
            field_id: 100,
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(LongArray {
                    data: values.to_vec(),
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        MergedColumn::from(&EncodedColumn::from(column.encode_to_vec()))
    }

    #[test]
    fn milvus_reads_a_request_of_column_parts_as_the_request_of_the_merged_rows() {
        let mut columns = vec![ids(&[1, 2])];
        assert!(append_columns(&mut columns, &[ids(&[3])]).unwrap());
        assert_eq!(columns[0].parts().len(), 2);
        let request = InsertRequest {
            db_name: "db".into(),
            collection_name: "c".into(),
            partition_name: "p".into(),
            columns,
            num_rows: 3,
        };
        let mut encoded = Vec::new();
        request.encode(&mut encoded);
        assert_eq!(encoded.len(), request.encoded_len());

        let read = milvus::proto::milvus::InsertRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(
            (read.db_name.as_str(), read.collection_name.as_str()),
            ("db", "c")
        );
        assert_eq!((read.partition_name.as_str(), read.num_rows), ("p", 3));
        let Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::LongData(ids)),
            ..
        })) = &read.fields_data[0].field
        else {
            panic!("not an int64 column: {:?}", read.fields_data);
        };
        assert_eq!(ids.data, [1, 2, 3]);
        assert_eq!(read.fields_data.len(), 1);
    }
}
