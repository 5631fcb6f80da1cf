//! The order fulfilment saga orchestrator.
//!
//! Built by the order saga issue; empty until then.
