//! `fulcrum audit ...`: the audit side from a terminal, for people (the
//! default) and scripts (`--json`). It reads the database directly and
//! needs nothing but read access (and, to check seals against a key you
//! trust, the public key). Exits non-zero when a verification fails.

mod seals;
mod trail;
mod verify;

use std::str::FromStr;

use anyhow::Context;
use eventstore::EventStore;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
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
        } => trail::stream(&connect(&database).await?, &stream_id, state_at, out).await,
        AuditCommand::Correlation {
            correlation_id,
            out,
            database,
        } => trail::correlation(&connect(&database).await?, &correlation_id, out).await,
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
                verify::verify_seals(&store, public_key.as_deref(), out).await
            } else if all {
                verify::verify_all(&store, out).await
            } else {
                verify::verify_one(&store, &stream_id.unwrap_or_default(), out).await
            }
        }
        AuditCommand::Prove {
            event_id,
            out,
            database,
        } => seals::prove(&connect(&database).await?, event_id, out).await,
        AuditCommand::CheckProof {
            file,
            public_key,
            out,
        } => seals::check_proof(&file, public_key.as_deref(), out),
        AuditCommand::Seal {
            seal_key,
            out,
            database,
        } => seals::seal(&seal_key, &database, out).await,
        AuditCommand::Keygen => seals::keygen(),
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

/// A hex Ed25519 public key, as given on the command line.
fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .context("the public key must be 64 hex characters (32 bytes)")
}

/// Prints `value` as JSON with `--json`, else the text `text` makes of it.
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

/// A progress bar over `total` things of `what` (for a person only).
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
