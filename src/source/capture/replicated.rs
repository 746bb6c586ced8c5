//! Operations read from the replicate-msg topic (index, load, release, flush, database): they
//! name their collection, not its channels, so each is staged once, on the replicate channel,
//! listing the collection's vchannels (from the metadata) as what it waits for.

use tracing::info;

use super::{Captured, CollectionLookup, LookupError};
use crate::model::{CollectionRef, Scope, StagedChange, db_or_default};
use crate::source::decode::ReplicatedRequest;

/// A replicate-msg event, staged on `channel` (the replicate channel) at its timestamp: one
/// event per in-scope collection it names (a flush may name several), or one database event.
pub(super) fn capture_replicated(
    request: &ReplicatedRequest,
    channel: &str,
    ts: u64,
    scope: &Scope,
    lookup: &mut dyn CollectionLookup,
) -> Result<Captured, LookupError> {
    let kind = request.kind();
    let db_name = db_or_default(request.db_name());
    let staged = |collection, request, waits_for| {
        StagedChange::replicated(channel, ts, collection, kind, request, waits_for)
    };
    if kind.is_database() {
        if !scope.contains_database(db_name) {
            return Ok(Captured::Skipped);
        }
        let database = CollectionRef {
            id: 0,
            db_name: db_name.to_owned(),
            name: String::new(),
        };
        return Ok(Captured::Changes(vec![staged(
            database,
            request.encode(),
            Vec::new(),
        )]));
    }
    let mut changes = Vec::new();
    for name in request.collection_names() {
        if !scope.may_contain(name) || !scope.contains(db_name, name) {
            continue;
        }
        // The event names the collection; its channels and id come from the metadata. A
        // collection gone from it was dropped since: whatever this did is dropped with it.
        let Some(meta) = lookup.collection_named(db_name, name)? else {
            info!(
                channel,
                collection = name,
                database = db_name,
                ?kind,
                "replicated event skipped: the collection is no longer on the source"
            );
            continue;
        };
        if ts < meta.create_time {
            // An earlier collection of the same name (read from an earlier start).
            continue;
        }
        // `name` may be an alias: the target knows the collection by its own name.
        if !scope.contains(db_name, &meta.name) {
            continue;
        }
        let request = request.addressed_to(&meta.name).encode();
        let collection = CollectionRef {
            id: meta.id,
            db_name: db_name.to_owned(),
            name: meta.name,
        };
        changes.push(staged(collection, request, meta.virtual_channels));
    }
    if changes.is_empty() {
        Ok(Captured::Skipped)
    } else {
        Ok(Captured::Changes(changes))
    }
}
