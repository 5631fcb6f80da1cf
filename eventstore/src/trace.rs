//! W3C trace context (`traceparent`) as it travels through the pipeline:
//! taken from an HTTP request (or started there), recorded in every event's
//! metadata under [`METADATA_KEY`], carried in the Kafka header of the
//! same name, and continued by the relay, the projectors and the saga, so
//! that one trace id spans HTTP → append → Kafka → read model → saga
//! commands.
//!
//! `traceparent` is `00-<32 hex trace id>-<16 hex parent span id>-<2 hex
//! flags>` (W3C Trace Context, version 00).
//!
//! With OpenTelemetry export on (`OTEL_EXPORTER_OTLP_ENDPOINT`, see the
//! `api` crate's telemetry), [`enter`] makes a tracing span a child of the
//! trace, and the span's own ids become the trace's next hop, so the
//! exported spans and the ids in the events agree.

use std::fmt;

use uuid::Uuid;

/// The metadata key (and Kafka header) holding the `traceparent`.
pub const METADATA_KEY: &str = crate::metadata::TRACEPARENT;

/// A parsed W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A new trace (sampled), for a request that came without one.
    pub fn start() -> Self {
        TraceParent {
            trace_id: Uuid::new_v4().as_u128(),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// Parses a `traceparent` header value; `None` unless it is well-formed
    /// version 00 with non-zero ids (as the spec asks: such a header is
    /// ignored and a new trace started).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if parts.next().is_some()
            || version != "00"
            || !lower_hex(trace, 32)
            || !lower_hex(span, 16)
            || !lower_hex(flags, 2)
        {
            return None;
        }
        let parsed = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    /// The `traceparent` of `metadata` (an event's), when it has a valid one.
    pub fn of_metadata(metadata: &serde_json::Value) -> Option<Self> {
        metadata
            .get(METADATA_KEY)
            .and_then(|v| v.as_str())
            .and_then(Self::parse)
    }

    /// A child in the same trace: a new span id, the same trace id and flags.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 lower-case hex digits (what logs carry).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// Runs `work` inside the trace `trace`: [`current`] answers it there (for
/// a request's commands, or the commands a consumed event causes).
pub async fn scope<F: std::future::Future>(trace: TraceParent, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// The trace the running task is in (see [`scope`]), if any.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// A `traceparent` for one more hop of the current trace (a command sent,
/// an event appended): a child of [`current`], if any.
pub fn next_hop() -> Option<String> {
    current().map(|t| t.child().to_string())
}

/// Joins `span` to the trace `parent` (a remote parent, for OpenTelemetry
/// export) and answers the trace the work inside `span` runs in: the
/// span's own context when spans are exported, else a child of `parent`.
pub fn enter(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when no OpenTelemetry layer is installed: nothing to join.
        let _ = span.set_parent(context);
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        return TraceParent {
            trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(own.span_id().to_bytes()),
            flags: own.trace_flags().to_u8(),
        };
    }
    parent.map_or_else(TraceParent::start, |p| p.child())
}

fn new_span_id() -> u64 {
    // The low half of a v4 UUID: random, and never all zeros in practice;
    // 1 stands in for the (2^-64) zero.
    let id = Uuid::new_v4().as_u128() as u64;
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header).expect("valid");
        assert_eq!(parent.to_string(), header);
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
