//! The typed entry for commands a process (the order saga) sends in
//! reaction to an event: no HTTP body, a deterministic command id, and the
//! cause recorded on every event appended.

use domain::order::OrderCommand;
use domain::{
    Inventory, InventoryCommand, Order, Payment, PaymentCommand, Shipment, ShipmentCommand,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{CommandContext, CommandError, CommandHandler, Outcome};

/// What caused a process's command.
#[derive(Debug, Clone)]
pub struct CausedBy {
    /// The deterministic id of the command (e.g. saga, step, attempt): a
    /// repeat with the same id is answered from its first outcome and
    /// appends nothing.
    pub command_id: Uuid,
    /// The correlation id of the request that started it all (the order's).
    pub correlation_id: String,
    /// The event (or saga step) this command reacts to.
    pub causation_id: String,
    /// Who acts, e.g. `saga`.
    pub actor: String,
    /// The trace it continues (the causing event's `traceparent`), if any.
    pub traceparent: Option<String>,
}

/// A command for one of the order's aggregates, addressed by id.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "aggregate", rename_all = "snake_case")]
pub enum ProcessCommand {
    /// For the stock of `sku`.
    Inventory {
        /// The SKU.
        sku: String,
        /// The command.
        command: InventoryCommand,
    },
    /// For the payment of an order.
    Payment {
        /// The order.
        order_id: Uuid,
        /// The command.
        command: PaymentCommand,
    },
    /// For the shipment of an order.
    Shipment {
        /// The order.
        order_id: Uuid,
        /// The command.
        command: ShipmentCommand,
    },
    /// For an order.
    Order {
        /// The order.
        order_id: Uuid,
        /// The command.
        command: OrderCommand,
    },
}

impl ProcessCommand {
    /// The stream the command acts on.
    pub fn stream_id(&self) -> String {
        match self {
            Self::Inventory { sku, .. } => domain::stream_id::<Inventory>(sku),
            Self::Payment { order_id, .. } => domain::stream_id::<Payment>(order_id),
            Self::Shipment { order_id, .. } => domain::stream_id::<Shipment>(order_id),
            Self::Order { order_id, .. } => domain::stream_id::<Order>(order_id),
        }
    }
}

/// The idempotency key of a process command (see
/// [`eventstore::idempotency::Scope`]).
pub fn process_key(command_id: Uuid) -> String {
    eventstore::idempotency::Scope::Process(command_id).stored_key()
}

impl CommandContext {
    /// The context of a command a process sends because of `cause`, under
    /// the idempotency key of its command id and a hash of `request`.
    pub fn caused_by(cause: &CausedBy, request: &Value) -> Self {
        CommandContext {
            command_id: cause.command_id,
            correlation_id: cause.correlation_id.clone(),
            causation_id: cause.causation_id.clone(),
            user_id: cause.actor.clone(),
            idempotency: None,
            note: None,
            traceparent: cause.traceparent.clone(),
        }
        .with_idempotency(
            process_key(cause.command_id),
            eventstore::idempotency::request_hash(request),
        )
    }
}

impl CommandHandler {
    /// Carries out `command` for a process, exactly once per
    /// `cause.command_id`: a repeat (a redelivery, a restart) answers the
    /// first outcome and appends nothing. Domain refusals are not
    /// remembered, so a later repeat decides again.
    #[tracing::instrument(skip_all, fields(stream = %command.stream_id(), command_id = %cause.command_id))]
    pub async fn dispatch(
        &self,
        command: ProcessCommand,
        cause: &CausedBy,
    ) -> Result<Outcome, CommandError> {
        let request = serde_json::to_value(&command)
            .map_err(|e| eventstore::StoreError::Corrupt(format!("encoding a command: {e}")))?;
        let context = CommandContext::caused_by(cause, &request);
        match command {
            ProcessCommand::Inventory { sku, command } => {
                self.inventory
                    .execute(&sku, command, context, Value::Null)
                    .await
            }
            ProcessCommand::Payment { order_id, command } => {
                let id = order_id.to_string();
                self.payments
                    .execute(&id, command, context, Value::Null)
                    .await
            }
            ProcessCommand::Shipment { order_id, command } => {
                let id = order_id.to_string();
                self.shipments
                    .execute(&id, command, context, Value::Null)
                    .await
            }
            ProcessCommand::Order { order_id, command } => {
                let id = order_id.to_string();
                self.orders
                    .execute(&id, command, context, Value::Null)
                    .await
            }
        }
    }
}
