//! A Kafka broker for a test: a Tansu of its own on a free port, started
//! and stopped with `scripts/kafka.sh` in a private `KAFKA_RUN_DIR` with
//! `memory://` storage (so stopping it disturbs no other test, and a
//! restart comes back empty), or the broker named by `RELAY_TEST_BROKERS`.

use std::path::PathBuf;
use std::process::Command;

/// A broker a test talks to, at [`Broker::brokers`]. A broker of the
/// test's own is stopped and its run directory removed when the value is
/// dropped. Every method panics when `scripts/kafka.sh` fails.
pub struct Broker {
    /// `bootstrap.servers` of the broker.
    pub brokers: String,
    /// The private run directory of a broker of the test's own.
    run_dir: Option<PathBuf>,
}

impl Broker {
    /// The broker named by `RELAY_TEST_BROKERS`, when set; otherwise a
    /// Tansu of the test's own ([`Broker::own`]), started.
    pub async fn start() -> Broker {
        if let Ok(brokers) = std::env::var("RELAY_TEST_BROKERS") {
            return Broker {
                brokers,
                run_dir: None,
            };
        }
        let broker = Broker::own();
        broker.up().await;
        broker
    }

    /// A Tansu of the test's own on a free port, not started yet: for
    /// tests that stop and restart it ([`Broker::up`], [`Broker::down`]).
    pub fn own() -> Broker {
        let port = super::free_port();
        let run_dir =
            std::env::temp_dir().join(format!("fulcrum-kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&run_dir).expect("cannot create the broker's run directory");
        Broker {
            brokers: format!("127.0.0.1:{port}"),
            run_dir: Some(run_dir),
        }
    }

    /// Starts the test's own broker and waits for its port. Does nothing
    /// for a broker from `RELAY_TEST_BROKERS`.
    pub async fn up(&self) {
        self.run("start").await;
    }

    /// Stops the test's own broker (SIGTERM) and waits for it to exit.
    /// Panics for a broker from `RELAY_TEST_BROKERS`, which is not the
    /// test's to stop.
    pub async fn down(&self) {
        assert!(
            self.run_dir.is_some(),
            "RELAY_TEST_BROKERS names a broker this test cannot stop"
        );
        self.run("stop").await;
    }

    /// Stops the test's own broker the way an operator's `kill` then
    /// `kill -9` would: SIGTERM, then SIGKILL `grace` later if it still
    /// runs; returns once it is gone. Panics for a broker from
    /// `RELAY_TEST_BROKERS`.
    pub async fn kill(&self, grace: std::time::Duration) {
        let run_dir = self
            .run_dir
            .as_ref()
            .expect("RELAY_TEST_BROKERS names a broker this test cannot stop");
        let pid_file = run_dir.join("tansu.pid");
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let pid = pid.trim().to_owned();
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(&pid)
                .stderr(std::process::Stdio::null())
                .status();
        };
        let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
        signal("TERM");
        // Fault injection, not a wait for a condition: the broker gets
        // exactly `grace` to stop on its own before it is killed.
        tokio::time::sleep(grace).await;
        signal("KILL");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(pid_file);
    }

    async fn run(&self, command: &'static str) {
        let Some(mut cmd) = self.script(command) else {
            return;
        };
        let status = tokio::task::spawn_blocking(move || cmd.status())
            .await
            .expect("the scripts/kafka.sh task panicked")
            .expect("cannot run scripts/kafka.sh");
        assert!(status.success(), "scripts/kafka.sh {command} failed");
    }

    /// `scripts/kafka.sh <command>` for the test's own broker.
    fn script(&self, command: &str) -> Option<Command> {
        let run_dir = self.run_dir.as_ref()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .arg(command)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("KAFKA_RUN_DIR", run_dir)
            .env("TANSU_STORAGE", "memory://tansu/");
        Some(cmd)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut stop) = self.script("stop") {
            let _ = stop.status();
        }
        if let Some(run_dir) = &self.run_dir {
            let _ = std::fs::remove_dir_all(run_dir);
        }
    }
}
