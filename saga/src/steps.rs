//! Carrying out one saga step: the command it sends to another aggregate,
//! and for payment steps the gateway call before it. Every step is safe to
//! repeat: the gateway is idempotent by key, and commands by their
//! deterministic id.

use commands::{Appended, CausedBy, CommandHandler, ProcessCommand};
use domain::order::OrderCommand;
use domain::saga::{Saga, Step};
use domain::{InventoryCommand, PaymentCommand, ShipmentCommand};
use uuid::Uuid;

use crate::gateway::{AuthorizationRequest, PaymentGateway};
use crate::SagaConfig;

/// The gateway idempotency key of an order's authorisation. The same for
/// every attempt, so that a retry never authorises twice.
pub fn payment_key(order_id: Uuid) -> String {
    format!("pay-{order_id}")
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
) -> Result<Vec<Appended>, String> {
    call_gateway(gateway, saga, step).await?;
    let Some(command) = command(config, saga, step)? else {
        return Ok(Vec::new());
    };
    commands
        .dispatch(command, cause)
        .await
        .map(|outcome| outcome.events)
        .map_err(|e| e.to_string())
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
) -> Result<(), String> {
    let order_id = saga.order_id;
    let payment = &saga.payment;
    let authorization = || {
        payment
            .authorization_id
            .clone()
            .ok_or_else(|| "no authorisation recorded".to_owned())
    };
    let called = match step {
        Step::AuthorizePayment => {
            let request = AuthorizationRequest {
                idempotency_key: payment_key(order_id),
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
                    &format!("capture-{order_id}"),
                    &authorization()?,
                    payment.authorized,
                )
                .await
        }
        Step::VoidPayment => {
            gateway
                .void(&format!("void-{order_id}"), &authorization()?)
                .await
        }
        Step::RefundPayment => {
            // Keyed by what was refunded before: a retry of this refund
            // repeats the key, a later one (after another capture) does not.
            let key = format!("refund-{order_id}-{}", payment.refunded);
            let amount = payment.captured - payment.refunded;
            gateway.refund(&key, &authorization()?, amount).await
        }
        _ => return Ok(()),
    };
    called.map_err(|e| e.to_string())
}

/// The command `step` of `saga` sends (after its gateway call, for a
/// payment step); `None` for the authorisation, answered by the gateway.
pub fn command(
    config: &SagaConfig,
    saga: &Saga,
    step: &Step,
) -> Result<Option<ProcessCommand>, String> {
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
                reason: saga
                    .failure
                    .ok_or_else(|| "the saga has no reason to cancel".to_owned())?,
            },
        ),
    }))
}

/// The command reserving the units of `sku` the order of `saga` has a
/// line of.
fn reserve_stock(saga: &Saga, sku: &str) -> Result<ProcessCommand, String> {
    let order_id = saga.order_id;
    let quantity = saga
        .lines
        .iter()
        .find(|line| line.sku == sku)
        .map(|line| line.quantity)
        .ok_or_else(|| format!("the order has no line of {sku}"))?;
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
fn request_shipment(config: &SagaConfig, saga: &Saga) -> Result<ProcessCommand, String> {
    let order_id = saga.order_id;
    let address = saga
        .shipping_address
        .clone()
        .ok_or_else(|| "no shipping address".to_owned())?;
    let command = if config.ships_to(&address.country) {
        ShipmentCommand::RequestShipment { order_id, address }
    } else {
        ShipmentCommand::RejectShipment {
            order_id,
            reason: format!("we do not ship to {}", address.country),
        }
    };
    Ok(ProcessCommand::Shipment { order_id, command })
}

/// The command shipping the order's shipment with the carrier the
/// operator named.
fn ship_shipment(saga: &Saga) -> Result<ProcessCommand, String> {
    let order_id = saga.order_id;
    let (carrier, tracking_number) = saga
        .carrier
        .clone()
        .ok_or_else(|| "the order's carrier is not known yet".to_owned())?;
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
