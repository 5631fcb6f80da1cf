//! The bulk path (`build`: in-memory fold + COPY) and the live path
//! (`catch_up`: `apply` one event at a time) make the same rows.

use eventstore::Checkpoint;
use projections::Projection;
use serde_json::Value;

use crate::given::{assert_same, World};
use crate::history::History;

fn count(dump: &Value, table: &str) -> usize {
    dump[table].as_array().unwrap().len()
}

#[tokio::test]
async fn bulk_build_and_live_catch_up_make_identical_rows_for_every_projection() {
    let w = World::new().await;
    let mut history = History::new(100, 7);
    history.generate(&w.store, 250, 25).await.unwrap();
    let events = w.events().await;
    assert_eq!(events.len(), history.events);
    assert!(history.events >= 3000, "{} events", history.events);
    let last = events.last().unwrap().checkpoint();

    let mut built = Vec::new();
    for projection in Projection::ALL {
        let (bulk, live) = (format!("bulk_{projection}"), format!("live_{projection}"));
        w.create_schema(projection, &bulk).await;
        let mut progress = Vec::new();
        let from_bulk = projections::build(
            &w.store,
            projection,
            &bulk,
            Checkpoint::START,
            |read, position| progress.push((read, position)),
        )
        .await
        .unwrap();
        w.create_schema(projection, &live).await;
        let from_live = projections::catch_up(&w.store, projection, &live, Checkpoint::START)
            .await
            .unwrap();
        assert_eq!(from_bulk, last, "{projection}: build's checkpoint");
        assert_eq!(from_live, last, "{projection}: catch-up's checkpoint");
        assert_eq!(
            progress.last().copied(),
            Some((history.events as u64, last.position)),
            "{projection}: build's last progress"
        );
        assert!(progress.windows(2).all(|p| p[0].0 < p[1].0));

        let dump = w.dump(projection, &bulk).await;
        assert_same(&dump, &w.dump(projection, &live).await, projection.name());
        // Not trivially equal: the history reached every table.
        match projection {
            Projection::Orders => assert_eq!(count(&dump, "orders"), history.orders),
            Projection::Inventory => assert_eq!(count(&dump, "inventory"), 100),
            Projection::Catalog => assert_eq!(count(&dump, "products"), 100),
            Projection::Sales => {
                assert_eq!(count(&dump, "sales_orders"), history.orders);
                let currencies: Vec<&str> = dump["sales_days"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["currency"].as_str().unwrap())
                    .collect();
                assert!(currencies.contains(&"EUR") && currencies.contains(&"USD"));
            }
        }
        built.push((projection, bulk, from_bulk, live, from_live));
    }

    // Orders went every way a finished saga leaves them (none stays placed).
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM bulk_orders.orders GROUP BY status ORDER BY status")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["cancelled", "confirmed", "delivered", "shipped"]);

    // More history after the build: the live path continues a bulk-built
    // schema (its stream positions) exactly as a live-built one.
    history.generate(&w.store, 40, 20).await.unwrap();
    let events = w.events().await;
    let last = events.last().unwrap().checkpoint();
    for (projection, bulk, from_bulk, live, from_live) in built {
        let to_bulk = projections::catch_up(&w.store, projection, &bulk, from_bulk)
            .await
            .unwrap();
        let to_live = projections::catch_up(&w.store, projection, &live, from_live)
            .await
            .unwrap();
        assert_eq!((to_bulk, to_live), (last, last));
        let fresh = format!("fresh_{projection}");
        w.build(projection, &fresh).await;
        let dump = w.dump(projection, &fresh).await;
        assert_same(&w.dump(projection, &bulk).await, &dump, projection.name());
        assert_same(&w.dump(projection, &live).await, &dump, projection.name());
    }
}
