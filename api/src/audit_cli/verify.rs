//! `fulcrum audit verify`: one stream's hash chain, every stream's, or
//! every seal against every event.

use eventstore::seal;
use eventstore::EventStore;
use serde::Serialize;

use super::{bar, parse_key, print, Output};

/// `fulcrum audit verify <stream>`: recomputes the stream's hash chain;
/// `Ok(false)` when it is invalid.
pub(super) async fn verify_one(
    store: &EventStore,
    stream_id: &str,
    out: Output,
) -> anyhow::Result<bool> {
    let v = eventstore::verify_stream(store.pool(), stream_id).await?;
    print(out, &v, || {
        if v.valid {
            format!("{stream_id}: valid ({} events)", v.events_checked)
        } else {
            format!(
                "{stream_id}: INVALID: version {} is altered, missing or out of order ({} events read)",
                v.first_invalid_version.unwrap_or(0),
                v.events_checked
            )
        }
    })?;
    Ok(v.valid)
}

/// `fulcrum audit verify --all`: every stream's hash chain, with a
/// progress bar; `Ok(false)` when any is invalid.
pub(super) async fn verify_all(store: &EventStore, out: Output) -> anyhow::Result<bool> {
    let streams: Vec<String> =
        sqlx::query_scalar("SELECT stream_id FROM streams ORDER BY stream_id")
            .fetch_all(store.pool())
            .await?;
    let progress = (!out.json).then(|| bar(streams.len() as u64, "streams"));
    let mut invalid = Vec::new();
    for stream_id in &streams {
        let v = eventstore::verify_stream(store.pool(), stream_id).await?;
        if !v.valid {
            invalid.push(v);
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    #[derive(Serialize)]
    struct AllOut {
        valid: bool,
        streams_checked: usize,
        invalid: Vec<eventstore::Verification>,
    }
    let answer = AllOut {
        valid: invalid.is_empty(),
        streams_checked: streams.len(),
        invalid,
    };
    print(out, &answer, || {
        let mut text = format!(
            "{} streams checked: {}",
            answer.streams_checked,
            if answer.valid {
                "all valid"
            } else {
                "INVALID streams found"
            }
        );
        for v in &answer.invalid {
            text.push_str(&format!(
                "\n  {}: first invalid version {}",
                v.stream_id,
                v.first_invalid_version.unwrap_or(0)
            ));
        }
        text
    })?;
    Ok(answer.valid)
}

/// `fulcrum audit verify --seals`: recomputes every seal from the events,
/// checking signatures with `public_key` (else each seal's own);
/// `Ok(false)` on the first finding.
pub(super) async fn verify_seals(
    store: &EventStore,
    public_key: Option<&str>,
    out: Output,
) -> anyhow::Result<bool> {
    let key = public_key.map(parse_key).transpose()?;
    let progress = (!out.json).then(|| bar(0, "events"));
    let started = std::time::Instant::now();
    let report = seal::verify_seals(store.pool(), key, |done, total| {
        if let Some(bar) = &progress {
            bar.set_length(total);
            bar.set_position(done);
        }
    })
    .await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    print(out, &report, || {
        let mut text = format!(
            "{} seals, {} events checked ({} sealed) in {seconds:.1} s\n",
            report.seals_checked, report.events_checked, report.sealed_events
        );
        match &report.trusted_key {
            Some(key) => text.push_str(&format!("signatures checked with the trusted key {key}\n")),
            None => text.push_str(&format!(
                "signatures checked with the seals' own keys {:?}: pass --public-key to check who sealed\n",
                report.public_keys
            )),
        }
        match &report.finding {
            None => text.push_str("VALID: every seal verifies and every event is as sealed"),
            Some(f) => text.push_str(&format!(
                "INVALID ({:?}){}{}: {}",
                f.kind,
                f.seal_id
                    .map(|s| format!(", caught by seal {s}"))
                    .unwrap_or_default(),
                f.leaf_index
                    .map(|i| format!(", leaf {i}"))
                    .unwrap_or_default(),
                f.detail
            )),
        }
        text
    })?;
    Ok(report.valid)
}
