//! Reading a partition's pages from the source: spans of keys, read side by side.

use futures::stream::{Stream, TryStreamExt};
use milvus::proto::schema::FieldData;

use super::{Copier, CopyError};
use crate::milvus_client::{ReadError, Seen, Shape, keys};
use crate::model::{CollectionRef, PrimaryKey};

/// Pages read from the source at once. Each page is a range of keys whose end a query of the
/// keys alone finds first (cheap next to the rows), so the ranges are read side by side.
const READS_IN_FLIGHT: usize = 2;

/// A range of a partition's keys to read: after `after` (None: from the first), through
/// `through`.
enum Span {
    Keys {
        after: Option<PrimaryKey>,
        through: PrimaryKey,
    },
    /// The collection is gone from the source.
    CollectionDropped,
}

/// A span, read: one page, or more when a query answered only the first keys of it.
pub(super) enum Read {
    Range {
        after: Option<PrimaryKey>,
        through: PrimaryKey,
        columns: Vec<FieldData>,
        rows: usize,
    },
    CollectionDropped,
}

/// What a failed read of the source found gone.
enum Gone {
    Collection,
    Partition,
}

/// How a partition's pages are read.
pub(super) struct Reading {
    pub(super) source: CollectionRef,
    pub(super) partition: String,
    pub(super) shape: Shape,
    pub(super) seen: Seen,
    pub(super) page_rows: usize,
}

impl Reading {
    /// The partition's pages after key `after`, in key order: [`READS_IN_FLIGHT`] spans read
    /// at a time.
    pub(super) fn pages<'r>(
        &'r self,
        copier: &'r Copier<'_>,
        after: Option<PrimaryKey>,
    ) -> impl Stream<Item = Result<Read, CopyError>> + 'r {
        self.spans(copier, after)
            .map_ok(|span| self.read(copier, span))
            .try_buffered(READS_IN_FLIGHT)
            .map_ok(|pages| futures::stream::iter(pages.into_iter().map(Ok)))
            .try_flatten()
    }

    /// The partition's spans after key `after`, each ending where a query of the keys alone
    /// finds its `page_rows`th key.
    fn spans<'r>(
        &'r self,
        copier: &'r Copier<'_>,
        after: Option<PrimaryKey>,
    ) -> impl Stream<Item = Result<Span, CopyError>> + 'r {
        let key_only = Shape {
            primary_key: self.shape.primary_key.clone(),
            fields: vec![self.shape.primary_key.clone()],
        };
        futures::stream::try_unfold(Some(after), move |from| {
            let key_only = key_only.clone();
            async move {
                let Some(after) = from else {
                    return Ok(None);
                };
                let columns = match self.query(copier, &key_only, after.as_ref(), None).await? {
                    Ok(columns) => columns,
                    Err(Gone::Collection) => return Ok(Some((Span::CollectionDropped, None))),
                    Err(Gone::Partition) => return Ok(None),
                };
                let last = self.page_keys(&columns)?.into_iter().max();
                Ok(last.map(|through| {
                    let span = Span::Keys {
                        after,
                        through: through.clone(),
                    };
                    (span, Some(Some(through)))
                }))
            }
        })
    }

    /// The rows of `span`. A query answers the first keys only when it cannot tell the rest
    /// are not better (a shard's answer ran out): the rest is read after them, a page each.
    async fn read(&self, copier: &Copier<'_>, span: Span) -> Result<Vec<Read>, CopyError> {
        let Span::Keys { after, through } = span else {
            return Ok(vec![Read::CollectionDropped]);
        };
        let mut pages: Vec<Read> = Vec::new();
        let mut from = after;
        loop {
            let read = self.query(copier, &self.shape, from.as_ref(), Some(&through));
            let columns = match read.await? {
                Ok(columns) => columns,
                Err(Gone::Collection) => return Ok(vec![Read::CollectionDropped]),
                // The next span's end is not found: the partition ends here.
                Err(Gone::Partition) => Vec::new(),
            };
            let keys = self.page_keys(&columns)?;
            let rows = keys.len();
            let last = keys.into_iter().max();
            let page_through = last.clone().filter(|last| *last < through);
            let more = page_through.is_some();
            match (last, pages.last_mut()) {
                // Nothing after the pages read: the last of them reaches the span's end.
                (None, Some(Read::Range { through: end, .. })) => *end = through.clone(),
                _ => pages.push(Read::Range {
                    after: from,
                    through: page_through.clone().unwrap_or_else(|| through.clone()),
                    columns,
                    rows,
                }),
            }
            if !more {
                return Ok(pages);
            }
            from = page_through;
        }
    }

    /// The partition's rows after `after` (through `through`) in `shape`, or what is gone
    /// when the read failed because the collection or the partition is.
    async fn query(
        &self,
        copier: &Copier<'_>,
        shape: &Shape,
        after: Option<&PrimaryKey>,
        through: Option<&PrimaryKey>,
    ) -> Result<Result<Vec<FieldData>, Gone>, CopyError> {
        let read = copier
            .source
            .page_columns(
                &self.source,
                &self.partition,
                shape,
                after,
                through,
                self.page_rows,
                self.seen,
            )
            .await;
        match read {
            Ok(columns) => Ok(Ok(columns)),
            Err(err) => Ok(Err(copier.gone(&self.source, &self.partition, err).await?)),
        }
    }

    /// The keys of a page, from its primary key column (none in an empty page).
    fn page_keys(&self, columns: &[FieldData]) -> Result<Vec<PrimaryKey>, CopyError> {
        Ok(columns
            .iter()
            .find(|c| c.field_name == self.shape.primary_key)
            .map(keys)
            .transpose()
            .map_err(|reason| self.unreadable(reason))?
            .unwrap_or_default())
    }

    fn unreadable(&self, reason: impl std::fmt::Display) -> CopyError {
        CopyError::Read(ReadError {
            role: "source",
            collection: self.source.name.clone(),
            reason: reason.to_string(),
        })
    }
}

impl Copier<'_> {
    /// What a failed read of partition `partition` of `source` found gone; the read's error
    /// when neither is.
    async fn gone(
        &self,
        source: &CollectionRef,
        partition: &str,
        err: ReadError,
    ) -> Result<Gone, CopyError> {
        // Dropped meanwhile: the drop is in the journal, after the changes held.
        match self.source.has(source, partition).await? {
            (false, _) => Ok(Gone::Collection),
            (true, false) => Ok(Gone::Partition),
            (true, true) => Err(err.into()),
        }
    }
}
