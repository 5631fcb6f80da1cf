//! Reading the trail: a stream's history (with its verification and,
//! on request, its past state) and everything one request caused.

use commands::history::{self, At};
use eventstore::audit::causal_parents;
use eventstore::{EventMetadata, EventStore, RecordedEvent};
use serde::Serialize;
use serde_json::Value;

use super::{print, Output};

/// Most events `fulcrum audit correlation` reads.
const MAX_CORRELATED: i64 = 10_000;

/// One event on one line, for a person.
fn line(event: &RecordedEvent) -> String {
    let metadata = EventMetadata::of(&event.metadata);
    format!(
        "v{:<4} #{:<8} {}  {:<26} by {:<12} corr {}  hash {}…",
        event.version,
        event.global_position,
        event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        event.event_type,
        metadata.user_id.as_deref().unwrap_or("-"),
        metadata.correlation_id.as_deref().unwrap_or("-"),
        &event.hash[..12.min(event.hash.len())],
    )
}

/// `fulcrum audit stream`: the stream's events, the verification of its
/// hash chain and, with `--state-at`, its state at that version; `Ok(false)`
/// when the chain is invalid.
pub(super) async fn stream(
    store: &EventStore,
    stream_id: &str,
    state_at: Option<u64>,
    out: Output,
) -> anyhow::Result<bool> {
    let events = store.read_stream_to_end(stream_id, None).await?;
    anyhow::ensure!(!events.is_empty(), "no stream {stream_id}");
    let verification = eventstore::verify_stream(store.pool(), stream_id).await?;
    let state = match state_at {
        Some(v) => Some(history::state_at(store, stream_id, At::Version(v)).await?),
        None => None,
    };
    #[derive(Serialize)]
    struct StreamOut<'a> {
        stream_id: &'a str,
        events: &'a [RecordedEvent],
        verification: &'a eventstore::Verification,
        state: Option<Value>,
    }
    let answer = StreamOut {
        stream_id,
        events: &events,
        verification: &verification,
        state: state.as_ref().and_then(|s| s.state.clone()),
    };
    print(out, &answer, || {
        let mut text = format!("{stream_id}: {} events\n", events.len());
        for event in &events {
            text.push_str(&line(event));
            text.push('\n');
        }
        text.push_str(&if verification.valid {
            "hash chain: valid".to_owned()
        } else {
            format!(
                "hash chain: INVALID from version {}",
                verification.first_invalid_version.unwrap_or(0)
            )
        });
        if let Some(past) = &state {
            text.push_str(&format!(
                "\nstate at version {}: {}",
                past.version,
                serde_json::to_string_pretty(&past.state).unwrap_or_default()
            ));
        }
        text
    })?;
    Ok(verification.valid)
}

/// `fulcrum audit correlation`: every event one request caused, each
/// indented under the event that caused it.
pub(super) async fn correlation(
    store: &EventStore,
    correlation_id: &str,
    out: Output,
) -> anyhow::Result<bool> {
    let events =
        eventstore::audit::correlated(store.pool(), correlation_id, MAX_CORRELATED).await?;
    anyhow::ensure!(
        !events.is_empty(),
        "no event carries correlation id {correlation_id}"
    );
    if out.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"correlation_id": correlation_id, "events": events})
            )?
        );
        return Ok(true);
    }
    // Indent each event under the event that caused it.
    let mut depths: Vec<usize> = Vec::with_capacity(events.len());
    println!("{correlation_id}: {} events", events.len());
    for (event, parent) in events.iter().zip(causal_parents(&events)) {
        let d = parent.and_then(|p| depths.get(p)).map_or(0, |p| p + 1);
        depths.push(d);
        let metadata = EventMetadata::of(&event.metadata);
        println!(
            "{}{} {} v{} #{} by {}",
            "  ".repeat(d),
            if d == 0 { "●" } else { "└─" },
            event.event_type,
            event.version,
            event.global_position,
            metadata.user_id.as_deref().unwrap_or("-"),
        );
        println!("{}    {}", "  ".repeat(d), event.stream_id);
    }
    Ok(true)
}
