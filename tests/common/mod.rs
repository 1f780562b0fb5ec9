//! Test helpers shared by the integration tests: a private Kafka-protocol
//! broker (Tansu) per test binary, topics through the admin API, and the
//! Python client for third-party producing.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The Tansu binary: `TANSU_BIN`, else what `scripts/tansu.sh install`
/// finds or installs.
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tansu.sh");
    let out = Command::new(&script)
        .arg("install")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/tansu.sh install");
    assert!(
        out.status.success(),
        "no Tansu broker: scripts/tansu.sh install failed (scripts/test.sh installs it)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A free loopback port (bound, then released for the broker to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private broker on a free loopback port with SQLite storage in a
/// temporary directory; stopped (killed) when dropped.
pub struct Broker {
    child: Child,
    _serial: std::sync::MutexGuard<'static, ()>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
}

/// Held by each broker test: they run one at a time, as two cores are not
/// enough for several brokers, services and producers at once.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Broker {
    /// Starts a broker (once no other test holds one) and waits until it listens.
    pub fn start() -> Broker {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bin = tansu_bin();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // the path in a sqlite:// URL is taken relative to the working directory
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let broker = Broker {
            child,
            _serial: serial,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not listen: {}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        broker
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// The broker process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = futures_executor::block_on(admin.create_topics([&topic], &opts)).unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// Number of records in a topic (sum of high watermarks).
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut n = 0;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .unwrap();
                n += high - low;
            }
        }
        n
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter with `confluent-kafka`: `DRIFTWATCH_PYTHON`, else
/// the virtual environment scripts/test.sh makes, else `python3`.
pub fn python() -> Command {
    if let Ok(python) = std::env::var("DRIFTWATCH_PYTHON") {
        return Command::new(python);
    }
    let tools = std::env::var("DRIFTWATCH_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/driftwatch/tools")
        });
    let venv = tools.join("venv/bin/python");
    Command::new(if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    })
}
