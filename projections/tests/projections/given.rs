//! The "given" of the projection tests: a fresh database, commands carried
//! out through the real command handler, and read models caught up.

use commands::{CommandContext, CommandHandler, ExecutorConfig, OrderRequest, RequestedLine};
use domain::inventory::InventoryCommand;
use domain::order::OrderCommand;
use domain::product::ProductCommand;
use domain::{Address, CancelReason};
use eventstore::testing::TestDb;
use eventstore::{Checkpoint, EventStore, RecordedEvent};
use projections::status::ProjectionInfo;
use projections::Projection;
use serde_json::{json, Value};
use uuid::Uuid;

/// A fresh database, its store and a command handler over it.
pub struct World {
    pub db: TestDb,
    pub store: EventStore,
    pub commands: CommandHandler,
}

fn ctx() -> CommandContext {
    CommandContext::new("tester", "projection-test")
}

impl World {
    pub async fn new() -> World {
        let db = TestDb::with_pool_size(8).await;
        let store = db.store();
        let commands = CommandHandler::new(store.clone(), ExecutorConfig::default());
        World {
            db,
            store,
            commands,
        }
    }

    pub async fn define(&self, sku: &str, unit_price: i64, currency: &str) {
        let command = ProductCommand::DefineProduct {
            sku: sku.into(),
            name: format!("Product {sku}"),
            unit_price,
            currency: currency.into(),
        };
        self.commands
            .products
            .execute(sku, command, ctx(), Value::Null)
            .await
            .unwrap();
    }

    pub async fn change_price(&self, sku: &str, unit_price: i64) {
        let command = ProductCommand::ChangePrice { unit_price };
        self.commands
            .products
            .execute(sku, command, ctx(), Value::Null)
            .await
            .unwrap();
    }

    pub async fn stock(&self, sku: &str, command: InventoryCommand) -> i64 {
        self.commands
            .inventory
            .execute(sku, command, ctx(), Value::Null)
            .await
            .unwrap()
            .position
    }

    pub async fn receive(&self, sku: &str, quantity: i64) -> i64 {
        let command = InventoryCommand::ReceiveStock {
            sku: sku.into(),
            quantity,
        };
        self.stock(sku, command).await
    }

    /// Places an order of `quantity` units of each of `skus` for `customer`.
    pub async fn place(&self, customer: &str, skus: &[&str], quantity: i64) -> Uuid {
        let order_id = Uuid::new_v4();
        let request = OrderRequest {
            order_id,
            customer_id: customer.into(),
            lines: skus
                .iter()
                .map(|sku| RequestedLine {
                    sku: (*sku).into(),
                    quantity,
                })
                .collect(),
            shipping_address: Address {
                name: "Alice".into(),
                line1: "1 Main St".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            payment_method: "tok_visa".into(),
        };
        self.commands.place_order(request, ctx()).await.unwrap();
        order_id
    }

    pub async fn order(&self, order_id: Uuid, command: OrderCommand) -> i64 {
        self.commands
            .orders
            .execute(&order_id.to_string(), command, ctx(), Value::Null)
            .await
            .unwrap()
            .position
    }

    pub async fn confirm(&self, order_id: Uuid) -> i64 {
        self.order(order_id, OrderCommand::ConfirmOrder).await
    }

    pub async fn ship(&self, order_id: Uuid) -> i64 {
        let command = OrderCommand::ShipOrder {
            carrier: "DHL".into(),
            tracking_number: "TRK-1".into(),
        };
        self.order(order_id, command).await
    }

    pub async fn deliver(&self, order_id: Uuid) -> i64 {
        self.order(order_id, OrderCommand::DeliverOrder).await
    }

    pub async fn cancel(&self, order_id: Uuid, reason: CancelReason) -> i64 {
        self.order(order_id, OrderCommand::CancelOrder { reason })
            .await
    }

    /// Waits until every committed event is readable in the gap-free order
    /// (another test's open transaction holds the horizon back a moment).
    pub async fn settle(&self) {
        for _ in 0..1000 {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events
                  WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            )
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            if behind == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the global order did not settle within 10 s");
    }

    /// Catches `projection`'s live schema up with every event.
    pub async fn catch_up(&self, projection: Projection) -> Checkpoint {
        self.settle().await;
        projections::catch_up(
            &self.store,
            projection,
            &projection.live_schema(),
            Checkpoint::START,
        )
        .await
        .unwrap()
    }

    /// Makes an empty schema `name` for `projection`.
    pub async fn create_schema(&self, projection: Projection, name: &str) {
        sqlx::query("SELECT fulcrum_create_read_model($1, $2)")
            .bind(projection.name())
            .bind(name)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    /// Every row of `schema.table` as JSON, in a stable order.
    pub async fn rows(&self, schema: &str, table: &str) -> Vec<Value> {
        sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM {schema}.{table} t ORDER BY to_jsonb(t)::text"
        ))
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Every table of a read model in `schema`, as JSON.
    pub async fn dump(&self, projection: Projection, schema: &str) -> Value {
        let tables: &[&str] = match projection {
            Projection::Orders => &["orders", "stream_positions"],
            Projection::Inventory => &["inventory", "stream_positions"],
            Projection::Catalog => &["products", "stream_positions"],
            Projection::Sales => &["sales_orders", "sales_days", "stream_positions"],
        };
        let mut dump = serde_json::Map::new();
        for table in tables {
            dump.insert((*table).into(), json!(self.rows(schema, table).await));
        }
        Value::Object(dump)
    }

    /// Every event of `stream_id`.
    pub async fn stream(&self, stream_id: &str) -> Vec<RecordedEvent> {
        self.store.read_stream(stream_id, 1, 1000).await.unwrap()
    }

    /// The one order row of the live orders schema for `order_id`.
    pub async fn order_row(&self, order_id: Uuid) -> Value {
        sqlx::query_scalar("SELECT to_jsonb(o) FROM rm_orders.orders o WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

impl World {
    /// Every event readable in the gap-free global order, once the order settled.
    pub async fn events(&self) -> Vec<RecordedEvent> {
        self.settle().await;
        let mut all = Vec::new();
        let mut after = Checkpoint::START;
        loop {
            let batch = self.store.read_all(after, 1000).await.unwrap();
            let Some(last) = batch.last() else {
                return all;
            };
            after = last.checkpoint();
            all.extend(batch);
        }
    }

    /// Builds `projection` with the bulk path into a new schema `name`.
    pub async fn build(&self, projection: Projection, name: &str) -> Checkpoint {
        self.settle().await;
        self.create_schema(projection, name).await;
        projections::build(&self.store, projection, name, Checkpoint::START, |_, _| {})
            .await
            .unwrap()
    }

    /// The admin list's line for `projection`.
    pub async fn info(&self, projection: Projection) -> ProjectionInfo {
        projections::status::list(&self.db.pool)
            .await
            .unwrap()
            .into_iter()
            .find(|info| info.name == projection.name())
            .unwrap()
    }

    /// Applies `event` to `schema` in a transaction of its own.
    pub async fn apply(
        &self,
        projection: Projection,
        schema: &str,
        event: &RecordedEvent,
    ) -> projections::Applied {
        let mut tx = self.db.pool.begin().await.unwrap();
        let applied = projections::apply(&mut tx, projection, schema, event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        applied
    }

    /// The read-model schemas that exist (`rm_%`), sorted.
    pub async fn schemas(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT schema_name::text FROM information_schema.schemata
              WHERE schema_name LIKE 'rm\\_%' ORDER BY 1",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

/// Asserts two dumps are equal, naming the first table and row that differ
/// (a whole dump is too large to read in a failure message).
pub fn assert_same(left: &Value, right: &Value, what: &str) {
    let (Value::Object(l), Value::Object(r)) = (left, right) else {
        panic!("{what}: dumps are objects");
    };
    assert_eq!(
        l.keys().collect::<Vec<_>>(),
        r.keys().collect::<Vec<_>>(),
        "{what}: tables"
    );
    for (table, rows) in l {
        let (a, b) = (rows.as_array().unwrap(), r[table].as_array().unwrap());
        if let Some((i, (x, y))) = a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y) {
            panic!("{what}: {table} row {i} differs:\n  left:  {x}\n  right: {y}");
        }
        assert_eq!(a.len(), b.len(), "{what}: {table} row count");
    }
}
