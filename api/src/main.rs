//! `fulcrum`: the one binary. `serve` runs the server, `migrate` applies
//! migrations, `token` mints a development token.

use std::time::Duration;

use api::auth::{mint_hs256, parse_ttl, JwtConfig, Role};
use api::{Application, DatabaseConfig, ServeConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "fulcrum", version, about = "Event-sourced order backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then serve HTTP until SIGTERM or ctrl-c.
    Serve(ServeConfig),
    /// Create the database if missing and apply pending migrations.
    Migrate(DatabaseConfig),
    /// Print an HS256 token signed with JWT_SECRET (or, with --dev, the
    /// development secret that `serve --dev` accepts).
    Token(TokenArgs),
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
    match Cli::parse().command {
        Command::Serve(config) => Application::build(config).await?.run_until_stopped().await,
        Command::Migrate(config) => {
            api::startup::connect_and_migrate(&config).await?;
            tracing::info!("migrations applied");
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
