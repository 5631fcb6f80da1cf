//! Where the time of each confirmed order went, read back from its events.

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgPool, Row};

use crate::load::Placed;
use crate::{pct, sorted};

/// Where the time of the confirmed orders went: for each event of an
/// order's correlation (label: type, step or fact, n-th occurrence), its
/// `recorded_at` after the POST started, and the gap since the order's
/// previous event; then the POST answer and the read model.
pub async fn breakdown(pool: &PgPool, confirmed: &[(&Placed, f64)]) {
    let streams: Vec<String> = confirmed
        .iter()
        .map(|(p, _)| format!("order-{}", p.order_id))
        .collect();
    let rows = sqlx::query(
        "SELECT p.stream_id, e.event_type, \
                COALESCE(e.data->'step'->>'name', e.data->'fact'->>'type', \
                         e.data->'data'->'step'->>'name', e.data->'data'->'fact'->>'type', '') AS detail, \
                EXTRACT(EPOCH FROM e.recorded_at)::float8 * 1000 AS at_ms \
         FROM events p JOIN events e ON e.metadata->>'correlation_id' = p.metadata->>'correlation_id' \
         WHERE p.event_type = 'OrderPlaced' AND p.stream_id = ANY($1) ORDER BY e.position",
    )
    .bind(&streams)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut timelines: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for row in rows {
        let (stream, kind, detail): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let label = if detail.is_empty() {
            kind
        } else {
            format!("{kind}:{detail}")
        };
        timelines
            .entry(stream)
            .or_default()
            .push((label, row.get(3)));
    }
    let mut offsets: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut stages: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (placed, seen_ms) in confirmed {
        let stream = format!("order-{}", placed.order_id);
        let mut timeline = timelines.remove(&stream).unwrap_or_default();
        timeline.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The critical path: up to OrderConfirmed, then the read model
        // (the saga observing OrderConfirmed runs beside the projector).
        let end = timeline.iter().position(|(l, _)| l == "OrderConfirmed");
        timeline.truncate(end.map_or(timeline.len(), |e| e + 1));
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        timeline.push((
            "(read model shows confirmed)".into(),
            placed.started_ms + seen_ms,
        ));
        timeline.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (mut previous, mut seen) = (placed.started_ms, HashMap::<String, usize>::new());
        for (label, at) in timeline {
            // A recheck re-sends an unanswered step: not on the path.
            let recheck = label.starts_with("SagaStepRechecked");
            let stage = if label == "OrderPlaced" {
                "1 HTTP POST -> OrderPlaced recorded"
            } else if label.starts_with("SagaStarted") || label.starts_with("SagaEventObserved") {
                "2 event recorded -> saga observes it (in-process, or relay + Kafka)"
            } else if label.starts_with("Saga") {
                "3 saga records the next step"
            } else if label.starts_with('(') {
                "5 OrderConfirmed -> read model (relay, Kafka, projector, poll)"
            } else {
                "4 step command recorded (command layer, gateway)"
            };
            let n = seen.entry(label.clone()).or_default();
            *n += 1;
            let label = if *n == 1 {
                label
            } else {
                format!("{label} #{n}")
            };
            let entry = offsets.entry(label).or_default();
            entry.0.push(at - placed.started_ms);
            entry.1.push(at - previous);
            if !recheck {
                *sums.entry(stage).or_default() += at - previous;
                previous = at;
            }
        }
        for (stage, sum) in sums {
            stages.entry(stage).or_default().push(sum);
        }
    }
    println!("  critical path by stage (per-order sums of the gaps, ms):");
    for (stage, sums) in stages {
        let sums = sorted(sums);
        println!(
            "  {stage:<72} p50 {:>7.1}  p99 {:>7.1}",
            pct(&sums, 0.5),
            pct(&sums, 0.99)
        );
    }
    let mut table: Vec<(String, usize, Vec<f64>, Vec<f64>)> = offsets
        .into_iter()
        .map(|(label, (at, gap))| (label, at.len(), sorted(at), sorted(gap)))
        .collect();
    table.sort_by(|a, b| pct(&a.2, 0.5).total_cmp(&pct(&b.2, 0.5)));
    println!("  where the time goes (ms after the POST started; gap = since the order's previous event):");
    println!(
        "  {:<48} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "event (recorded_at)", "orders", "at p50", "at p99", "gap p50", "gap p99"
    );
    for (label, n, at, gap) in table {
        println!(
            "  {label:<48} {n:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            pct(&at, 0.5),
            pct(&at, 0.99),
            pct(&gap, 0.5),
            pct(&gap, 0.99)
        );
    }
}
