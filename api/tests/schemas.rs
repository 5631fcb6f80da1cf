//! `schemas/openapi.json` and the HTTP schemas in `schemas/` are generated
//! from the Rust types; this test fails when they drift. Regenerate every
//! committed schema (these and the domain's) with
//! `FULCRUM_BLESS_SCHEMAS=1 cargo test -p domain -p api --test schemas`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn the_committed_contract_matches_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let bless = std::env::var_os("FULCRUM_BLESS_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (path, generated) in api::openapi::contract_schemas() {
        let file = dir.join(&path);
        if bless {
            std::fs::write(&file, &generated).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(generated.as_str()) {
            drifted.push(path);
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas/ is out of date for {drifted:?}; run \
         FULCRUM_BLESS_SCHEMAS=1 cargo test -p domain -p api --test schemas"
    );
}
