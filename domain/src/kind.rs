//! The kinds of stream Fulcrum writes: one closed set, matched exhaustively.
//!
//! A stream id is `"<kind>-<id>"` (see [`crate::stream_id`]). Code that
//! treats streams differently by kind matches on [`StreamKind`], never on the
//! string, so a new kind cannot slip past a `match` the compiler does not
//! point out.

use std::fmt;

/// The kind of a stream: the `<kind>` of `"<kind>-<id>"`, one per aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `product-<sku>`: a catalog entry.
    Product,
    /// `inventory-<sku>`: the stock of one SKU.
    Inventory,
    /// `order-<uuid>`: a customer's order.
    Order,
    /// `payment-<uuid>`: the payment of one order.
    Payment,
    /// `shipment-<uuid>`: the shipment of one order.
    Shipment,
    /// `saga-<uuid>`: the saga that drives one order.
    Saga,
}

impl StreamKind {
    /// Every kind, in the order above.
    pub const ALL: [StreamKind; 6] = [
        StreamKind::Product,
        StreamKind::Inventory,
        StreamKind::Order,
        StreamKind::Payment,
        StreamKind::Shipment,
        StreamKind::Saga,
    ];

    /// The kind as it appears in stream ids and the store's `stream_type`
    /// column.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamKind::Product => "product",
            StreamKind::Inventory => "inventory",
            StreamKind::Order => "order",
            StreamKind::Payment => "payment",
            StreamKind::Shipment => "shipment",
            StreamKind::Saga => "saga",
        }
    }

    /// The kind called `name` (exact, lowercase), if any.
    pub fn parse(name: &str) -> Option<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The kind of the stream `stream_id` (`"<kind>-<id>"`), if it is one of
    /// Fulcrum's.
    ///
    /// ```
    /// use domain::StreamKind;
    /// assert_eq!(StreamKind::of("order-42"), Some(StreamKind::Order));
    /// assert_eq!(StreamKind::of("ledger-42"), None);
    /// ```
    pub fn of(stream_id: &str) -> Option<StreamKind> {
        let kind = stream_id
            .split_once('-')
            .map_or(stream_id, |(kind, _)| kind);
        StreamKind::parse(kind)
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for StreamKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in StreamKind::ALL {
            assert_eq!(StreamKind::parse(kind.as_str()), Some(kind));
            assert_eq!(StreamKind::of(&format!("{kind}-x-1")), Some(kind));
        }
        assert_eq!(StreamKind::parse("Order"), None);
        assert_eq!(StreamKind::of("order"), Some(StreamKind::Order));
        assert_eq!(StreamKind::of(""), None);
    }
}
