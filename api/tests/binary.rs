//! The real `fulcrum` binary: `migrate`, and `serve` from a missing database
//! to `/readyz` 200 to a graceful SIGTERM shutdown.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use eventstore::testing::{free_port, server_url};

/// A URL for a database that does not exist yet, and a guard that drops it.
struct FreshDatabase {
    url: String,
    name: String,
}

impl FreshDatabase {
    fn new() -> Self {
        let name = format!("fulcrum_bin_{}", uuid::Uuid::new_v4().simple());
        let mut url = reqwest::Url::parse(&server_url()).unwrap();
        url.set_path(&name);
        FreshDatabase {
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &server_url(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Sends `child` SIGTERM and waits for it to exit; answers how it ended
/// (with its stderr, when piped).
async fn stop_with_sigterm(child: std::process::Child) -> std::process::Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

#[test]
fn migrate_creates_the_database_and_applies_every_migration() {
    let db = FreshDatabase::new();

    let status = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .status()
        .unwrap();

    assert!(status.success());
    let applied = Command::new("psql")
        .args([
            &db.url,
            "-Atc",
            "SELECT count(*) FROM _sqlx_migrations WHERE success",
        ])
        .output()
        .unwrap();
    let count: usize = String::from_utf8_lossy(&applied.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, eventstore::db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn serve_becomes_ready_and_stops_gracefully_on_sigterm() {
    let db = FreshDatabase::new();
    let (child, addr, ready) = serve_all_roles(&db, &[]).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    // Without --dev there is no development sign-in, and the console says so.
    let dev_sign_in = client
        .post(format!("http://{addr}/console/dev-sign-in"))
        .json(&serde_json::json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    let console = client
        .get(format!("http://{addr}/console"))
        .send()
        .await
        .unwrap();
    let console_status = console.status();
    let console_page = console.text().await.unwrap();
    let exit = stop_with_sigterm(child).await.status;

    assert_eq!(ready, Some(reqwest::StatusCode::OK));
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert_eq!(dev_sign_in.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(console_status, reqwest::StatusCode::OK);
    assert!(
        console_page.contains(r#"data-dev="false""#),
        "{console_page}"
    );
    assert!(exit.success(), "fulcrum serve exited with {exit}");
}

/// Starts `fulcrum serve` with every role on `db` (a JWT secret unless
/// `args` holds `--dev`, an ephemeral seal key, topics of its own on the
/// development broker); answers the process, its address and the first
/// `/readyz` status.
async fn serve_all_roles(
    db: &FreshDatabase,
    args: &[&str],
) -> (std::process::Child, String, Option<reqwest::StatusCode>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command
        .arg("serve")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("FULCRUM_ADDR", &addr)
        .env(
            "FULCRUM_SEAL_KEY",
            eventstore::seal::SealKey::ephemeral().to_pem().unwrap(),
        )
        // Its own topics and consumer groups on the shared development broker.
        .env(
            "FULCRUM_TOPIC_PREFIX",
            format!("tbin{}", uuid::Uuid::new_v4().simple()),
        );
    if args.contains(&"--dev") {
        command
            .env_remove("JWT_SECRET")
            .env_remove("JWT_PUBLIC_KEY_PEM");
    } else {
        command.env("JWT_SECRET", "a-binary-test-secret-that-is-long-enough");
    }
    let child = command.spawn().unwrap();
    let client = reqwest::Client::new();
    let mut ready = None;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
            ready = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr, ready)
}

#[tokio::test]
async fn serve_dev_signs_the_console_in_with_a_chosen_role() {
    let db = FreshDatabase::new();
    let (child, addr, ready) = serve_all_roles(&db, &["--dev"]).await;
    let client = reqwest::Client::new();
    let sign_in = |body: serde_json::Value| {
        client
            .post(format!("http://{addr}/console/dev-sign-in"))
            .json(&body)
            .send()
    };
    let operator = sign_in(serde_json::json!({"role": "operator", "name": "olga"}))
        .await
        .unwrap();
    let operator_status = operator.status();
    let operator: serde_json::Value = operator.json().await.unwrap();
    let token = operator["token"].as_str().unwrap_or_default().to_owned();
    let admin_read = client
        .get(format!("http://{addr}/api/v1/admin/projections"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    let customer = sign_in(serde_json::json!({"role": "customer"}))
        .await
        .unwrap();
    let customer: serde_json::Value = customer.json().await.unwrap();
    let customer_read = client
        .get(format!("http://{addr}/api/v1/admin/projections"))
        .bearer_auth(customer["token"].as_str().unwrap_or_default())
        .send()
        .await
        .unwrap()
        .status();
    let bad_role = sign_in(serde_json::json!({"role": "root"})).await.unwrap();
    let bad_role_type = bad_role.headers()["content-type"].clone();
    let bad_name = sign_in(serde_json::json!({"role": "admin", "name": "a\u{1}b"}))
        .await
        .unwrap();
    let console = client
        .get(format!("http://{addr}/console"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop_with_sigterm(child).await;

    assert_eq!(ready, Some(reqwest::StatusCode::OK));
    assert_eq!(operator_status, reqwest::StatusCode::OK, "{operator}");
    assert_eq!(operator["sub"], "olga");
    assert_eq!(operator["role"], "operator");
    assert_eq!(admin_read, reqwest::StatusCode::OK);
    assert_eq!(customer["sub"], "dev-customer");
    assert_eq!(customer_read, reqwest::StatusCode::FORBIDDEN);
    assert_eq!(bad_role.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_role_type, "application/problem+json");
    assert_eq!(bad_name.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(console.contains(r#"data-dev="true""#), "{console}");
}

fn serve_output(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command
        .arg("serve")
        .args(args)
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY_PEM");
    command.env("FULCRUM_ADDR", format!("127.0.0.1:{}", free_port()));
    // A database that is never reached: the key check comes first.
    command.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/never");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn serve_refuses_to_start_without_a_token_key() {
    let out = serve_output(&[], &[]);

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no JWT key configured"));
}

#[test]
fn serve_refuses_an_hs256_secret_shorter_than_32_bytes() {
    let out = serve_output(&[("JWT_SECRET", "too-short-secret")], &[]);

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
}

#[test]
fn serve_dev_says_loudly_that_it_uses_the_development_secret() {
    // Gets past the key check, warns, then fails on the unreachable database.
    let out = serve_output(&[], &["--dev"]);

    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVELOPMENT MODE"));
}

#[test]
fn token_mints_a_token_the_dev_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "token", "--sub", "alice", "--role", "customer", "--ttl", "1h", "--dev",
        ])
        .env_remove("JWT_SECRET")
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap();
    let config = api::auth::JwtConfig {
        jwt_secret: None,
        jwt_public_key_pem: None,
        jwt_issuer: "fulcrum".into(),
        jwt_audience: "fulcrum-api".into(),
        jwt_max_ttl: api::auth::DEFAULT_MAX_TTL,
        dev: true,
    };

    let claims = api::auth::Authenticator::from_config(&config)
        .unwrap()
        .verify(token.trim())
        .unwrap();

    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, api::auth::Role::Customer);
}

#[tokio::test]
async fn rebuild_replays_a_projection_and_reports_its_speed() {
    use domain::{DomainEvent, ProductEvent};
    use eventstore::{EventStore, ExpectedVersion, NewEvent};

    let db = FreshDatabase::new();
    let pool = eventstore::db::connect(&db.url, 2).await.unwrap();
    eventstore::db::migrate(&pool).await.unwrap();
    let store = EventStore::new(pool.clone());
    for (sku, unit_price) in [("SKU-A", 100), ("SKU-B", 250)] {
        let event = ProductEvent::ProductDefined {
            sku: sku.into(),
            name: format!("Product {sku}"),
            unit_price,
            currency: "EUR".into(),
        };
        let event = NewEvent::new(event.event_type(), event.schema_version(), event.to_data());
        store
            .append(
                &format!("product-{sku}"),
                ExpectedVersion::NoStream,
                &[event],
                &serde_json::json!({}),
            )
            .await
            .unwrap();
    }

    let output = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                .args(["rebuild", "catalog"])
                .env("DATABASE_URL", &url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("rebuilt catalog: 2 events"), "{stdout}");
    let products: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, unit_price FROM rm_catalog.products ORDER BY sku")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        products,
        vec![("SKU-A".to_owned(), 100), ("SKU-B".to_owned(), 250)]
    );
    pool.close().await;

    let unknown = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["rebuild", "nope"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection"));
}

#[tokio::test]
async fn serve_with_only_background_roles_needs_no_token_key_and_stops_on_sigterm() {
    let db = FreshDatabase::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--roles", "relay,projector"])
        .env("DATABASE_URL", &db.url)
        .env_remove("JWT_SECRET")
        .env_remove("JWT_PUBLIC_KEY_PEM")
        .env(
            "FULCRUM_TOPIC_PREFIX",
            format!("tbin{}", uuid::Uuid::new_v4().simple()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It migrates the database, then relays and projects until told to stop.
    let url = db.url.clone();
    let mut migrated = false;
    for _ in 0..200 {
        // A plain connect: it must not create the database itself.
        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
            let applied = eventstore::db::migrations_applied(&pool).await;
            pool.close().await;
            if applied.unwrap_or(false) {
                migrated = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(migrated, "serve did not migrate the database");
    assert!(child.try_wait().unwrap().is_none(), "serve exited early");
    let output = stop_with_sigterm(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exited with {}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("DEVELOPMENT MODE"), "{stderr}");
}

#[test]
fn serve_refuses_to_seal_without_a_seal_key_and_says_how_to_get_one() {
    let out = serve_output(
        &[("JWT_SECRET", "a-binary-test-secret-that-is-long-enough")],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("FULCRUM_SEAL_KEY"), "{stderr}");
    assert!(stderr.contains("audit keygen"), "{stderr}");
    let bad = serve_output(
        &[
            ("JWT_SECRET", "a-binary-test-secret-that-is-long-enough"),
            ("FULCRUM_SEAL_KEY", "/no/such/key.pem"),
        ],
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/no/such/key.pem"));
}

/// Runs `fulcrum audit <args>` on `url` with `envs`.
fn audit(url: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command.arg("audit").args(args).env("DATABASE_URL", url);
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn the_audit_cli_seals_verifies_and_proves_offline_and_names_tampering() {
    use eventstore::{EventStore, ExpectedVersion, NewEvent};

    let db = FreshDatabase::new();
    let pool = eventstore::db::connect(&db.url, 2).await.unwrap();
    eventstore::db::migrate(&pool).await.unwrap();
    let store = EventStore::new(pool.clone());
    for stream in ["counter-a", "counter-b"] {
        let events: Vec<NewEvent> = (0..3)
            .map(|n| NewEvent::new("Counted", 1, serde_json::json!({"n": n})))
            .collect();
        store
            .append(
                stream,
                ExpectedVersion::NoStream,
                &events,
                &serde_json::json!({"correlation_id": "corr-cli", "user_id": "ann"}),
            )
            .await
            .unwrap();
    }
    let url = db.url.clone();
    let dir = std::env::temp_dir().join(format!("fulcrum-audit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("seal.pem");
    let proof_file = dir.join("proof.json");
    let (key_path, proof_path) = (
        key_file.to_str().unwrap().to_owned(),
        proof_file.to_str().unwrap().to_owned(),
    );

    let outputs = tokio::task::spawn_blocking(move || {
        let keygen = audit(&url, &["keygen"], &[]);
        std::fs::write(&key_path, &keygen.stdout).unwrap();
        let public_key = String::from_utf8_lossy(&keygen.stderr)
            .trim()
            .trim_start_matches("public key: ")
            .to_owned();
        // Gap-free readers see events once every older transaction ended:
        // seal until all six are covered.
        let mut sealed = String::new();
        for _ in 0..200 {
            let out = audit(
                &url,
                &["seal", "--json"],
                &[("FULCRUM_SEAL_KEY", &key_path)],
            );
            assert!(out.status.success(), "{out:?}");
            let verify = audit(&url, &["verify", "--seals", "--json"], &[]);
            let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
            if report["sealed_events"] == 6 {
                sealed = String::from_utf8_lossy(&verify.stdout).into_owned();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let verified = audit(
            &url,
            &["verify", "--seals", "--public-key", &public_key],
            &[],
        );
        let text = audit(&url, &["stream", "counter-a"], &[]);
        let correlation = audit(&url, &["correlation", "corr-cli"], &[]);
        (public_key, sealed, verified, text, correlation)
    })
    .await
    .unwrap();
    let (public_key, sealed, verified, text, correlation) = outputs;
    assert!(sealed.contains("\"valid\": true"), "{sealed}");
    assert!(verified.status.success(), "{verified:?}");
    assert!(String::from_utf8_lossy(&verified.stdout).contains("VALID"));
    assert!(String::from_utf8_lossy(&text.stdout).contains("hash chain: valid"));
    assert_eq!(
        String::from_utf8_lossy(&correlation.stdout)
            .matches("Counted")
            .count(),
        6
    );

    // A proof printed online checks offline, with the key alone.
    let event_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE stream_id = 'counter-b' AND version = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let url = db.url.clone();
    let pk = public_key.clone();
    let (checked, foreign) = tokio::task::spawn_blocking(move || {
        let proof = audit(&url, &["prove", &event_id.to_string(), "--json"], &[]);
        assert!(proof.status.success(), "{proof:?}");
        std::fs::write(&proof_path, &proof.stdout).unwrap();
        let checked = audit("", &["check-proof", &proof_path, "--public-key", &pk], &[]);
        let other = "11".repeat(32);
        let foreign = audit(
            "",
            &["check-proof", &proof_path, "--public-key", &other],
            &[],
        );
        (checked, foreign)
    })
    .await
    .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).starts_with("VALID"));
    assert!(!foreign.status.success());

    // Tampering: the stream check and the seals both fail, naming it.
    sqlx::query(
        "UPDATE events SET data = '{\"n\": 7}' WHERE stream_id = 'counter-a' AND version = 2",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let url = db.url.clone();
    let (stream, seals) = tokio::task::spawn_blocking(move || {
        (
            audit(&url, &["verify", "counter-a", "--json"], &[]),
            audit(
                &url,
                &["verify", "--seals", "--json", "--public-key", &public_key],
                &[],
            ),
        )
    })
    .await
    .unwrap();
    assert!(!stream.status.success());
    let stream: serde_json::Value = serde_json::from_slice(&stream.stdout).unwrap();
    assert_eq!(stream["first_invalid_version"], 2);
    assert!(!seals.status.success());
    let report: serde_json::Value = serde_json::from_slice(&seals.stdout).unwrap();
    assert_eq!(report["finding"]["kind"], "altered");
    assert_eq!(report["finding"]["seal_id"], 1);
    assert_eq!(report["finding"]["stream_id"], "counter-a");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_sealer_role_seals_on_its_interval_and_stops_on_sigterm() {
    let db = FreshDatabase::new();
    let pem = eventstore::seal::SealKey::ephemeral().to_pem().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--roles", "sealer"])
        .env("DATABASE_URL", &db.url)
        .env("FULCRUM_SEAL_KEY", &pem)
        .env("FULCRUM_SEAL_INTERVAL_MS", "100")
        .env_remove("JWT_SECRET")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = db.url.clone();
    let mut sealed = 0i64;
    for _ in 0..400 {
        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
            if eventstore::db::migrations_applied(&pool)
                .await
                .unwrap_or(false)
            {
                let store = eventstore::EventStore::new(pool.clone());
                let _ = store
                    .append(
                        &format!("counter-{}", uuid::Uuid::new_v4().simple()),
                        eventstore::ExpectedVersion::NoStream,
                        &[eventstore::NewEvent::new(
                            "Counted",
                            1,
                            serde_json::json!({}),
                        )],
                        &serde_json::json!({}),
                    )
                    .await;
                sealed = sqlx::query_scalar("SELECT count(*) FROM seals")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
            }
            pool.close().await;
            if sealed >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sealed >= 2, "the sealer sealed {sealed} times");
    let output = stop_with_sigterm(child).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
