//! The saga crate's error type.

use commands::CommandError;
use domain::DomainError;
use eventstore::StoreError;

/// Why a saga operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The saga refused (not found, not stuck, already finished, bad input).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A command to another aggregate failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saga's stream kept changing under it.
    #[error("the saga of order {0} kept changing; gave up")]
    Contention(uuid::Uuid),
    /// Kafka refused the consumer's configuration or subscription.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The test hook stopped the orchestrator on purpose.
    #[error("stopped on purpose by the test hook")]
    Crashed,
}

impl From<sqlx::Error> for SagaError {
    fn from(error: sqlx::Error) -> Self {
        SagaError::Store(StoreError::Database(error))
    }
}
