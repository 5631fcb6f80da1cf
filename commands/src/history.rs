//! Time travel: an aggregate's state as it stood at a version or a time,
//! folded from its stored events (upcast as any load upcasts them).

use chrono::{DateTime, Utc};
use domain::{
    Aggregate, DomainEvent, Inventory, Order, Payment, Product, Saga, Shipment, StreamKind,
};
use eventstore::{EventStore, RecordedEvent, StoreError};
use serde_json::Value;

/// Where in a stream's history to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After the event with this version (1 or more).
    Version(u64),
    /// After the last event recorded at or before this time.
    Time(DateTime<Utc>),
    /// After the last event.
    Head,
}

/// A stream's state at a point of its history.
#[derive(Debug, Clone, PartialEq)]
pub struct PastState {
    /// The version the state stands at (0: before the first event).
    pub version: u64,
    /// The folded state; `None` at version 0.
    pub state: Option<Value>,
}

/// Why a past state cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The stream has no events.
    #[error("no stream {0}")]
    NoStream(String),
    /// The stream has fewer events than the version asked for.
    #[error("the stream is at version {head}; there is no version {asked}")]
    BeyondHead {
        /// The version asked for.
        asked: u64,
        /// The stream's last version.
        head: u64,
    },
    /// No aggregate folds streams of this type.
    #[error("streams of type {0:?} have no aggregate to fold them")]
    UnknownType(String),
    /// A stored event could not be read as its aggregate's event.
    #[error("event {version} of {stream_id} cannot be decoded: {message}")]
    Undecodable {
        /// The stream.
        stream_id: String,
        /// The event's version.
        version: u64,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state of `stream_id` at `at`.
pub async fn state_at(
    store: &EventStore,
    stream_id: &str,
    at: At,
) -> Result<PastState, HistoryError> {
    let Some(kind) = StreamKind::of(stream_id) else {
        let stream_type = eventstore::stream_type(stream_id).to_owned();
        return Err(HistoryError::UnknownType(stream_type));
    };
    let events = match at {
        At::Time(time) => {
            let events =
                eventstore::audit::read_stream_until(store.pool(), stream_id, time).await?;
            if events.is_empty() && !stream_exists(store, stream_id).await? {
                return Err(HistoryError::NoStream(stream_id.to_owned()));
            }
            events
        }
        At::Version(_) | At::Head => {
            let until = match at {
                At::Version(v) => Some(v),
                _ => None,
            };
            let events = store.read_stream_to_end(stream_id, until).await?;
            if events.is_empty() {
                return Err(HistoryError::NoStream(stream_id.to_owned()));
            }
            if let At::Version(version) = at {
                let head = events.len() as u64;
                if version > head {
                    return Err(HistoryError::BeyondHead {
                        asked: version,
                        head,
                    });
                }
            }
            events
        }
    };
    let Some(last) = events.last() else {
        return Ok(PastState {
            version: 0,
            state: None,
        });
    };
    let version = last.version;
    let state = match kind {
        StreamKind::Order => fold::<Order>(&events)?,
        StreamKind::Inventory => fold::<Inventory>(&events)?,
        StreamKind::Product => fold::<Product>(&events)?,
        StreamKind::Payment => fold::<Payment>(&events)?,
        StreamKind::Shipment => fold::<Shipment>(&events)?,
        StreamKind::Saga => fold::<Saga>(&events)?,
    };
    Ok(PastState {
        version,
        state: Some(state),
    })
}

async fn stream_exists(store: &EventStore, stream_id: &str) -> Result<bool, StoreError> {
    Ok(!store.read_stream(stream_id, 1, 1).await?.is_empty())
}

fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Value, HistoryError> {
    let mut state = A::default();
    for recorded in events {
        let event = A::Event::from_stored(
            &recorded.event_type,
            recorded.schema_version,
            recorded.data.clone(),
        )
        .map_err(|e| HistoryError::Undecodable {
            stream_id: recorded.stream_id.clone(),
            version: recorded.version,
            message: e.to_string(),
        })?;
        state = state.evolve(&event);
    }
    serde_json::to_value(&state).map_err(|e| HistoryError::Undecodable {
        stream_id: events
            .first()
            .map(|e| e.stream_id.clone())
            .unwrap_or_default(),
        version: 0,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use domain::StreamKind;
    use eventstore::kafka::topics::{topic_for, AGGREGATES};

    #[test]
    fn every_stream_kind_has_a_topic_the_relay_creates_at_start() {
        let created: Vec<String> = AGGREGATES.iter().map(|a| topic_for("p", a)).collect();
        for kind in StreamKind::ALL {
            assert!(
                created.contains(&topic_for("p", kind.as_str())),
                "no topic created at start for {kind} streams"
            );
        }
    }
}
