//! `fulcrum audit ...`: the audit side from a terminal, for people (the
//! default) and scripts (`--json`). It reads the database directly and
//! needs nothing but read access (and, to check seals against a key you
//! trust, the public key). Exits non-zero when a verification fails.

use std::io::Read;
use std::str::FromStr;

use anyhow::Context;
use commands::history::{self, At};
use eventstore::seal::{self, Proof, SealKey};
use eventstore::{EventMetadata, EventStore, RecordedEvent};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::DatabaseConfig;

/// `fulcrum audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print a stream's history and the result of verifying its hash chain.
    Stream {
        /// The stream, e.g. order-<uuid>.
        stream_id: String,
        /// Also print the state folded up to this version.
        #[arg(long)]
        state_at: Option<u64>,
        /// Output format.
        #[command(flatten)]
        out: Output,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Print everything one request caused, as a causal tree.
    Correlation {
        /// The correlation id (X-Correlation-Id of the request).
        correlation_id: String,
        /// Output format.
        #[command(flatten)]
        out: Output,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Verify one stream's hash chain, every stream's (--all), or every
    /// seal against every event (--seals).
    Verify {
        /// The stream to verify.
        #[arg(required_unless_present_any = ["all", "seals"], conflicts_with_all = ["all", "seals"])]
        stream_id: Option<String>,
        /// Verify every stream's hash chain.
        #[arg(long, conflicts_with = "seals")]
        all: bool,
        /// Recompute every seal from the events: names the first missing,
        /// altered, inserted or re-ordered event and the seal that catches it.
        #[arg(long)]
        seals: bool,
        /// Hex Ed25519 public key to check seal signatures with (default:
        /// FULCRUM_SEAL_PUBLIC_KEY, else each seal's stored key, which
        /// proves integrity but not who sealed).
        #[arg(long, env = "FULCRUM_SEAL_PUBLIC_KEY")]
        public_key: Option<String>,
        /// Output format.
        #[command(flatten)]
        out: Output,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Print the inclusion proof of an event in the latest seal (check it
    /// offline with `fulcrum audit check-proof` or the procedure in docs/audit.md).
    Prove {
        /// The event id.
        event_id: Uuid,
        /// Output format.
        #[command(flatten)]
        out: Output,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Check a proof offline (no database): a file, or `-` for stdin.
    CheckProof {
        /// The proof JSON (as `prove --json` or the proof route print it).
        file: String,
        /// Hex Ed25519 public key you trust (default: the proof's own).
        #[arg(long, env = "FULCRUM_SEAL_PUBLIC_KEY")]
        public_key: Option<String>,
        /// Output format.
        #[command(flatten)]
        out: Output,
    },
    /// Seal what is new now, with FULCRUM_SEAL_KEY.
    Seal {
        /// The signing key: a PKCS#8 PEM or its path.
        #[arg(long, env = "FULCRUM_SEAL_KEY", hide_env_values = true)]
        seal_key: String,
        /// Output format.
        #[command(flatten)]
        out: Output,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Make a new seal signing key: prints the private key (PEM, for
    /// FULCRUM_SEAL_KEY) on stdout and the public key on stderr.
    Keygen,
}

/// Output format.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print JSON instead of text for a person.
    #[arg(long)]
    pub json: bool,
}

/// Runs an audit subcommand; `Ok(false)` when a verification failed.
pub async fn run(args: AuditArgs) -> anyhow::Result<bool> {
    match args.command {
        AuditCommand::Stream {
            stream_id,
            state_at,
            out,
            database,
        } => stream(&connect(&database).await?, &stream_id, state_at, out).await,
        AuditCommand::Correlation {
            correlation_id,
            out,
            database,
        } => correlation(&connect(&database).await?, &correlation_id, out).await,
        AuditCommand::Verify {
            stream_id,
            all,
            seals,
            public_key,
            out,
            database,
        } => {
            let store = connect(&database).await?;
            if seals {
                verify_seals(&store, public_key.as_deref(), out).await
            } else if all {
                verify_all(&store, out).await
            } else {
                let stream_id = stream_id.unwrap_or_default();
                let v = eventstore::verify_stream(store.pool(), &stream_id).await?;
                print(out, &v, || {
                    if v.valid {
                        format!("{stream_id}: valid ({} events)", v.events_checked)
                    } else {
                        format!(
                            "{stream_id}: INVALID: version {} is altered, missing or out of order ({} events read)",
                            v.first_invalid_version.unwrap_or(0),
                            v.events_checked
                        )
                    }
                })?;
                Ok(v.valid)
            }
        }
        AuditCommand::Prove {
            event_id,
            out,
            database,
        } => {
            let store = connect(&database).await?;
            let proof = seal::proof_for(store.pool(), event_id).await?;
            print(out, &proof, || describe_proof(&proof))?;
            Ok(true)
        }
        AuditCommand::CheckProof {
            file,
            public_key,
            out,
        } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            }
            let proof: Proof =
                serde_json::from_str(&text).context("the proof is not proof JSON")?;
            let key = public_key.as_deref().map(parse_key).transpose()?;
            let check = seal::check_proof(&proof, key);
            print(out, &check, || match &check.reason {
                None => format!(
                    "VALID: event {} is leaf {} of seal {} ({} events), signed by {}",
                    proof.event_id,
                    proof.leaf_index,
                    proof.seal_id,
                    proof.tree_size,
                    check.public_key
                ),
                Some(reason) => format!("INVALID: {reason}"),
            })?;
            Ok(check.valid)
        }
        AuditCommand::Seal {
            seal_key,
            out,
            database,
        } => {
            let key = SealKey::parse(&seal_key)?;
            let store = connect(&database).await?;
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
        AuditCommand::Keygen => {
            let key = SealKey::ephemeral();
            print!("{}", key.to_pem()?);
            eprintln!("public key: {}", key.public_key_hex());
            Ok(true)
        }
    }
}

/// A plain connection: no database created, no migration applied, so
/// read access is enough (and slow-statement logs stay out of the output).
async fn connect(database: &DatabaseConfig) -> anyhow::Result<EventStore> {
    use sqlx::ConnectOptions;
    let options = sqlx::postgres::PgConnectOptions::from_str(&database.database_url)
        .context("DATABASE_URL is not a valid Postgres URL")?
        .disable_statement_logging();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(database.database_max_connections.clamp(1, 4))
        .connect_with(options)
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
    Ok(EventStore::new(pool))
}

fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .context("the public key must be 64 hex characters (32 bytes)")
}

fn print<T: Serialize>(
    out: Output,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if out.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn line(event: &RecordedEvent) -> String {
    let metadata = EventMetadata::of(&event.metadata);
    format!(
        "v{:<4} #{:<8} {}  {:<26} by {:<12} corr {}  hash {}…",
        event.version,
        event.global_position,
        event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        event.event_type,
        metadata.user_id.as_deref().unwrap_or("-"),
        metadata.correlation_id.as_deref().unwrap_or("-"),
        &event.hash[..12.min(event.hash.len())],
    )
}

async fn stream(
    store: &EventStore,
    stream_id: &str,
    state_at: Option<u64>,
    out: Output,
) -> anyhow::Result<bool> {
    let events = store.read_stream_to_end(stream_id, None).await?;
    anyhow::ensure!(!events.is_empty(), "no stream {stream_id}");
    let verification = eventstore::verify_stream(store.pool(), stream_id).await?;
    let state = match state_at {
        Some(v) => Some(history::state_at(store, stream_id, At::Version(v)).await?),
        None => None,
    };
    #[derive(Serialize)]
    struct StreamOut<'a> {
        stream_id: &'a str,
        events: &'a [RecordedEvent],
        verification: &'a eventstore::Verification,
        state: Option<Value>,
    }
    let answer = StreamOut {
        stream_id,
        events: &events,
        verification: &verification,
        state: state.as_ref().and_then(|s| s.state.clone()),
    };
    print(out, &answer, || {
        let mut text = format!("{stream_id}: {} events\n", events.len());
        for event in &events {
            text.push_str(&line(event));
            text.push('\n');
        }
        text.push_str(&if verification.valid {
            "hash chain: valid".to_owned()
        } else {
            format!(
                "hash chain: INVALID from version {}",
                verification.first_invalid_version.unwrap_or(0)
            )
        });
        if let Some(past) = &state {
            text.push_str(&format!(
                "\nstate at version {}: {}",
                past.version,
                serde_json::to_string_pretty(&past.state).unwrap_or_default()
            ));
        }
        text
    })?;
    Ok(verification.valid)
}

async fn correlation(
    store: &EventStore,
    correlation_id: &str,
    out: Output,
) -> anyhow::Result<bool> {
    let events = eventstore::audit::correlated(store.pool(), correlation_id, 10_000).await?;
    anyhow::ensure!(
        !events.is_empty(),
        "no event carries correlation id {correlation_id}"
    );
    if out.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"correlation_id": correlation_id, "events": events})
            )?
        );
        return Ok(true);
    }
    // Indent each event under the event that caused it.
    let mut depth: std::collections::HashMap<String, usize> = Default::default();
    println!("{correlation_id}: {} events", events.len());
    for event in &events {
        let metadata = EventMetadata::of(&event.metadata);
        let parent = metadata
            .causation_id
            .as_deref()
            .and_then(|c| depth.get(c).copied());
        let d = parent.map_or(0, |p| p + 1);
        depth.insert(event.event_id.to_string(), d);
        println!(
            "{}{} {} v{} #{} by {}",
            "  ".repeat(d),
            if d == 0 { "●" } else { "└─" },
            event.event_type,
            event.version,
            event.global_position,
            metadata.user_id.as_deref().unwrap_or("-"),
        );
        println!("{}    {}", "  ".repeat(d), event.stream_id);
    }
    Ok(true)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#-"),
    );
    bar
}

async fn verify_all(store: &EventStore, out: Output) -> anyhow::Result<bool> {
    let streams: Vec<String> =
        sqlx::query_scalar("SELECT stream_id FROM streams ORDER BY stream_id")
            .fetch_all(store.pool())
            .await?;
    let progress = (!out.json).then(|| bar(streams.len() as u64, "streams"));
    let mut invalid = Vec::new();
    for stream_id in &streams {
        let v = eventstore::verify_stream(store.pool(), stream_id).await?;
        if !v.valid {
            invalid.push(v);
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    #[derive(Serialize)]
    struct AllOut {
        valid: bool,
        streams_checked: usize,
        invalid: Vec<eventstore::Verification>,
    }
    let answer = AllOut {
        valid: invalid.is_empty(),
        streams_checked: streams.len(),
        invalid,
    };
    print(out, &answer, || {
        let mut text = format!(
            "{} streams checked: {}",
            answer.streams_checked,
            if answer.valid {
                "all valid"
            } else {
                "INVALID streams found"
            }
        );
        for v in &answer.invalid {
            text.push_str(&format!(
                "\n  {}: first invalid version {}",
                v.stream_id,
                v.first_invalid_version.unwrap_or(0)
            ));
        }
        text
    })?;
    Ok(answer.valid)
}

async fn verify_seals(
    store: &EventStore,
    public_key: Option<&str>,
    out: Output,
) -> anyhow::Result<bool> {
    let key = public_key.map(parse_key).transpose()?;
    let progress = (!out.json).then(|| bar(0, "events"));
    let started = std::time::Instant::now();
    let report = seal::verify_seals(store.pool(), key, |done, total| {
        if let Some(bar) = &progress {
            bar.set_length(total);
            bar.set_position(done);
        }
    })
    .await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    print(out, &report, || {
        let mut text = format!(
            "{} seals, {} events checked ({} sealed) in {seconds:.1} s\n",
            report.seals_checked, report.events_checked, report.sealed_events
        );
        match &report.trusted_key {
            Some(key) => text.push_str(&format!("signatures checked with the trusted key {key}\n")),
            None => text.push_str(&format!(
                "signatures checked with the seals' own keys {:?}: pass --public-key to check who sealed\n",
                report.public_keys
            )),
        }
        match &report.finding {
            None => text.push_str("VALID: every seal verifies and every event is as sealed"),
            Some(f) => text.push_str(&format!(
                "INVALID ({:?}){}{}: {}",
                f.kind,
                f.seal_id
                    .map(|s| format!(", caught by seal {s}"))
                    .unwrap_or_default(),
                f.leaf_index
                    .map(|i| format!(", leaf {i}"))
                    .unwrap_or_default(),
                f.detail
            )),
        }
        text
    })?;
    Ok(report.valid)
}

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
