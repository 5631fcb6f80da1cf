//! The four projections, their names and the streams they consume.

use domain::StreamKind;

/// A read model kept up to date from the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Orders as customers and staff see them (`rm_orders.orders`).
    Orders,
    /// Stock per SKU (`rm_inventory.inventory`).
    Inventory,
    /// The product catalogue (`rm_catalog.products`).
    Catalog,
    /// Confirmed orders and revenue per day and currency (`rm_sales.sales_days`).
    Sales,
}

impl Projection {
    /// Every projection.
    pub const ALL: [Projection; 4] = [
        Projection::Orders,
        Projection::Inventory,
        Projection::Catalog,
        Projection::Sales,
    ];

    /// The projection's name: `orders`, `inventory`, `catalog` or `sales`
    /// (as in `projection_status` and the admin API).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Orders => "orders",
            Projection::Inventory => "inventory",
            Projection::Catalog => "catalog",
            Projection::Sales => "sales",
        }
    }

    /// The projection called `name`, if any (exact, lowercase).
    pub fn parse(name: &str) -> Option<Projection> {
        Projection::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The schema queries read: `rm_<name>`.
    pub fn live_schema(self) -> String {
        format!("rm_{}", self.name())
    }

    /// The stream types (the `<type>` of `<type>-<id>`) whose events change
    /// this read model; events of other streams are ignored.
    pub fn stream_types(self) -> &'static [StreamKind] {
        match self {
            Projection::Orders | Projection::Sales => &[StreamKind::Order],
            Projection::Inventory => &[StreamKind::Inventory],
            Projection::Catalog => &[StreamKind::Product],
        }
    }

    /// Whether events of streams of `stream_type` change this read model.
    pub fn consumes(self, stream_type: &str) -> bool {
        self.stream_types().iter().any(|kind| *kind == stream_type)
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_parses_back_from_its_name() {
        for projection in Projection::ALL {
            assert_eq!(Projection::parse(projection.name()), Some(projection));
        }
        assert_eq!(Projection::parse("Orders"), None);
        assert_eq!(Projection::Orders.live_schema(), "rm_orders");
    }

    #[test]
    fn the_sales_projection_consumes_order_streams_only() {
        assert!(Projection::Sales.consumes("order"));
        assert!(!Projection::Sales.consumes("payment"));
        assert!(Projection::Catalog.consumes("product"));
    }
}
