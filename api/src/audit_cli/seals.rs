//! Seals from a terminal: proving an event's inclusion, checking a proof
//! offline, sealing now and making a signing key.

use std::io::Read;

use anyhow::Context;
use eventstore::seal::{self, Proof, SealKey};
use eventstore::EventStore;
use uuid::Uuid;

use super::{connect, parse_key, print, Output};
use crate::config::DatabaseConfig;

/// `fulcrum audit prove`: the inclusion proof of `event_id` in the latest
/// seal.
pub(super) async fn prove(store: &EventStore, event_id: Uuid, out: Output) -> anyhow::Result<bool> {
    let proof = seal::proof_for(store.pool(), event_id).await?;
    print(out, &proof, || describe_proof(&proof))?;
    Ok(true)
}

/// `fulcrum audit check-proof`: checks the proof in `file` (`-`: stdin)
/// without a database, against `public_key` if given (else the proof's
/// own); `Ok(false)` when it does not hold.
pub(super) fn check_proof(
    file: &str,
    public_key: Option<&str>,
    out: Output,
) -> anyhow::Result<bool> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    let proof: Proof = serde_json::from_str(&text).context("the proof is not proof JSON")?;
    let key = public_key.map(parse_key).transpose()?;
    let check = seal::check_proof(&proof, key);
    print(out, &check, || match &check.reason {
        None => format!(
            "VALID: event {} is leaf {} of seal {} ({} events), signed by {}",
            proof.event_id, proof.leaf_index, proof.seal_id, proof.tree_size, check.public_key
        ),
        Some(reason) => format!("INVALID: {reason}"),
    })?;
    Ok(check.valid)
}

/// `fulcrum audit seal`: seals what is new now with `seal_key` (a PEM or
/// its path).
pub(super) async fn seal(
    seal_key: &str,
    database: &DatabaseConfig,
    out: Output,
) -> anyhow::Result<bool> {
    let key = SealKey::parse(seal_key)?;
    let store = connect(database).await?;
    let sealed = seal::seal_all(store.pool(), &key).await?;
    print(out, &sealed, || match sealed.last() {
        Some(last) => format!(
            "sealed: seal {} covers {} events up to position {} (root {})",
            last.seal_id, last.tree_size, last.up_to_position, last.root
        ),
        None => "nothing new to seal".into(),
    })?;
    Ok(true)
}

/// `fulcrum audit keygen`: prints a new signing key's PEM on stdout and its
/// public key on stderr.
pub(super) fn keygen() -> anyhow::Result<bool> {
    let key = SealKey::ephemeral();
    print!("{}", key.to_pem()?);
    eprintln!("public key: {}", key.public_key_hex());
    Ok(true)
}

/// A proof, for a person, with how to check it offline.
fn describe_proof(proof: &Proof) -> String {
    let mut text = format!(
        "event {} ({} v{}, position {})\nis leaf {} of seal {} over {} events\n\
         event hash:  {}\nroot:        {}\nprevious:    {}\npublic key:  {}\nsignature:   {}\n\
         signed text: {}\naudit path ({} hashes, leaf upwards):\n",
        proof.event_id,
        proof.stream_id,
        proof.version,
        proof.global_position,
        proof.leaf_index,
        proof.seal_id,
        proof.tree_size,
        proof.event_hash,
        proof.root,
        proof.previous,
        proof.public_key,
        proof.signature,
        proof.signed_text,
        proof.audit_path.len(),
    );
    for hash in &proof.audit_path {
        text.push_str(&format!("  {hash}\n"));
    }
    text.push_str("check it offline: fulcrum audit prove <id> --json > proof.json; fulcrum audit check-proof proof.json --public-key <key>");
    text
}
