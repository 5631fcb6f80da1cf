//! Read models: the query side of Fulcrum.
//!
//! Each [`Projection`] owns a Postgres schema (the live ones are
//! `rm_orders`, `rm_inventory`, `rm_catalog`, `rm_sales`; a rebuild fills a
//! fresh one made by the SQL function `fulcrum_create_read_model` and swaps
//! it in). Every schema keeps `stream_positions`: the last applied version
//! of each consumed stream, updated in the same transaction as the rows.
//!
//! - [`apply`]: the live path, one event at a time, idempotent by (stream
//!   id, version), inside the caller's transaction (a Kafka consumer's);
//! - [`catch_up`]: [`apply`] over the store in gap-free global order;
//! - [`LiveBatch`]: what the projector workers ([`worker`]) use, a whole
//!   batch per transaction with the same answers and row logic as
//!   [`apply`], a few statements per batch;
//! - [`build`]: the bulk path for rebuilds, folding in memory and writing
//!   with `COPY`; the same row logic as [`apply`], so the same rows;
//! - [`has_position`] and [`position`]: read-your-writes for queries;
//! - [`read`]: the queries the HTTP API answers from.
//!
//! The row logic of each read model is a pure function over a row struct
//! (one module per projection), shared by the live and the bulk path.

mod apply;
mod build;
mod catalog;
mod copy;
mod error;
mod event;
mod inventory;
pub mod live;
pub mod local;
mod orders;
mod position;
mod projection;
pub mod read;
mod rebuild;
mod sales;
mod schema;
pub mod status;
pub mod worker;

pub use apply::{apply, catch_up, catch_up_skipping, skip, Applied};
pub use build::{build, build_skipping, Skipped};
pub use error::ProjectionError;
pub use live::LiveBatch;
pub use position::{applied_already, has_position, position};
pub use projection::Projection;
pub use rebuild::{Progress, Rebuild, RebuildError, RebuildReport};
