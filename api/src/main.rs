//! `fulcrum`: the one binary. `serve` runs the server, `migrate` applies
//! migrations, `rebuild` replays a projection, `audit` inspects and
//! verifies the log, `token` mints a development token.

use std::time::Duration;

use api::auth::{mint_hs256, parse_ttl, JwtConfig, Role};
use api::{Application, DatabaseConfig, ServeConfig};
use clap::{Parser, Subcommand};
use projections::status::OnError;
use projections::{Progress, Projection, Rebuild};

/// mimalloc, not the system allocator: a request allocates and frees many
/// small buffers across threads, which glibc's malloc spends about a tenth
/// of the server's CPU on (docs/benchmarks.md, "Allocator and ids").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "fulcrum", version, about = "Event-sourced order backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then serve HTTP until SIGTERM or ctrl-c.
    Serve(Box<ServeConfig>),
    /// Create the database if missing and apply pending migrations.
    Migrate(DatabaseConfig),
    /// Rebuild a projection's read model from the event store into fresh
    /// tables, then swap them in (queries keep answering meanwhile).
    Rebuild(RebuildArgs),
    /// Audit the event log: stream histories, correlations, verification,
    /// seals and inclusion proofs.
    Audit(api::audit_cli::AuditArgs),
    /// Print an HS256 token signed with JWT_SECRET (or, with --dev, the
    /// development secret that `serve --dev` accepts).
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
struct RebuildArgs {
    /// The projection: orders, inventory, catalog or sales.
    #[arg(value_parser = parse_projection)]
    projection: Projection,
    /// Database settings.
    #[command(flatten)]
    database: DatabaseConfig,
    /// What the rebuild does with an event it cannot apply: halt (fail, and
    /// keep the live tables) or skip (pass over what the projectors
    /// dead-lettered and skipped). Set it as the projectors have it.
    #[arg(long, env = "FULCRUM_PROJECTION_ON_ERROR", default_value = "halt")]
    projection_on_error: OnError,
}

fn parse_projection(s: &str) -> Result<Projection, String> {
    Projection::parse(s).ok_or_else(|| {
        format!("unknown projection {s:?}: expected orders, inventory, catalog or sales")
    })
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Subject: the user id the token acts as.
    #[arg(long)]
    sub: String,
    /// Role: customer, operator or admin.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Lifetime, e.g. 30s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Key and claims settings (the same as `serve`'s).
    #[command(flatten)]
    jwt: JwtConfig,
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown role {s:?}: expected customer, operator or admin"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    api::telemetry::init();
    let result = run(Cli::parse()).await;
    api::telemetry::shutdown();
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            // Before start-up, so that SIGTERM while migrating stops gracefully.
            let stop = api::startup::shutdown_signal();
            Application::build(*config).await?.run_until(stop).await
        }
        Command::Migrate(config) => {
            api::startup::connect_and_migrate(&config).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Rebuild(args) => rebuild(args).await,
        Command::Audit(args) => {
            if !api::audit_cli::run(args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Token(args) => {
            let secret = args.jwt.hs256_secret()?;
            let token = mint_hs256(
                secret,
                &args.sub,
                args.role,
                args.ttl,
                &args.jwt.jwt_issuer,
                &args.jwt.jwt_audience,
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Runs a rebuild in this process, drawing a progress bar on stderr.
async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let store = api::startup::connect_and_migrate(&args.database).await?;
    let rebuild = Rebuild::start(&store, args.projection)
        .await?
        .on_error(args.projection_on_error);
    eprintln!("rebuilding the {} projection", args.projection);
    let report = rebuild.run(draw_progress).await?;
    eprintln!();
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "rebuilt {}: {} events in {:.1} s ({:.0} events/s), swapped in at checkpoint {}",
        args.projection,
        report.events,
        seconds,
        if seconds > 0.0 {
            report.events as f64 / seconds
        } else {
            0.0
        },
        report.checkpoint,
    );
    Ok(())
}

/// One line of progress: bar, events, events/s, ETA.
fn draw_progress(progress: Progress) {
    const WIDTH: usize = 30;
    let done = (progress.fraction() * WIDTH as f64).round() as usize;
    let eta = progress.eta().map_or_else(
        || "?".to_owned(),
        |eta| format!("{:.0} s", eta.as_secs_f64()),
    );
    eprint!(
        "\r[{}{}] {:>5.1}%  {} events  {:.0} events/s  ETA {}   ",
        "#".repeat(done.min(WIDTH)),
        "-".repeat(WIDTH - done.min(WIDTH)),
        progress.fraction() * 100.0,
        progress.events,
        progress.events_per_second(),
        eta,
    );
}
