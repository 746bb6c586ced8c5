//! Sending a partition's pages to the target, side by side, and what the target may have of
//! them after a crash.

use futures::stream::{FuturesOrdered, StreamExt};
use milvus::proto::milvus::{InsertRequest, UpsertRequest};
use milvus::proto::schema::FieldData;

use super::{Copier, CopyError};
use crate::milvus_client::failure;
use crate::model::{CollectionRef, CopyState, PrimaryKey};

/// Pages on their way to the target at once: the next page is read, and sent, while the ones
/// before it are still being sent, so the source's reads and the target's writes overlap.
pub(super) const PAGES_IN_FLIGHT: usize = 2;

/// What the target may have of the partition being copied, past the progress: rows of pages
/// sent before the copy stopped, which go again as upserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Doubt {
    None,
    /// In the first page after the progress (copies recorded before pages went side by side).
    NextPage,
    /// In the pages that begin at or below this key.
    Through(PrimaryKey),
}

impl Doubt {
    pub(super) fn of(state: &CopyState) -> Self {
        match state {
            CopyState::Copying {
                in_doubt: true,
                doubt_through: Some(key),
                ..
            } => Self::Through(key.clone()),
            CopyState::Copying { in_doubt: true, .. } => Self::NextPage,
            _ => Self::None,
        }
    }

    /// Whether the page after key `after` (None: the partition's first) may be on the target;
    /// asked of each page in turn.
    pub(super) fn covers(&mut self, after: Option<&PrimaryKey>) -> bool {
        let covered = match &*self {
            Self::None => false,
            Self::NextPage => true,
            Self::Through(key) => after.is_none_or(|after| after < key),
        };
        if !covered || *self == Self::NextPage {
            *self = Self::None;
        }
        covered
    }

    /// The key through which the target may have rows once the pages through `last` are sent.
    pub(super) fn through(&self, last: &PrimaryKey) -> PrimaryKey {
        match self {
            Self::Through(key) if key > last => key.clone(),
            _ => last.clone(),
        }
    }
}

/// Where a copy's pages go.
pub(super) struct Destination {
    pub(super) collection: CollectionRef,
    pub(super) dynamic_field: Option<String>,
    pub(super) partition_key: bool,
}

/// The pages of a partition the target acknowledged since the progress was last committed.
pub(super) struct Acknowledged {
    /// The last key of the newest of them (pages are acknowledged in the order they were read,
    /// which is key order).
    pub(super) after: Option<PrimaryKey>,
    pub(super) rows: u64,
}

/// The pages of a partition on their way to the target, each answering its rows and last key.
pub(super) struct InFlight<F: Future> {
    pages: FuturesOrdered<F>,
    pub(super) acknowledged: Acknowledged,
}

impl<F: Future<Output = Result<(usize, PrimaryKey), CopyError>>> InFlight<F> {
    /// None yet, the progress after key `after`.
    pub(super) fn after(after: Option<PrimaryKey>) -> Self {
        Self {
            pages: FuturesOrdered::new(),
            acknowledged: Acknowledged { after, rows: 0 },
        }
    }

    pub(super) fn any(&self) -> bool {
        !self.pages.is_empty()
    }

    pub(super) fn push(&mut self, page: F) {
        self.pages.push_back(page);
    }

    /// Waits for the oldest page to be acknowledged (at once when none is in flight).
    pub(super) async fn next(&mut self) -> Result<(), CopyError> {
        if let Some(page) = self.pages.next().await {
            let (rows, last) = page?;
            self.acknowledged.rows += rows as u64;
            self.acknowledged.after = Some(last);
            crate::failpoint::hit("snapshot-after-send");
        }
        Ok(())
    }

    /// Runs `work` while the pages in flight are acknowledged.
    pub(super) async fn meanwhile<T>(
        &mut self,
        work: impl Future<Output = Result<T, CopyError>>,
    ) -> Result<T, CopyError> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                acknowledged = self.next(), if self.any() => acknowledged?,
                done = &mut work => return done,
            }
        }
    }

    /// Waits until fewer than `most` pages are in flight.
    pub(super) async fn make_room(&mut self, most: usize) -> Result<(), CopyError> {
        while self.pages.len() >= most {
            self.next().await?;
        }
        Ok(())
    }

    /// Waits until every page is acknowledged.
    pub(super) async fn drain(&mut self) -> Result<(), CopyError> {
        self.make_room(1).await
    }
}

impl Copier<'_> {
    /// Inserts one page into the target; as an upsert when the target may have some of it.
    pub(super) async fn send(
        &self,
        to: &Destination,
        partition: &str,
        mut columns: Vec<FieldData>,
        rows: usize,
        upsert: bool,
    ) -> Result<(), CopyError> {
        // A span whose rows were all deleted before it was read.
        if rows == 0 {
            return Ok(());
        }
        for column in &mut columns {
            column.is_dynamic = to.dynamic_field.as_deref() == Some(&column.field_name);
            fill_empty_arrays(column);
        }
        // Milvus places the rows of a partition-key collection by the key itself.
        let partition_name = if to.partition_key {
            String::new()
        } else {
            partition.to_owned()
        };
        let (t, mut client) = (&to.collection, self.target.client.clone());
        let write_error = |reason: String| CopyError::Write {
            collection: t.name.clone(),
            reason,
        };
        let status = if upsert {
            let request = UpsertRequest {
                db_name: t.db_name.clone(),
                collection_name: t.name.clone(),
                partition_name,
                fields_data: columns,
                num_rows: rows as u32,
                ..Default::default()
            };
            client
                .upsert(request)
                .await
                .map_err(|e| write_error(format!("Upsert: {}", e.message())))?
                .into_inner()
                .status
        } else {
            let request = InsertRequest {
                db_name: t.db_name.clone(),
                collection_name: t.name.clone(),
                partition_name,
                fields_data: columns,
                num_rows: rows as u32,
                ..Default::default()
            };
            client
                .insert(request)
                .await
                .map_err(|e| write_error(format!("Insert: {}", e.message())))?
                .into_inner()
                .status
        };
        failure(status.as_ref()).map_or(Ok(()), |reason| Err(write_error(reason)))
    }
}

/// Gives each empty array of an array column its element type's empty list. A query answers an
/// empty array as an element with no data at all, which Milvus 2.3's insert validation reads
/// through a nil pointer, crashing the target's proxy.
fn fill_empty_arrays(column: &mut FieldData) {
    use milvus::proto::schema::{
        BoolArray, DataType, DoubleArray, FloatArray, IntArray, LongArray, StringArray,
        field_data::Field, scalar_field::Data,
    };
    let Some(Field::Scalars(scalars)) = &mut column.field else {
        return;
    };
    let Some(Data::ArrayData(arrays)) = &mut scalars.data else {
        return;
    };
    let empty = match DataType::try_from(arrays.element_type) {
        Ok(DataType::Bool) => Data::BoolData(BoolArray::default()),
        Ok(DataType::Int8 | DataType::Int16 | DataType::Int32) => {
            Data::IntData(IntArray::default())
        }
        Ok(DataType::Int64) => Data::LongData(LongArray::default()),
        Ok(DataType::Float) => Data::FloatData(FloatArray::default()),
        Ok(DataType::Double) => Data::DoubleData(DoubleArray::default()),
        Ok(DataType::VarChar | DataType::String) => Data::StringData(StringArray::default()),
        _ => return,
    };
    for element in &mut arrays.data {
        if element.data.is_none() {
            element.data = Some(empty.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use milvus::proto::schema::{
        ArrayArray, DataType, LongArray, ScalarField, field_data::Field, scalar_field::Data,
    };

    use super::*;

    fn in_doubt(after: i64, through: Option<i64>) -> CopyState {
        CopyState::Copying {
            partition: 0,
            after: Some(PrimaryKey::Int(after)),
            in_doubt: true,
            doubt_through: through.map(PrimaryKey::Int),
        }
    }

    #[test]
    fn after_a_crash_every_page_that_begins_below_the_last_key_sent_goes_again_as_an_upsert() {
        // Pages (10, 20] and (20, 30] were in flight; the copy resumes after 10 with pages
        // that need not end where they did.
        let mut doubt = Doubt::of(&in_doubt(10, Some(30)));
        assert!(doubt.covers(Some(&PrimaryKey::Int(10))));
        assert!(doubt.covers(Some(&PrimaryKey::Int(25))));
        assert!(!doubt.covers(Some(&PrimaryKey::Int(30))));
        assert_eq!(doubt, Doubt::None);
        // Marking the next page keeps the doubt as far as it reached.
        let doubt = Doubt::of(&in_doubt(10, Some(30)));
        assert_eq!(doubt.through(&PrimaryKey::Int(20)), PrimaryKey::Int(30));
        assert_eq!(doubt.through(&PrimaryKey::Int(40)), PrimaryKey::Int(40));
    }

    #[test]
    fn a_copy_in_doubt_recorded_before_pages_went_side_by_side_sends_its_next_page_as_an_upsert() {
        let recorded: CopyState =
            serde_json::from_str(r#"{"Copying":{"partition":0,"after":10,"in_doubt":true}}"#)
                .unwrap();
        assert_eq!(recorded, in_doubt(10, None));
        let mut doubt = Doubt::of(&recorded);
        assert!(doubt.covers(Some(&PrimaryKey::Int(10))));
        assert!(!doubt.covers(Some(&PrimaryKey::Int(20))));
        assert!(!Doubt::of(&CopyState::beginning()).covers(None));
    }

    #[test]
    fn an_empty_array_is_sent_as_its_types_empty_list_not_as_no_data() {
        let element = |data: Option<Data>| ScalarField {
            data,
            ..Default::default()
        };
        let long = Data::LongData(LongArray { data: vec![7] });
        let mut column = FieldData {
            field_name: "ints".into(),
            field: Some(Field::Scalars(ScalarField {
                data: Some(Data::ArrayData(ArrayArray {
                    data: vec![element(None), element(Some(long.clone()))],
                    element_type: DataType::Int64 as i32,
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        fill_empty_arrays(&mut column);
        let Some(Field::Scalars(ScalarField {
            data: Some(Data::ArrayData(arrays)),
            ..
        })) = column.field
        else {
            panic!("not an array column");
        };
        assert_eq!(
            arrays.data,
            [
                element(Some(Data::LongData(LongArray::default()))),
                element(Some(long))
            ]
        );
    }
}
