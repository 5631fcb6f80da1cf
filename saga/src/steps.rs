//! Carrying out one saga step: the command it sends to another aggregate,
//! and for payment steps the gateway call before it. Every step is safe to
//! repeat: the gateway is idempotent by key, and commands by their
//! deterministic id.

use commands::{Appended, CausedBy, CommandError, CommandHandler, ProcessCommand};
use domain::order::OrderCommand;
use domain::saga::{Saga, Step};
use domain::{InventoryCommand, PaymentCommand, ShipmentCommand};
use uuid::Uuid;

use crate::gateway::{AuthorizationRequest, GatewayError, PaymentGateway};
use crate::SagaConfig;

/// Why an attempt of a step failed; its text is recorded as the attempt's
/// failure (`SagaStepFailed.error`).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A payment step after the authorisation, with none recorded.
    #[error("no authorisation recorded")]
    NoAuthorization,
    /// A stock step for a SKU the order has no line of.
    #[error("the order has no line of {0}")]
    NoLine(String),
    /// The shipment request of a saga that knows no address.
    #[error("no shipping address")]
    NoShippingAddress,
    /// Shipping before the operator named the carrier.
    #[error("the order's carrier is not known yet")]
    NoCarrier,
    /// Cancelling the order of a saga that did not fail.
    #[error("the saga has no reason to cancel")]
    NoCancelReason,
    /// The payment gateway refused or failed the call.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The step's command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// The payment gateway's idempotency keys of an order's payment steps, in
/// one place: the same for every attempt of a step, so that a retry never
/// moves money twice.
pub mod gateway_keys {
    use uuid::Uuid;

    /// The key of an order's authorisation.
    pub fn authorization(order_id: Uuid) -> String {
        format!("pay-{order_id}")
    }

    /// The key of an order's capture.
    pub fn capture(order_id: Uuid) -> String {
        format!("capture-{order_id}")
    }

    /// The key of voiding an order's authorisation.
    pub fn void(order_id: Uuid) -> String {
        format!("void-{order_id}")
    }

    /// The key of a refund of an order after `refunded` was refunded
    /// before: a retry of this refund repeats the key, a later one (after
    /// another capture) does not.
    pub fn refund(order_id: Uuid, refunded: i64) -> String {
        format!("refund-{order_id}-{refunded}")
    }
}

/// Carries out attempt `command_id` of `step` of `saga`: the events its
/// command appended (none for the authorisation, whose answer comes
/// later, nor for a repeat answered from the command's first outcome).
/// The error text is recorded as the attempt's failure.
pub async fn perform(
    commands: &CommandHandler,
    gateway: &dyn PaymentGateway,
    config: &SagaConfig,
    saga: &Saga,
    step: &Step,
    cause: &CausedBy,
) -> Result<Vec<Appended>, StepError> {
    call_gateway(gateway, saga, step).await?;
    let Some(command) = command(config, saga, step)? else {
        return Ok(Vec::new());
    };
    Ok(commands.dispatch(command, cause).await?.events)
}

/// Whether `step` calls the payment gateway before (or instead of) its
/// command.
pub fn calls_gateway(step: &Step) -> bool {
    matches!(
        step,
        Step::AuthorizePayment | Step::CapturePayment | Step::VoidPayment | Step::RefundPayment
    )
}

/// The gateway call of a payment step (nothing for other steps). The
/// gateway is idempotent by key, so a repeat only answers again.
pub async fn call_gateway(
    gateway: &dyn PaymentGateway,
    saga: &Saga,
    step: &Step,
) -> Result<(), StepError> {
    let order_id = saga.order_id;
    let payment = &saga.payment;
    let authorization = || {
        payment
            .authorization_id
            .clone()
            .ok_or(StepError::NoAuthorization)
    };
    let called = match step {
        Step::AuthorizePayment => {
            let request = AuthorizationRequest {
                idempotency_key: gateway_keys::authorization(order_id),
                order_id,
                amount: saga.total,
                currency: saga.currency.clone(),
                payment_method: saga.payment_method.clone(),
            };
            // The answer arrives later, through the gateway's callback.
            gateway.authorize(&request).await
        }
        Step::CapturePayment => {
            gateway
                .capture(
                    &gateway_keys::capture(order_id),
                    &authorization()?,
                    payment.authorized,
                )
                .await
        }
        Step::VoidPayment => {
            gateway
                .void(&gateway_keys::void(order_id), &authorization()?)
                .await
        }
        Step::RefundPayment => {
            let key = gateway_keys::refund(order_id, payment.refunded);
            let amount = payment.captured - payment.refunded;
            gateway.refund(&key, &authorization()?, amount).await
        }
        _ => return Ok(()),
    };
    Ok(called?)
}

/// The command `step` of `saga` sends (after its gateway call, for a
/// payment step); `None` for the authorisation, answered by the gateway.
pub fn command(
    config: &SagaConfig,
    saga: &Saga,
    step: &Step,
) -> Result<Option<ProcessCommand>, StepError> {
    let order_id = saga.order_id;
    let payment = &saga.payment;
    Ok(Some(match step {
        Step::ReserveStock { sku } => reserve_stock(saga, sku)?,
        Step::AuthorizePayment => return Ok(None),
        Step::RequestShipment => request_shipment(config, saga)?,
        Step::CapturePayment => payment_command(order_id, PaymentCommand::CapturePayment),
        Step::ConfirmOrder => order_command(order_id, OrderCommand::ConfirmOrder),
        Step::CommitStock { sku } => ProcessCommand::Inventory {
            sku: sku.clone(),
            command: InventoryCommand::CommitStock { order_id },
        },
        Step::ShipShipment => ship_shipment(saga)?,
        Step::DeliverShipment => ProcessCommand::Shipment {
            order_id,
            command: ShipmentCommand::DeliverShipment,
        },
        Step::VoidPayment => payment_command(order_id, PaymentCommand::VoidPayment),
        Step::RefundPayment => payment_command(
            order_id,
            PaymentCommand::RefundPayment {
                amount: payment.captured - payment.refunded,
            },
        ),
        Step::ReleaseStock { sku } => ProcessCommand::Inventory {
            sku: sku.clone(),
            command: InventoryCommand::ReleaseStock { order_id },
        },
        Step::CancelOrder => order_command(
            order_id,
            OrderCommand::CancelOrder {
                reason: saga.failure.ok_or(StepError::NoCancelReason)?,
            },
        ),
    }))
}

/// The command reserving the units of `sku` the order of `saga` has a
/// line of.
fn reserve_stock(saga: &Saga, sku: &str) -> Result<ProcessCommand, StepError> {
    let order_id = saga.order_id;
    let quantity = saga
        .lines
        .iter()
        .find(|line| line.sku == sku)
        .map(|line| line.quantity)
        .ok_or_else(|| StepError::NoLine(sku.to_owned()))?;
    Ok(ProcessCommand::Inventory {
        sku: sku.to_owned(),
        command: InventoryCommand::ReserveStock {
            sku: sku.to_owned(),
            order_id,
            quantity,
        },
    })
}

/// The command requesting the order's shipment to its address, or
/// rejecting it when `config` does not ship to that country.
fn request_shipment(config: &SagaConfig, saga: &Saga) -> Result<ProcessCommand, StepError> {
    let order_id = saga.order_id;
    let address = saga
        .shipping_address
        .clone()
        .ok_or(StepError::NoShippingAddress)?;
    let command = match config.ship_to.refusal(&address.country) {
        None => ShipmentCommand::RequestShipment { order_id, address },
        Some(reason) => ShipmentCommand::RejectShipment { order_id, reason },
    };
    Ok(ProcessCommand::Shipment { order_id, command })
}

/// The command shipping the order's shipment with the carrier the
/// operator named.
fn ship_shipment(saga: &Saga) -> Result<ProcessCommand, StepError> {
    let order_id = saga.order_id;
    let (carrier, tracking_number) = saga.carrier.clone().ok_or(StepError::NoCarrier)?;
    Ok(ProcessCommand::Shipment {
        order_id,
        command: ShipmentCommand::ShipShipment {
            carrier,
            tracking_number,
        },
    })
}

fn payment_command(order_id: Uuid, command: PaymentCommand) -> ProcessCommand {
    ProcessCommand::Payment { order_id, command }
}

fn order_command(order_id: Uuid, command: OrderCommand) -> ProcessCommand {
    ProcessCommand::Order { order_id, command }
}
