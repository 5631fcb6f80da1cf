//! A stream's driver task dying mid-batch must not wedge the stream.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use commands::{CommandContext, CommandError, Executor, ExecutorConfig};
use domain::{Aggregate, DomainError, DomainEvent, EventDecodeError};
use eventstore::testing::TestDb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An aggregate whose `Blow` command panics in `decide`: a stand-in for a
/// bug in a real aggregate.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Fuse {
    lit: u64,
}

#[derive(Debug, Clone)]
enum FuseCommand {
    Light,
    Blow,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
enum FuseEvent {
    Lit,
}

impl DomainEvent for FuseEvent {
    fn event_type(&self) -> &'static str {
        "Lit"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn to_data(&self) -> Value {
        json!({})
    }
    fn from_stored(
        event_type: &str,
        _schema_version: u32,
        _data: Value,
    ) -> Result<Self, EventDecodeError> {
        match event_type {
            "Lit" => Ok(FuseEvent::Lit),
            other => Err(EventDecodeError::UnknownEventType {
                event_type: other.to_owned(),
            }),
        }
    }
}

impl Aggregate for Fuse {
    // The kinds are a closed set: this test aggregate borrows one (its
    // streams live only in the test's own database).
    const KIND: domain::StreamKind = domain::StreamKind::Product;
    type Command = FuseCommand;
    type Event = FuseEvent;

    fn decide(&self, command: &FuseCommand) -> Result<Vec<FuseEvent>, DomainError> {
        match command {
            FuseCommand::Light => Ok(vec![FuseEvent::Lit]),
            FuseCommand::Blow => panic!("the fuse blew"),
        }
    }

    fn evolve(self, _event: &FuseEvent) -> Self {
        Fuse { lit: self.lit + 1 }
    }
}

fn ctx() -> CommandContext {
    CommandContext::new("tester", "corr-1")
}

/// On the current-thread runtime every command below is queued before the
/// driver first runs, so they all land in the batch that panics.
#[tokio::test]
async fn a_panicking_decision_fails_its_batch_and_the_stream_takes_commands_again() {
    let db = TestDb::new().await;
    let fuses = Executor::<Fuse>::new(db.store(), ExecutorConfig::default());

    let mut batch = vec![fuses.execute("f-1", FuseCommand::Blow, ctx(), Value::Null)];
    for _ in 0..10 {
        batch.push(fuses.execute("f-1", FuseCommand::Light, ctx(), Value::Null));
    }
    for result in futures::future::join_all(batch).await {
        assert!(matches!(result, Err(CommandError::Dropped)), "{result:?}");
    }
    assert!(db
        .store()
        .read_stream("product-f-1", 1, 10)
        .await
        .unwrap()
        .is_empty());

    // The stream is not left with a queue that no driver serves.
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        fuses.execute("f-1", FuseCommand::Light, ctx(), Value::Null),
    )
    .await
    .expect("a command after the panic waited forever")
    .unwrap();
    assert_eq!(next.version, 1);
    assert_eq!(
        fuses
            .repository()
            .load("product-f-1")
            .await
            .unwrap()
            .state
            .lit,
        1
    );
}
