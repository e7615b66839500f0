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

/// Writes a server configuration for ports and a data folder under `dir`.
fn write_config(dir: &std::path::Path, http_port: u16, tcp_port: u16) {
    std::fs::create_dir_all(dir).unwrap();
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
}

/// Starts a server on the configuration in `dir` under a watchdog shell that stops it when this
/// test process is gone (and then removes `dir`), and waits until it answers. The server's pid is
/// written to `dir/pid`.
#[allow(
    clippy::zombie_processes,
    reason = "the watchdog must outlive every test; it exits on its own when this process does"
)]
fn launch(dir: &std::path::Path, http_port: u16) -> std::process::Child {
    let bin = std::env::var("CLICKHOUSE_SERVER").unwrap_or_else(|_| "clickhouse-server".into());
    let d = dir.display();
    let script = format!(
        "{bin} --config-file={d}/config.xml >{d}/stdout.log 2>&1 & ch=$!; echo $ch > {d}/pid; \
         while kill -0 {me} 2>/dev/null && kill -0 $ch 2>/dev/null; do sleep 0.5; done; \
         kill $ch 2>/dev/null; wait $ch; kill -0 {me} 2>/dev/null || rm -rf {d}",
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
                return watchdog;
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

fn start() -> ClickHouse {
    let dir: PathBuf = std::env::temp_dir().join(format!("runstream-clickhouse-{}", std::process::id()));
    let (http_port, tcp_port) = (free_port(), free_port());
    write_config(&dir, http_port, tcp_port);
    let watchdog = launch(&dir, http_port);
    ClickHouse {
        http_port,
        _watchdog: std::sync::Mutex::new(watchdog),
    }
}

/// A ClickHouse server of one test's own, which the test can stop and start again on the same
/// port and data (for outages); stopped when dropped.
pub struct OwnClickHouse {
    dir: PathBuf,
    pub http_port: u16,
    watchdog: Option<std::process::Child>,
}

impl OwnClickHouse {
    pub fn start(name: &str) -> OwnClickHouse {
        let dir = std::env::temp_dir().join(format!("runstream-clickhouse-{}-{name}", std::process::id()));
        let (http_port, tcp_port) = (free_port(), free_port());
        write_config(&dir, http_port, tcp_port);
        let watchdog = Some(launch(&dir, http_port));
        OwnClickHouse {
            dir,
            http_port,
            watchdog,
        }
    }

    /// A URL to `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("clickhouse://127.0.0.1:{}/{database}", self.http_port)
    }

    /// Stops the server (SIGKILL, as a crash or a lost host) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
            let _ = w.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "clickhouse still listens on {}",
                self.http_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.watchdog = Some(launch(&self.dir, self.http_port));
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared server of this test binary.
pub fn clickhouse() -> &'static ClickHouse {
    static SERVER: OnceLock<ClickHouse> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A URL to a database of its own on the shared server.
///
/// With `RUNSTREAM_TEST_CLICKHOUSE_PORT` set, the databases are on the server already listening
/// on that port of this host (another release of ClickHouse, say) and none is started.
pub fn clickhouse_url(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let port = match std::env::var("RUNSTREAM_TEST_CLICKHOUSE_PORT") {
        Ok(p) => p.parse().expect("RUNSTREAM_TEST_CLICKHOUSE_PORT is a port number"),
        Err(_) => clickhouse().http_port,
    };
    format!("clickhouse://127.0.0.1:{port}/t{}_{n}_{name}", std::process::id())
}

/// Starts `program` with `args` under a watchdog shell that kills it (SIGKILL) once this test
/// process is gone, in `cwd`; the returned child is the shell.
#[allow(
    clippy::zombie_processes,
    reason = "the watchdog ends on its own when this process does; stop_watched waits for it"
)]
fn watched(program: &std::path::Path, args: &[&str], cwd: &std::path::Path, what: &str) -> std::process::Child {
    let script = format!(
        "\"$0\" \"$@\" >/dev/null 2>&1 & p=$!; \
         while kill -0 {me} 2>/dev/null && kill -0 $p 2>/dev/null; do sleep 0.5; done; kill -9 $p 2>/dev/null",
        me = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sh starts the {what} watchdog: {e}"))
}

/// Kills a program started by [`watched`] (SIGKILL, as a crash), then its watchdog.
fn stop_watched(mut child: std::process::Child) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("pkill -9 -P {} 2>/dev/null", child.id()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `port` accepts connections (`open`) or refuses them.
fn wait_for_port(port: u16, open: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != open {
        let state = if open { "did not listen" } else { "still listens" };
        assert!(Instant::now() < deadline, "{what} {state} on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A binary named by `$var`, else found on the PATH or in ~/.cargo/bin.
fn find_bin(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A real Kafka-protocol broker (tansu) started on a free port, in memory or (for tests that
/// restart it) in a SQLite file under a folder; stopped when dropped, and by a watchdog shell
/// if the test process dies first. `TANSU_BIN` names the binary, else `tansu` on the PATH or in
/// ~/.cargo/bin.
pub struct Broker {
    child: Option<std::process::Child>,
    port: u16,
    /// The folder of a persistent broker's storage.
    dir: Option<PathBuf>,
}

fn tansu_bin() -> PathBuf {
    find_bin("TANSU_BIN", "tansu").expect(
        "the Kafka tests need the tansu broker (scripts/install-test-services installs it): \
         cargo install tansu --locked --version 0.6.0 --features dynostore,libsql",
    )
}

impl Broker {
    /// A broker keeping everything in memory.
    pub fn start() -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: None,
        };
        b.launch();
        b
    }

    /// A broker keeping its topics in `dir` (created if missing), so a restart keeps them.
    pub fn start_persistent(dir: &std::path::Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: Some(dir.to_path_buf()),
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu takes a sqlite:// path relative to its working directory: start it in the folder.
        let (storage, cwd) = match &self.dir {
            Some(d) => ("sqlite://broker.db".to_string(), d.clone()),
            None => ("memory://tansu/".to_string(), std::env::temp_dir()),
        };
        let args = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            &storage,
        ];
        self.child = Some(watched(&tansu_bin(), &args, &cwd, "tansu"));
        wait_for_port(self.port, true, "tansu");
    }

    /// Kills the broker (SIGKILL, as a crash) and waits until its port is free.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            stop_watched(c);
        }
        wait_for_port(self.port, false, "tansu");
    }

    /// Starts the broker again on the same port (and, if persistent, the same storage).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A `kafka://` URL to this broker, topics named under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("kafka://127.0.0.1:{}/{prefix}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An S3-compatible server: s3s-fs, S3's API over a folder (one subfolder per bucket), started
/// on a free port with fixed credentials ([`S3::env`]) and stopped when dropped. `S3S_FS_BIN`
/// names the binary, else `s3s-fs` on the PATH or in ~/.cargo/bin.
pub struct S3 {
    child: Option<std::process::Child>,
    pub port: u16,
    root: tempfile::TempDir,
}

impl S3 {
    pub const ACCESS_KEY: &'static str = "runstream-test";
    pub const SECRET_KEY: &'static str = "runstream-test-secret";

    /// Starts a server holding the (empty) `buckets`.
    pub fn start(buckets: &[&str]) -> S3 {
        let root = tempfile::tempdir().expect("tempdir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let mut s = S3 {
            child: None,
            port: free_port(),
            root,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let bin = find_bin("S3S_FS_BIN", "s3s-fs").expect(
            "the S3 blob store's tests need s3s-fs (scripts/install-test-services installs it): \
             cargo install s3s-fs --locked --version 0.14.1 --features binary",
        );
        let port = self.port.to_string();
        let root = self.root.path().to_string_lossy().to_string();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--access-key",
            Self::ACCESS_KEY,
            "--secret-key",
            Self::SECRET_KEY,
            &root,
        ];
        self.child = Some(watched(&bin, &args, self.root.path(), "s3s-fs"));
        wait_for_port(self.port, true, "s3s-fs");
    }

    /// Stops the server (SIGKILL) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_watched(c);
        }
        wait_for_port(self.port, false, "s3s-fs");
    }

    /// Starts the server again on the same port and folder.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// A blob store URL for objects under `prefix` of `bucket`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{}", self.port)
    }

    /// The environment a client needs: the credentials and a region.
    pub fn env() -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Where the server keeps an object, for checking what reached it.
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}
