//! The yardstick of `bench gateway`'s warm single-tenant figure: nginx's `proxy_cache` in front
//! of the emulator, serving the same cached Defender answer the gateway serves from its cache.
//!
//! nginx is started only when it is on `PATH` (Debian: `apt-get install nginx`), on a loopback
//! port, with as many worker processes as the gateway has workers and its access log on (the
//! gateway keeps its log line too). The configuration is [`config`], in two profiles
//! ([`Keepalive`]); `docs/performance.md` shows it.

use super::gateway::TempDir;
use crate::emulator::Emulator;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `name` found in a directory of `PATH` (or the sbin directories, where Debian puts nginx).
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free loopback port (bound, read, released: a small race the bench accepts).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("a free port")?;
    Ok(listener.local_addr()?.port())
}

/// nginx's keep-alive settings in a comparison: the two configurations the gateway is measured
/// against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keepalive {
    /// `keepalive_requests 1000000`: a client connection is never closed during a run (the
    /// configuration `bench gateway` has always used).
    Unbounded,
    /// No `keepalive_*` line: nginx's defaults (a connection closed after 1,000 requests).
    Default,
}

impl Keepalive {
    /// How the figures name the configuration.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Keepalive::Unbounded => "keepalive_requests 1000000",
            Keepalive::Default => "default keepalive",
        }
    }
}

/// The headers of nginx's cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Headers {
    /// Its own five (`Server`, `Date`, `Content-Type`, `Content-Length`, `Connection`).
    Own,
    /// Its own, and the six a warm gateway answer carries beside them (`X-Request-Id` a new id
    /// per answer, `RateLimit-Limit`, `-Remaining`, `-Reset`, `Age`, `Cache-Control`), with
    /// values of the gateway's lengths: a control that costs a client what the gateway's
    /// answer costs it to parse.
    Gateways,
}

/// What nginx adds for [`Headers::Gateways`].
const GATEWAY_HEADERS: &str = "
    add_header X-Request-Id $request_id;
    add_header RateLimit-Limit 1000000;
    add_header RateLimit-Remaining 999999;
    add_header RateLimit-Reset 1;
    add_header Age 0;
    add_header Cache-Control \"private, max-age=300\";";

/// The nginx configuration of the comparison: a cache in front of `upstream` (the emulator's
/// HTTPS origin), answers cached for five minutes whatever the upstream's headers, keyed by
/// the request URI only; the access log on, keep-alive as `keepalive`, headers as `headers`.
pub(crate) fn config(
    dir: &Path,
    port: u16,
    upstream: &str,
    workers: usize,
    keepalive: Keepalive,
    headers: Headers,
) -> String {
    let dir = dir.display();
    let keepalive = match keepalive {
        Keepalive::Unbounded => "\n    keepalive_requests 1000000;",
        Keepalive::Default => "",
    };
    let headers = match headers {
        Headers::Own => "",
        Headers::Gateways => GATEWAY_HEADERS,
    };
    format!(
        "worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log;
  proxy_cache_path {dir}/cache keys_zone=score:1m;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};{keepalive}{headers}
    location / {{
      proxy_pass {upstream};
      proxy_ssl_verify off;
      proxy_cache score;
      proxy_cache_valid 200 5m;
      proxy_cache_key $request_uri;
    }}
  }}
}}
"
    )
}

/// A running nginx, stopped on drop.
pub(crate) struct Nginx {
    child: Child,
    binary: PathBuf,
    conf: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` (TERM to the master, through its pid file), not SIGKILL: a killed
        // master leaves its workers running, orphaned.
        let _ = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// The master process's id (its workers are its children).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `binary` in front of `emulator` (keep-alive as `keepalive`, headers as
    /// `headers`) and waits until it accepts connections.
    pub(crate) fn start(
        binary: &Path,
        emulator: &Emulator,
        workers: usize,
        keepalive: Keepalive,
        headers: Headers,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("scoregate-nginx-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("cache")).context("a scratch directory for nginx")?;
        let dir = TempDir(dir);
        let port = free_port()?;
        let conf = dir.0.join("nginx.conf");
        std::fs::write(
            &conf,
            config(
                &dir.0,
                port,
                &emulator.base_url(),
                workers,
                keepalive,
                headers,
            ),
        )
        .context("the nginx configuration")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx")?;
        let nginx = Nginx {
            child,
            binary: binary.to_owned(),
            conf,
            address: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

/// A Defender access token of the emulator's first tenant with a secret, as nginx's callers
/// must present one to reach the score the first time (nginx forwards it; the cache then
/// answers).
pub(crate) async fn defender_token(emulator: &Emulator) -> anyhow::Result<String> {
    let ca = reqwest::Certificate::from_pem(emulator.ca_cert_pem().as_bytes())
        .context("the emulator's CA")?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let tenant = emulator
        .try_tenants()?
        .into_iter()
        .find(|tenant| tenant.credential.secret().is_some())
        .context("no tenant with a secret")?;
    let secret = tenant.credential.secret().context("no secret")?;
    super::emulator::defender_token(&client, emulator, &tenant, secret).await
}

/// What `wrk` measured: successful answers (2xx) per second, and how many answers were not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkFigure {
    /// 2xx answers per second (wrk's `Requests/sec` counts every answer, a 429 too).
    pub ok_per_second: f64,
    /// wrk's `Non-2xx or 3xx responses` (0 when it prints none).
    pub not_ok: u64,
    /// Every answer wrk counted, 2xx or not.
    pub answers: u64,
}

/// What `wrk -t2 -cCONNECTIONS -dSECONDS` measures on `url` with `Authorization: Bearer
/// TOKEN`, when wrk is on `PATH`; with `pinned_to`, `wrk -t1` on that core alone (`taskset -c
/// CORE`, util-linux).
pub(crate) fn wrk(
    url: &str,
    token: &str,
    connections: usize,
    seconds: u64,
    pinned_to: Option<usize>,
) -> Option<WrkFigure> {
    let binary = on_path("wrk")?;
    let mut command = match pinned_to {
        None => {
            let mut command = Command::new(binary);
            command.arg("-t2");
            command
        }
        Some(core) => {
            let mut command = Command::new(on_path("taskset")?);
            command
                .args(["-c", &core.to_string()])
                .arg(binary)
                .arg("-t1");
            command
        }
    };
    let output = command
        .args([&format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    wrk_figure(&String::from_utf8_lossy(&output.stdout))
}

/// Reads wrk's report: `N requests in …`, `Non-2xx or 3xx responses: M` and `Requests/sec: R`.
fn wrk_figure(report: &str) -> Option<WrkFigure> {
    let value_after = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let per_second: f64 = value_after("Requests/sec:")?.parse().ok()?;
    let requests: u64 = report
        .lines()
        .find(|line| line.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let not_ok = value_after("Non-2xx or 3xx responses:").map_or(Some(0), |n| n.parse().ok())?;
    let ok_share = if requests == 0 {
        0.0
    } else {
        requests.saturating_sub(not_ok) as f64 / requests as f64
    };
    Some(WrkFigure {
        ok_per_second: per_second * ok_share,
        not_ok,
        answers: requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_figures_count_only_successful_answers() {
        let clean = "Running 5s test @ http://127.0.0.1:1/x\n  2 threads and 64 connections\n  \
            400000 requests in 5.00s, 168.37MB read\nRequests/sec:  80000.00\nTransfer/sec:     33.67MB\n";
        assert_eq!(
            wrk_figure(clean),
            Some(WrkFigure {
                ok_per_second: 80000.0,
                not_ok: 0,
                answers: 400000
            })
        );
        let limited =
            "  400000 requests in 5.00s, 168.37MB read\n  Non-2xx or 3xx responses: 100000\n\
            Requests/sec:  80000.00\n";
        assert_eq!(
            wrk_figure(limited),
            Some(WrkFigure {
                ok_per_second: 60000.0,
                not_ok: 100000,
                answers: 400000
            })
        );
        assert_eq!(wrk_figure("wrk: connection refused"), None);
    }

    #[test]
    fn each_configuration_sets_only_its_keepalive_and_headers() {
        let dir = Path::new("/tmp/nginx-test");
        let upstream = "https://127.0.0.1:1";
        let default = config(dir, 8080, upstream, 2, Keepalive::Default, Headers::Own);
        let unbounded = config(dir, 8080, upstream, 2, Keepalive::Unbounded, Headers::Own);
        let control = config(
            dir,
            8080,
            upstream,
            2,
            Keepalive::Unbounded,
            Headers::Gateways,
        );
        assert!(!default.contains("keepalive"), "{default}");
        assert!(
            unbounded.contains("keepalive_requests 1000000;"),
            "{unbounded}"
        );
        assert!(!unbounded.contains("add_header"), "{unbounded}");
        assert_eq!(control.matches("add_header").count(), 6, "{control}");
        assert!(
            control.contains("add_header X-Request-Id $request_id;"),
            "{control}"
        );
        for text in [&default, &unbounded, &control] {
            assert!(
                text.contains("access_log /tmp/nginx-test/access.log;"),
                "{text}"
            );
            assert!(text.contains("listen 127.0.0.1:8080;"), "{text}");
        }
    }
}
