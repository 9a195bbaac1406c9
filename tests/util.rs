//! Helpers for end-to-end tests: a fresh directory per test, the real
//! binary, and one way to wait (a condition polled until a deadline).

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cronwarden");

/// Polls `f` until it returns `Some`, or panics naming `what` after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_until_or(what, limit, f, String::new)
}

/// [`wait_until`], and on timeout the panic also says what `explain`
/// returns (the processes' logs, the records: what to look at next).
pub fn wait_until_or<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {limit:?} waiting for: {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Marks the calling test as skipped because `why` (root, a tool, a
/// kernel feature) is missing here; see `cronwarden_shared::test_skip`.
pub fn skip(why: &str) {
    cronwarden_shared::test_skip::skip(why);
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone)]
pub struct ProcStat {
    pub pid: u32,
    /// R, S, D, Z, X, ...
    pub state: String,
    pub ppid: u32,
    pub pgrp: u32,
}

/// One process's stat line, parsed after its `(comm)` (which may itself
/// hold spaces and parentheses); `None` once it is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.rsplit(')').next()?.split_whitespace();
    Some(ProcStat {
        pid,
        state: f.next()?.to_string(),
        ppid: f.next()?.parse().ok()?,
        pgrp: f.next()?.parse().ok()?,
    })
}

/// Every process on the machine, as far as /proc can still be read.
pub fn processes() -> Vec<ProcStat> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Whether a process exists (a zombie counts as gone: it no longer runs).
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|p| p.state != "Z" && p.state != "X")
}

pub fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// A test directory with a config whose state lives inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// `body` is the config without `state_dir`, which is added.
    pub fn new(body: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("cw-test-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("cronwarden.toml");
        let env = Env { dir, config };
        env.write_config(body);
        env
    }

    pub fn write_config(&self, body: &str) {
        let text = format!(
            "state_dir = {:?}\n{body}",
            self.state_dir().display().to_string()
        );
        fs::write(&self.config, text).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `cronwarden status --json` as JSON, with its exit code.
    pub fn status(&self) -> (i32, Option<Value>) {
        let out = self.cmd(&[
            "status",
            "--json",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_slice(&out.stdout).ok(),
        )
    }

    pub fn start(&self) -> Supervisor {
        self.start_with(&[])
    }

    /// Starts `run` with extra environment (fail points, NOTIFY_SOCKET).
    pub fn start_with(&self, vars: &[(&str, &str)]) -> Supervisor {
        self.start_args(vars, &[])
    }

    /// Starts `run` with extra environment and extra arguments.
    pub fn start_args(&self, vars: &[(&str, &str)], args: &[&str]) -> Supervisor {
        let log = self.path("supervisor.log");
        let child = Command::new(BIN)
            // A default the caller's `vars` may override.
            .env("CRONWARDEN_LOG", "info")
            .envs(vars.iter().copied())
            .args(["run", "--config", self.config.to_str().unwrap()])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.path("supervisor.out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Supervisor { child, log }
    }

    /// The open alerts of the status, as (kind, job) pairs.
    pub fn open_alerts(&self) -> Vec<(String, Option<String>)> {
        self.status()
            .1
            .and_then(|s| s["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["kind"].as_str().unwrap_or_default().to_string(),
                    a["job"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// Waits until the status is `ok` with a worker, returns the status.
    pub fn wait_ok(&self, limit: Duration) -> Value {
        wait_until("status ok", limit, || {
            let (_, s) = self.status();
            s.filter(|s| s["state"] == "ok" && s["worker"]["pid"].is_u64())
        })
    }

    /// Lines of a file the jobs append to (empty if it does not exist yet).
    pub fn lines(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A running `cronwarden run`; killed (and its worker with it) on drop.
pub struct Supervisor {
    pub child: Child,
    pub log: PathBuf,
}

impl Supervisor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for the exit code.
    pub fn stop(&mut self, limit: Duration) -> i32 {
        kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let status = wait_until("supervisor exit", limit, || self.child.try_wait().unwrap());
        status.code().unwrap_or(-1)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill(self.pid(), nix::sys::signal::Signal::SIGCONT);
            kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

pub fn job<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("job {name} not in status {status}"))
}

/// One row of the `runs` table, as the tests need it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub scheduled_at: Option<String>,
    pub covers: Vec<String>,
    pub trigger: String,
    pub outcome: String,
    pub skip_reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl Env {
    /// The store, opened read-only as an operator's `sqlite3` would.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state_dir().join("cronwarden.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Every record of `job`, oldest first.
    pub fn rows(&self, job: &str) -> Vec<Row> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT id, scheduled_at, covers, trigger, outcome, skip_reason, started_at, finished_at, error FROM runs WHERE job = ?1 ORDER BY id")
            .unwrap();
        st.query_map([job], |r| {
            let covers: String = r.get(2)?;
            Ok(Row {
                id: r.get(0)?,
                scheduled_at: r.get(1)?,
                covers: serde_json::from_str(&covers).unwrap(),
                trigger: r.get(3)?,
                outcome: r.get(4)?,
                skip_reason: r.get(5)?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
                error: r.get(8)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

/// Whole seconds (as unix seconds) strictly inside `(from, to)` that are
/// multiples of `step`: the expected fires of `*/step * * * * *`, computed
/// independently of cronwarden's own schedule code.
pub fn every_nth_second(from: i64, to: i64, step: i64) -> Vec<i64> {
    ((from + 1)..to).filter(|s| s % step == 0).collect()
}

pub fn unix(ts: &str) -> i64 {
    let t: jiff::Timestamp = ts.parse().unwrap();
    t.as_second()
}

pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Checks that every expected second is covered by exactly one record of
/// the job, and that no record covers a time outside the schedule.
pub fn assert_accounted(rows: &[Row], expected: &[i64], from: i64, to: i64, job: &str) {
    let mut seen = std::collections::BTreeMap::<i64, Vec<i64>>::new();
    for r in rows {
        for c in &r.covers {
            let t: jiff::Timestamp = c.parse().unwrap();
            let s = t.as_second();
            if s > from && s < to {
                assert_eq!(
                    t.subsec_nanosecond(),
                    0,
                    "{job}: fire at a fractional second {c}"
                );
                seen.entry(s).or_default().push(r.id);
            }
        }
    }
    for e in expected {
        match seen.remove(e).as_deref() {
            Some([_]) => {}
            None => panic!("{job}: scheduled second {e} has no record\n{rows:#?}"),
            Some(ids) => panic!(
                "{job}: scheduled second {e} has {} records: {ids:?}",
                ids.len()
            ),
        }
    }
    assert!(
        seen.is_empty(),
        "{job}: records for times the schedule does not have: {seen:?}"
    );
}

/// What the test receiver does with the next request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Never answer (the connection stays open).
    Hang,
}

/// One request's headers, as (lowercased name, value).
pub type Headers = Vec<(String, String)>;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// A real HTTP receiver on 127.0.0.1 for webhook sinks and pings: records
/// every request, and the bodies and headers of those it accepts; answers
/// from a script, then with its default reply (200 unless
/// [`Receiver::set_default`] says other).
pub struct Receiver {
    pub url: String,
    /// The bodies of the requests answered 200.
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    /// The headers (names lowercased) of the requests answered 200, in the
    /// order of `bodies`.
    pub headers: std::sync::Arc<std::sync::Mutex<Vec<Headers>>>,
    /// Every request, whatever it was answered.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub hits: std::sync::Arc<std::sync::Mutex<Vec<Hit>>>,
    default: std::sync::Arc<std::sync::Mutex<Reply>>,
}

impl Receiver {
    pub fn start(script: Vec<Reply>) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::{atomic::Ordering, Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(vec![]));
        let headers = Arc::new(Mutex::new(vec![]));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits = Arc::new(Mutex::new(vec![]));
        let default = Arc::new(Mutex::new(Reply::Status(200)));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let shared = (
            bodies.clone(),
            headers.clone(),
            requests.clone(),
            hits.clone(),
            default.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (b, h, r, hk, d) = shared.clone();
                let script = script.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut len = 0usize;
                    let mut seen = vec![];
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                            if k == "content-length" {
                                len = v.parse().unwrap_or(0);
                            }
                            seen.push((k, v));
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    hk.lock().unwrap().push(Hit {
                        method,
                        path,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    r.fetch_add(1, Ordering::SeqCst);
                    let next = script.lock().unwrap().pop_front();
                    let reply = next.unwrap_or_else(|| *d.lock().unwrap());
                    let code = match reply {
                        Reply::Hang => {
                            std::thread::sleep(Duration::from_secs(600));
                            return;
                        }
                        Reply::Status(c) => c,
                    };
                    if code == 200 {
                        // Both under one lock order (bodies, then headers) so
                        // that they stay in step.
                        let mut b = b.lock().unwrap();
                        b.push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                        h.lock().unwrap().push(seen);
                    }
                    let mut conn = conn;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                });
            }
        });
        Receiver {
            url,
            bodies,
            headers,
            requests,
            hits,
            default,
        }
    }

    /// How requests are answered once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    /// The requests received so far, oldest first.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// (event, kind) of every delivered notice.
    pub fn events(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["event"].as_str().unwrap_or("").to_string(),
                    b["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// A plain HTTP/1.1 GET over any stream: (status code, body).
pub fn http_get(mut stream: impl std::io::Read + std::io::Write, path: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

impl Env {
    /// GET `path` on the status socket (as `curl --unix-socket` would).
    pub fn socket_get(&self, path: &str) -> Option<(u16, String)> {
        let s = std::os::unix::net::UnixStream::connect(self.state_dir().join("cronwarden.sock"))
            .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Some(http_get(s, path))
    }
}

/// The value of one sample (`name{labels}` exactly as exposed) in a
/// Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
impl Env {
    /// `GET /v1/status` straight over the socket, without starting the CLI:
    /// fast enough (about a millisecond) to see states that last only a
    /// few tens of milliseconds.
    pub fn status_fast(&self) -> Option<Value> {
        let (_, body) = self.socket_get("/v1/status")?;
        serde_json::from_str(&body).ok()
    }
}

/// A TCP port free at the moment of asking (for `metrics_listen` and the
/// servers tests start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET over TCP to 127.0.0.1 (None if nothing listens).
pub fn tcp_get(port: u16, path: &str) -> Option<(u16, String)> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    Some(http_get(s, path))
}
