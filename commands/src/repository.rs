//! Loading an aggregate: the cache, then the latest snapshot, then the
//! events after it.

use std::sync::Arc;

use domain::{Aggregate, DomainEvent};
use eventstore::EventStore;
use moka::ops::compute::Op;
use serde::{Deserialize, Serialize};

use crate::CommandError;

/// Events read per query while folding a stream.
const PAGE: i64 = 1000;

/// How long a cached state is trusted. Decisions are always guarded by the
/// expected version, so a state another process moved on only costs a
/// retry; but reads of *other* aggregates (catalogue prices when placing an
/// order) may lag another process's change by up to this long.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Schema version of stored snapshots. Bump it when an aggregate's state
/// shape changes incompatibly: older snapshots are then ignored and the
/// state is folded from the events.
pub const SNAPSHOT_SCHEMA: u32 = 1;

/// An aggregate's state with the stream version and global position it includes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loaded<A> {
    /// The stream version folded into `state` (0: no events).
    pub version: u64,
    /// Global position of the event at `version` (0: no events).
    pub position: i64,
    /// The folded state.
    pub state: A,
}

impl<A: Aggregate> Default for Loaded<A> {
    fn default() -> Self {
        Loaded {
            version: 0,
            position: 0,
            state: A::default(),
        }
    }
}

/// Loads aggregates of type `A`, remembering the latest state per stream.
///
/// The cache only ever moves forward: a state is kept only if its version
/// is newer than the cached one, so a slow load can never replace what this
/// process appended since. A conflict tells the caller to [`Repository::forget`].
pub struct Repository<A: Aggregate> {
    store: EventStore,
    cache: moka::future::Cache<String, Arc<Loaded<A>>>,
    snapshot_every: u64,
}

impl<A: Aggregate> Repository<A> {
    /// A repository caching up to `capacity` streams and snapshotting every
    /// `snapshot_every` events (0 disables snapshots).
    pub fn new(store: EventStore, capacity: u64, snapshot_every: u64) -> Self {
        Repository {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(CACHE_TTL)
                .build(),
            snapshot_every,
        }
    }

    /// The current state of `stream_id` as far as this process knows: the
    /// cached state, or a fresh fold of the snapshot and the events after it.
    #[tracing::instrument(skip(self))]
    pub async fn load(&self, stream_id: &str) -> Result<Arc<Loaded<A>>, CommandError> {
        if let Some(loaded) = self.cache.get(stream_id).await {
            return Ok(loaded);
        }
        let loaded = Arc::new(self.fold(stream_id).await?);
        self.remember(stream_id, loaded.clone()).await;
        Ok(loaded)
    }

    /// Like [`Repository::load`], but a cached state that fails `present`
    /// (e.g. a product not defined, an order not placed) is read again from
    /// the store: absence is never trusted from the cache, since another
    /// process may have created the stream since.
    pub async fn load_present(
        &self,
        stream_id: &str,
        present: impl Fn(&A) -> bool,
    ) -> Result<Arc<Loaded<A>>, CommandError> {
        let loaded = self.load(stream_id).await?;
        if present(&loaded.state) {
            return Ok(loaded);
        }
        self.forget(stream_id).await;
        self.load(stream_id).await
    }

    /// Keeps `loaded` as the state of `stream_id` unless a newer one is cached.
    pub async fn remember(&self, stream_id: &str, loaded: Arc<Loaded<A>>) {
        self.cache
            .entry_by_ref(stream_id)
            .and_compute_with(|cached| {
                let newer = cached.is_none_or(|c| c.value().version < loaded.version);
                std::future::ready(if newer { Op::Put(loaded) } else { Op::Nop })
            })
            .await;
    }

    /// Drops the cached state of `stream_id` (after a conflict).
    pub async fn forget(&self, stream_id: &str) {
        self.cache.invalidate(stream_id).await;
    }

    /// Saves a snapshot in the background when an append moved the stream
    /// across a multiple of `snapshot_every`.
    pub fn snapshot_if_due(&self, stream_id: &str, before: u64, after: &Arc<Loaded<A>>) {
        let every = self.snapshot_every;
        if every == 0 || before / every == after.version / every {
            return;
        }
        let Ok(state) = serde_json::to_value(after.as_ref()) else {
            return;
        };
        let pool = self.store.pool().clone();
        let (stream_id, version) = (stream_id.to_owned(), after.version);
        tokio::spawn(async move {
            let saved =
                eventstore::save_snapshot(&pool, &stream_id, version, SNAPSHOT_SCHEMA, &state);
            if let Err(error) = saved.await {
                // Loading stays correct without it, only slower.
                tracing::warn!(%error, %stream_id, "could not save snapshot");
            }
        });
    }

    /// Folds the latest usable snapshot and every event after it.
    async fn fold(&self, stream_id: &str) -> Result<Loaded<A>, CommandError> {
        let snapshot = eventstore::load_snapshot(self.store.pool(), stream_id).await?;
        let mut loaded = snapshot
            .filter(|s| s.schema_version == SNAPSHOT_SCHEMA)
            .and_then(|s| serde_json::from_value::<Loaded<A>>(s.state).ok())
            .unwrap_or_default();
        loop {
            let page = self
                .store
                .read_stream(stream_id, loaded.version + 1, PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            for recorded in page {
                let event = A::Event::from_stored(
                    &recorded.event_type,
                    recorded.schema_version,
                    recorded.data,
                )?;
                loaded.state = loaded.state.evolve(&event);
                loaded.version = recorded.version;
                loaded.position = recorded.global_position;
            }
            if !full {
                return Ok(loaded);
            }
        }
    }
}
