//! The Fulcrum HTTP server: configuration, start-up, routes and errors.
//! The `fulcrum` binary (`src/main.rs`) is a thin CLI over this library.

pub mod audit_cli;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod telemetry;
pub mod trace;

pub use config::{DatabaseConfig, ServeConfig};
pub use startup::{AppState, Application};
