//! [`CommandHandler`]: one executor per aggregate, and the commands that
//! read one aggregate to decide on another (placing an order prices its
//! lines from the catalogue).

use std::sync::Arc;

use domain::order::OrderCommand;
use domain::{
    validate_sku, Address, DomainError, FieldError, Inventory, InventoryCommand, Order, Payment,
    PricedLine, Product, Shipment,
};
use eventstore::EventStore;
use serde_json::json;
use uuid::Uuid;

use crate::{CommandContext, CommandError, Executor, ExecutorConfig, Outcome};

/// Carries out every command of the system.
#[derive(Clone)]
pub struct CommandHandler {
    /// The product catalogue.
    pub products: Arc<Executor<Product>>,
    /// Stock per SKU.
    pub inventory: Arc<Executor<Inventory>>,
    /// Orders.
    pub orders: Arc<Executor<Order>>,
    /// Payments per order.
    pub payments: Arc<Executor<Payment>>,
    /// Shipments per order.
    pub shipments: Arc<Executor<Shipment>>,
}

/// An order as a client places it: SKUs and quantities, priced here.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// The new order's id.
    pub order_id: Uuid,
    /// The customer placing it (the JWT subject).
    pub customer_id: String,
    /// What to order.
    pub lines: Vec<RequestedLine>,
    /// Where to ship.
    pub shipping_address: Address,
    /// Payment method token.
    pub payment_method: String,
}

/// Who acts on an order.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The acting user (JWT subject).
    pub user_id: &'a str,
    /// Operators and admins act on every order; customers on their own.
    pub staff: bool,
}

/// One line of an [`OrderRequest`].
#[derive(Debug, Clone)]
pub struct RequestedLine {
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: i64,
}

impl CommandHandler {
    /// Executors over `store`, all with `config`.
    pub fn new(store: EventStore, config: ExecutorConfig) -> Self {
        CommandHandler {
            products: Executor::new(store.clone(), config),
            inventory: Executor::new(store.clone(), config),
            orders: Executor::new(store.clone(), config),
            payments: Executor::new(store.clone(), config),
            shipments: Executor::new(store, config),
        }
    }

    /// Places order `request.order_id` (which must be freshly generated), with each line's unit price and currency taken from
    /// the catalogue now. An unknown or malformed SKU is an invalid field
    /// (`lines[i].sku`); everything else is the order's own rules. Answers
    /// with `reply` `{"order_id", "status": "placed"}`.
    #[tracing::instrument(skip_all, fields(order_id = %request.order_id))]
    pub async fn place_order(
        &self,
        request: OrderRequest,
        context: CommandContext,
    ) -> Result<Outcome, CommandError> {
        let lines = self.price(&request.lines).await?;
        let command = OrderCommand::PlaceOrder {
            order_id: request.order_id,
            customer_id: request.customer_id,
            lines,
            shipping_address: request.shipping_address,
            payment_method: request.payment_method,
        };
        let reply = json!({"order_id": request.order_id, "status": "placed"});
        // The id is a fresh UUID: no need to read a stream that cannot exist.
        self.orders
            .create(&request.order_id.to_string(), command, context, reply)
            .await
    }

    /// Receives `quantity` units of `sku` into stock. A SKU the catalogue
    /// does not define (or a malformed one) is NotFound: stock exists only
    /// for defined products, whoever sends the receipt.
    #[tracing::instrument(skip(self, context, reply))]
    pub async fn receive_stock(
        &self,
        sku: &str,
        quantity: i64,
        context: CommandContext,
        reply: serde_json::Value,
    ) -> Result<Outcome, CommandError> {
        if validate_sku(sku).is_err() {
            return Err(DomainError::not_found(format!("product {sku}")).into());
        }
        let product = self
            .products
            .repository()
            .load_present(&domain::stream_id::<Product>(sku), |p| p.defined)
            .await?;
        if !product.state.defined {
            return Err(DomainError::not_found(format!("product {sku}")).into());
        }
        let command = InventoryCommand::ReceiveStock {
            sku: sku.to_owned(),
            quantity,
        };
        self.inventory.execute(sku, command, context, reply).await
    }

    /// Checks that order `order_id` exists and that `actor` may act on it:
    /// staff on any order, a customer on their own (else Forbidden).
    /// NotFound for an order never placed.
    pub async fn authorize_order(
        &self,
        order_id: Uuid,
        actor: &Actor<'_>,
    ) -> Result<(), CommandError> {
        let order = self
            .orders
            .repository()
            .load_present(&domain::stream_id::<Order>(order_id), |o| {
                o.status.is_some()
            })
            .await?;
        if order.state.status.is_none() {
            return Err(DomainError::not_found(format!("order {order_id}")).into());
        }
        if !actor.staff && order.state.customer_id != actor.user_id {
            return Err(CommandError::Forbidden(
                "this order belongs to another customer".into(),
            ));
        }
        Ok(())
    }

    async fn price(&self, lines: &[RequestedLine]) -> Result<Vec<PricedLine>, CommandError> {
        // Checked before any catalogue lookup, so that an oversized order
        // costs one answer, not one query per line. The domain checks the
        // same rule again.
        if lines.is_empty() || lines.len() > domain::order::MAX_LINES {
            let message = format!("must have 1 to {} lines", domain::order::MAX_LINES);
            return Err(DomainError::Invalid(vec![FieldError::new("lines", message)]).into());
        }
        let mut priced = Vec::with_capacity(lines.len());
        let mut errors = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let field = format!("lines[{i}].sku");
            if let Err(message) = validate_sku(&line.sku) {
                errors.push(FieldError::new(field, message));
                continue;
            }
            let stream_id = domain::stream_id::<Product>(&line.sku);
            let product = self
                .products
                .repository()
                .load_present(&stream_id, |p| p.defined)
                .await?;
            if !product.state.defined {
                errors.push(FieldError::new(
                    field,
                    format!("unknown product {}", line.sku),
                ));
                continue;
            }
            priced.push(PricedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: product.state.unit_price,
                currency: product.state.currency.clone(),
            });
        }
        if errors.is_empty() {
            Ok(priced)
        } else {
            Err(DomainError::Invalid(errors).into())
        }
    }
}
