//! A real PostgreSQL for the tests: `initdb` + `pg_ctl` from `/usr/lib/postgresql/<version>/bin`
//! in a temporary directory, listening on 127.0.0.1 on a free port (and a socket in that
//! directory), run as the unprivileged `postgres` user when the tests run as root (`runuser`).
//!
//! [`shared`] starts one server per test binary; each test gets its own database from
//! [`PgServer::database`]. A test that stops and starts the server (an outage) starts its own
//! with [`PgServer::start`], so that it disturbs no other test.
//!
//! Clean-up: a server is stopped when its `PgServer` is dropped; the shared one lives in a
//! static, which is never dropped, so every server also gets a watchdog: a small `sh` loop that
//! polls the test process (`kill -0`) and, once it is gone (normal exit, panic or kill -9),
//! stops PostgreSQL (`pg_ctl stop -m immediate`) and removes the directory. No `ctor`/`atexit`.
//! `scripts/test.sh` installs PostgreSQL where it is missing.

use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running PostgreSQL.
pub struct PgServer {
    /// `postgres://scoregate@127.0.0.1:PORT` (no database).
    base_url: String,
    /// `bin` directory of the PostgreSQL installation.
    bin: PathBuf,
    /// The data directory.
    data: PathBuf,
    /// The directory holding everything; removed on drop.
    dir: PathBuf,
    port: u16,
    /// Whether to run PostgreSQL's programs as the `postgres` user (we are root).
    as_postgres: bool,
}

/// The server shared by the whole test binary.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

impl PgServer {
    /// Initialises and starts a new server; panics with what to do when PostgreSQL is missing.
    pub fn start() -> Self {
        let bin = find_bin().expect(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run \
             scripts/test.sh, which installs it",
        );
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("scoregate-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        if as_postgres {
            let (uid, gid) = postgres_ids();
            chown(&dir, Some(uid), Some(gid)).expect("chown the directory to postgres");
        }
        let data = dir.join("data");
        let port = free_port();
        let server = Self {
            base_url: format!("postgres://scoregate@127.0.0.1:{port}"),
            bin,
            data,
            dir,
            port,
            as_postgres,
        };
        server.run(
            "initdb",
            &[
                "-D",
                path(&server.data),
                "-U",
                "scoregate",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.watchdog();
        server.start_again();
        server
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path(&self.dir)
        );
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (an outage, as a crash looks to clients).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }

    /// A new, empty database; returns its URL.
    pub async fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.base_url))
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        format!("{}/{name}", self.base_url)
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root); panics on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server and removes its directory once this test process is gone, however it
    /// ends (the shared server's static is never dropped).
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            Command::new(&pg_ctl)
        };
        let _ = command
            .args(["-D", path(&self.data), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
            .expect("the postgres user exists")
    };
    (id("-u"), id("-g"))
}

/// A port free now (bound then released; the small race is acceptable in tests).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
