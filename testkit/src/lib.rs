//! Real servers for the tests, started as plain processes on free ports.
//!
//! tansu, a Kafka-protocol broker: one per test ([`Broker`]), in memory, stopped when dropped.
//!
//! ClickHouse: one server per test binary, started on first use, each test in a database of
//! its own ([`clickhouse_url`]).
//!
//! The server is found as `$CLICKHOUSE_SERVER` or `clickhouse-server` on the PATH
//! (`scripts/install-test-services` installs it). A watchdog shell stops it and removes its
//! data when the test binary exits, however it exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct ClickHouse {
    pub http_port: u16,
    /// The watchdog shell: it ends with this process, never waited on here.
    _watchdog: std::sync::Mutex<std::process::Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[allow(
    clippy::zombie_processes,
    reason = "the watchdog must outlive every test; it exits on its own when this process does"
)]
fn start() -> ClickHouse {
    let bin = std::env::var("CLICKHOUSE_SERVER").unwrap_or_else(|_| "clickhouse-server".into());
    let dir: PathBuf = std::env::temp_dir().join(format!("runstream-clickhouse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (http_port, tcp_port) = (free_port(), free_port());
    let d = dir.display();
    let config = format!(
        r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
    );
    std::fs::write(dir.join("config.xml"), config).unwrap();
    // The watchdog outlives nothing: when this test process is gone it stops the server.
    let script = format!(
        "{bin} --config-file={d}/config.xml >{d}/stdout.log 2>&1 & ch=$!; \
         while kill -0 {me} 2>/dev/null && kill -0 $ch 2>/dev/null; do sleep 0.5; done; \
         kill $ch 2>/dev/null; wait $ch; rm -rf {d}",
        me = std::process::id()
    );
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts the clickhouse watchdog");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http_port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("Ok.") {
                return ClickHouse {
                    http_port,
                    _watchdog: std::sync::Mutex::new(watchdog),
                };
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
            let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("clickhouse-server ({bin}) did not answer on port {http_port} within 60 s:\n{log}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shared server of this test binary.
pub fn clickhouse() -> &'static ClickHouse {
    static SERVER: OnceLock<ClickHouse> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A URL to a database of its own on the shared server.
pub fn clickhouse_url(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "clickhouse://127.0.0.1:{}/t{}_{n}_{name}",
        clickhouse().http_port,
        std::process::id()
    )
}

/// A real Kafka-protocol broker (tansu) started for one test on a free port, in memory; killed
/// when dropped. `TANSU_BIN` names the binary, else `tansu` on the PATH or in ~/.cargo/bin.
pub struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = std::env::var_os("TANSU_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let path = std::env::var_os("PATH").unwrap_or_default();
                std::env::split_paths(&path)
                    .chain(std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin")))
                    .map(|d| d.join("tansu"))
                    .find(|p| p.is_file())
            })
            .expect(
                "the Kafka contract tests need the tansu broker: \
                 cargo install tansu --locked --version 0.6.0 --features dynostore,libsql",
            );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Broker { child, port }
    }

    /// A `kafka://` URL to this broker, topics named under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("kafka://127.0.0.1:{}/{prefix}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

