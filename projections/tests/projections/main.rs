//! Integration tests of the read models against a real Postgres: the rows
//! each projection keeps, bulk builds equal to the live path, idempotence
//! under concurrent and repeated delivery, positions, rebuilds and the
//! admin list. Every test runs on a fresh database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod given;
mod history;

mod admin;
mod concurrency;
mod equivalence;
mod positions;
mod rebuild;
mod rows;
