//! Each projection's rows after a scripted scenario carried out through the
//! real command handler, read back with the API's queries.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use domain::inventory::InventoryCommand;
use domain::{CancelReason, OrderLine, OrderStatus};
use projections::read::{self, OrderFilter, OrderView, ProductView, SalesDay, StockView};
use projections::Projection;
use uuid::Uuid;

use crate::given::World;

fn line(sku: &str, quantity: i64, unit_price: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price,
    }
}

/// The stored order `order_id` as the live read model answers it.
async fn view(w: &World, order_id: Uuid) -> OrderView {
    read::order(&w.db.pool, "rm_orders", order_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("order {order_id} is not in the read model"))
}

/// What the order's stream says the row's timestamps and paging key are:
/// `recorded_at` of the first and of the last event, and the first event's
/// global position.
async fn stamps(w: &World, order_id: Uuid) -> (DateTime<Utc>, DateTime<Utc>, i64) {
    let events = w.stream(&format!("order-{order_id}")).await;
    let (first, last) = (events.first().unwrap(), events.last().unwrap());
    (first.recorded_at, last.recorded_at, first.global_position)
}

/// The expected view of an order: everything but the stamps is given.
#[allow(clippy::too_many_arguments)]
async fn expected(
    w: &World,
    order_id: Uuid,
    customer: &str,
    status: &str,
    lines: Vec<OrderLine>,
    total: i64,
    cancel_reason: Option<&str>,
    version: i64,
) -> OrderView {
    let (placed_at, updated_at, seq) = stamps(w, order_id).await;
    OrderView {
        order_id,
        customer_id: customer.into(),
        status: status.into(),
        lines,
        total,
        currency: "EUR".into(),
        cancel_reason: cancel_reason.map(Into::into),
        version,
        placed_at,
        updated_at,
        seq,
    }
}

#[tokio::test]
async fn orders_follow_every_status_transition_with_version_totals_and_reason() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    w.define("B", 1000, "EUR").await;

    // One order through placed -> confirmed -> shipped -> delivered, read
    // after every step.
    let delivered = w.place("cust-1", &["A", "B"], 2).await;
    w.catch_up(Projection::Orders).await;
    let lines = vec![line("A", 2, 250), line("B", 2, 1000)];
    assert_eq!(
        view(&w, delivered).await,
        expected(
            &w,
            delivered,
            "cust-1",
            "placed",
            lines.clone(),
            2500,
            None,
            1
        )
        .await
    );
    for (step, status, version) in [(0, "confirmed", 2), (1, "shipped", 3), (2, "delivered", 4)] {
        match step {
            0 => w.confirm(delivered).await,
            1 => w.ship(delivered).await,
            _ => w.deliver(delivered).await,
        };
        w.catch_up(Projection::Orders).await;
        let want = expected(
            &w,
            delivered,
            "cust-1",
            status,
            lines.clone(),
            2500,
            None,
            version,
        );
        assert_eq!(view(&w, delivered).await, want.await, "after {status}");
    }

    // Cancelled while placed, and after confirmation.
    let out_of_stock = w.place("cust-2", &["A"], 3).await;
    w.cancel(out_of_stock, CancelReason::OutOfStock).await;
    let customer_cancelled = w.place("cust-1", &["B"], 1).await;
    w.confirm(customer_cancelled).await;
    w.cancel(customer_cancelled, CancelReason::CustomerCancelled)
        .await;
    // Cancelling a cancelled order again appends nothing: the version stays.
    w.cancel(customer_cancelled, CancelReason::CustomerCancelled)
        .await;
    let placed = w.place("cust-3", &["B", "A"], 5).await;
    w.catch_up(Projection::Orders).await;

    let want = expected(
        &w,
        out_of_stock,
        "cust-2",
        "cancelled",
        vec![line("A", 3, 250)],
        750,
        Some("out_of_stock"),
        2,
    );
    assert_eq!(view(&w, out_of_stock).await, want.await);
    let want = expected(
        &w,
        customer_cancelled,
        "cust-1",
        "cancelled",
        vec![line("B", 1, 1000)],
        1000,
        Some("customer_cancelled"),
        3,
    );
    assert_eq!(view(&w, customer_cancelled).await, want.await);
    let want = expected(
        &w,
        placed,
        "cust-3",
        "placed",
        vec![line("B", 5, 1000), line("A", 5, 250)],
        6250,
        None,
        1,
    );
    assert_eq!(view(&w, placed).await, want.await);
    assert_eq!(
        read::order(&w.db.pool, "rm_orders", Uuid::new_v4())
            .await
            .unwrap(),
        None
    );

    // Pages: newest placed first, filtered by status and by customer.
    let pool = &w.db.pool;
    let cancelled = OrderFilter {
        status: Some(OrderStatus::Cancelled),
        limit: 1,
        ..OrderFilter::default()
    };
    let first = read::orders(pool, "rm_orders", &cancelled).await.unwrap();
    let ids: Vec<Uuid> = first.items.iter().map(|o| o.order_id).collect();
    assert_eq!(ids, [customer_cancelled]);
    let cursor = first.next_cursor.expect("a second page follows");
    let second = OrderFilter {
        before: read::parse_cursor(&cursor),
        ..cancelled
    };
    let second = read::orders(pool, "rm_orders", &second).await.unwrap();
    let ids: Vec<Uuid> = second.items.iter().map(|o| o.order_id).collect();
    assert_eq!(ids, [out_of_stock]);
    assert_eq!(second.next_cursor, None);
    let mine = OrderFilter {
        customer_id: Some("cust-1".into()),
        limit: 50,
        ..OrderFilter::default()
    };
    let mine = read::orders(pool, "rm_orders", &mine).await.unwrap();
    let ids: Vec<Uuid> = mine.items.iter().map(|o| o.order_id).collect();
    assert_eq!(ids, [customer_cancelled, delivered]);
    assert_eq!(mine.next_cursor, None);
}

/// (stream id, version) of stream position rows, by stream id.
fn versions(positions: &[serde_json::Value]) -> Vec<(&str, i64)> {
    let mut versions: Vec<(&str, i64)> = positions
        .iter()
        .map(|p| {
            (
                p["stream_id"].as_str().unwrap(),
                p["version"].as_i64().unwrap(),
            )
        })
        .collect();
    versions.sort();
    versions
}

async fn stock(w: &World, sku: &str) -> Option<StockView> {
    read::stock(&w.db.pool, "rm_inventory", sku).await.unwrap()
}

fn stock_view(sku: &str, on_hand: i64, reserved: i64) -> Option<StockView> {
    Some(StockView {
        sku: sku.into(),
        on_hand,
        reserved,
        available: on_hand - reserved,
    })
}

#[tokio::test]
async fn inventory_keeps_on_hand_reserved_and_available_through_every_stock_event() {
    let w = World::new().await;
    let inventory = Projection::Inventory;
    w.receive("A", 10).await;
    w.receive("A", 5).await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "A").await, stock_view("A", 15, 0));

    let (o1, o2, o3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let reserve = |order_id, quantity| InventoryCommand::ReserveStock {
        sku: "A".into(),
        order_id,
        quantity,
    };
    w.stock("A", reserve(o1, 4)).await;
    w.stock("A", reserve(o2, 3)).await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "A").await, stock_view("A", 15, 7));

    // More than available: a rejection, which changes no figure.
    w.stock("A", reserve(o3, 9)).await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "A").await, stock_view("A", 15, 7));
    let events = w.stream("inventory-A").await;
    assert_eq!(events[4].event_type, "StockReservationRejected");

    w.stock("A", InventoryCommand::ReleaseStock { order_id: o1 })
        .await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "A").await, stock_view("A", 15, 3));

    w.stock("A", InventoryCommand::CommitStock { order_id: o2 })
        .await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "A").await, stock_view("A", 12, 0));

    // A rejection on a SKU never stocked starts its row at zero.
    w.stock(
        "B",
        InventoryCommand::ReserveStock {
            sku: "B".into(),
            order_id: o3,
            quantity: 1,
        },
    )
    .await;
    w.catch_up(inventory).await;
    assert_eq!(stock(&w, "B").await, stock_view("B", 0, 0));
    assert_eq!(stock(&w, "C").await, None);

    let positions = w.rows("rm_inventory", "stream_positions").await;
    assert_eq!(
        versions(&positions),
        [("inventory-A", 7), ("inventory-B", 1)]
    );
}

#[tokio::test]
async fn catalog_keeps_each_products_name_and_current_price() {
    let w = World::new().await;
    w.define("B", 99, "USD").await;
    w.define("A", 250, "EUR").await;
    w.change_price("A", 300).await;
    // The same price again appends nothing.
    w.change_price("A", 300).await;
    w.catch_up(Projection::Catalog).await;
    let product = |sku: &str, unit_price, currency: &str| ProductView {
        sku: sku.into(),
        name: format!("Product {sku}"),
        unit_price,
        currency: currency.into(),
    };
    let products = read::products(&w.db.pool, "rm_catalog").await.unwrap();
    assert_eq!(
        products,
        [product("A", 300, "EUR"), product("B", 99, "USD")]
    );

    w.change_price("B", 120).await;
    w.change_price("A", 275).await;
    w.catch_up(Projection::Catalog).await;
    let products = read::products(&w.db.pool, "rm_catalog").await.unwrap();
    assert_eq!(
        products,
        [product("A", 275, "EUR"), product("B", 120, "USD")]
    );
    let positions = w.rows("rm_catalog", "stream_positions").await;
    assert_eq!(versions(&positions), [("product-A", 3), ("product-B", 2)]);
}

/// The UTC day `order_id` was confirmed on, from its stream.
async fn confirmed_on(w: &World, order_id: Uuid) -> NaiveDate {
    w.stream(&format!("order-{order_id}"))
        .await
        .iter()
        .find(|e| e.event_type == "OrderConfirmed")
        .expect("the order was confirmed")
        .recorded_at
        .date_naive()
}

#[tokio::test]
async fn sales_count_confirmed_orders_per_day_and_currency_and_take_back_cancellations() {
    let w = World::new().await;
    w.define("A", 250, "EUR").await;
    w.define("B", 1000, "EUR").await;
    w.define("U", 700, "USD").await;
    w.define("G", 50, "GBP").await;

    let confirmed = w.place("c", &["A"], 2).await; // 500 EUR
    w.confirm(confirmed).await;
    let delivered = w.place("c", &["A"], 4).await; // 1000 EUR
    w.confirm(delivered).await;
    w.ship(delivered).await;
    w.deliver(delivered).await;
    let shipped = w.place("c", &["B"], 1).await; // 1000 EUR
    w.confirm(shipped).await;
    w.ship(shipped).await;
    let taken_back = w.place("c", &["A", "B"], 1).await; // 1250 EUR
    w.confirm(taken_back).await;
    w.cancel(taken_back, CancelReason::CustomerCancelled).await;
    let never_counted = w.place("c", &["B"], 3).await; // 3000 EUR
    w.cancel(never_counted, CancelReason::PaymentDeclined).await;
    let _placed_only = w.place("c", &["B"], 7).await;
    let dollars = w.place("c", &["U"], 2).await; // 1400 USD
    w.confirm(dollars).await;
    let pounds = w.place("c", &["G"], 1).await; // 50 GBP, taken back
    w.confirm(pounds).await;
    w.cancel(pounds, CancelReason::PaymentTimeout).await;
    w.catch_up(Projection::Sales).await;

    let mut want: BTreeMap<(NaiveDate, &str), (i64, i64)> = BTreeMap::new();
    for (order_id, currency, revenue, counts) in [
        (confirmed, "EUR", 500, true),
        (delivered, "EUR", 1000, true),
        (shipped, "EUR", 1000, true),
        (taken_back, "EUR", 1250, false),
        (dollars, "USD", 1400, true),
        (pounds, "GBP", 50, false),
    ] {
        let day = confirmed_on(&w, order_id).await;
        let figures = want.entry((day, currency)).or_default();
        if counts {
            figures.0 += 1;
            figures.1 += revenue;
        }
    }
    let want: Vec<SalesDay> = want
        .into_iter()
        .filter(|(_, (orders, _))| *orders != 0)
        .map(|((day, currency), (orders, revenue))| SalesDay {
            day,
            orders,
            revenue,
            currency: currency.into(),
        })
        .collect();
    let days = read::sales_days(&w.db.pool, "rm_sales", None, None)
        .await
        .unwrap();
    assert_eq!(days, want);
    // Almost always a single day: then exactly these figures.
    if days.len() == 2 {
        let figures: Vec<(i64, i64, &str)> = days
            .iter()
            .map(|d| (d.orders, d.revenue, d.currency.as_str()))
            .collect();
        assert_eq!(figures, [(3, 2500, "EUR"), (1, 1400, "USD")]);
    }

    // The day filter is inclusive at both ends.
    let first = days[0].day;
    let on_first = read::sales_days(&w.db.pool, "rm_sales", Some(first), Some(first))
        .await
        .unwrap();
    assert_eq!(
        on_first,
        days[..]
            .iter()
            .filter(|d| d.day == first)
            .cloned()
            .collect::<Vec<_>>()
    );
    let later = first.succ_opt().unwrap();
    let after = read::sales_days(&w.db.pool, "rm_sales", Some(later), None)
        .await
        .unwrap();
    assert_eq!(
        after,
        days[..]
            .iter()
            .filter(|d| d.day >= later)
            .cloned()
            .collect::<Vec<_>>()
    );

    // What each order contributes: cancelled after confirmation keeps its
    // day but no longer counts; cancelled before never had a day.
    let contribution = |order_id: Uuid| {
        sqlx::query_as::<_, (i64, String, Option<NaiveDate>, bool)>(
            "SELECT total, currency, confirmed_day, counted
               FROM rm_sales.sales_orders WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&w.db.pool)
    };
    let day = confirmed_on(&w, taken_back).await;
    assert_eq!(
        contribution(taken_back).await.unwrap(),
        (1250, "EUR".into(), Some(day), false)
    );
    assert_eq!(
        contribution(never_counted).await.unwrap(),
        (3000, "EUR".into(), None, false)
    );
    let day = confirmed_on(&w, dollars).await;
    assert_eq!(
        contribution(dollars).await.unwrap(),
        (1400, "USD".into(), Some(day), true)
    );
    // The GBP day keeps a row of zeros, which the query leaves out.
    let gbp: Vec<(i64, i64)> =
        sqlx::query_as("SELECT orders, revenue FROM rm_sales.sales_days WHERE currency = 'GBP'")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(gbp, [(0, 0)]);
}
