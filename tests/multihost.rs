//! Several hosts on one PostgreSQL ledger (issue 19), end to end: three
//! instances with their own state directories share a database of a
//! PostgreSQL cluster the test runs itself (initdb + pg_ctl in a temp
//! directory, on a free port), so restarting it disturbs nothing else.
//! One instance is killed with SIGKILL, another stopped (SIGSTOP) past
//! its lease, the database restarted once; afterwards the jobs' own stamps
//! and the shared table show every fire ran at most once, each fire that
//! ran has its one row on the host that ran it, and the fires while some
//! host was up are all accounted.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;

use crate::util::{free_port, kill, now_unix, skip, wait_until, Env, Supervisor};

const LONG: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster of the test's own; stopped and removed on drop.
pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// `Err(why)` when no PostgreSQL server binaries are installed here.
    pub(crate) fn start() -> Result<PgCluster, String> {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql ({e})"))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .ok_or("no PostgreSQL server binaries under /usr/lib/postgresql")?;
        let dir = tempfile::Builder::new().prefix("cw-pg-").tempdir().unwrap();
        // initdb refuses to run as root: the cluster is the postgres user's.
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("running as root and there is no postgres user")?;
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let c = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = c.data();
        c.run("initdb", &["-D", &data, "-A", "trust", "-U", "root"])?;
        c.pg_start()?;
        Ok(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn pg_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// A crash-like stop (no checkpoint), a pause, and a start.
    fn restart(&self, down_for: Duration) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .unwrap();
        std::thread::sleep(down_for);
        self.pg_start().unwrap();
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://root@127.0.0.1:{}/{db}", self.port)
    }

    pub(crate) fn client(&self, db: &str) -> postgres::Client {
        wait_until("a connection to the test's PostgreSQL", LONG, || {
            postgres::Client::connect(&self.url(db), postgres::NoTls).ok()
        })
    }
}

impl PgCluster {
    /// Turns TLS on with a CA of the test's own (`ca.pem` in the returned
    /// directory) and a server certificate for 127.0.0.1, and refuses every
    /// connection over TCP without TLS; restarts the server.
    fn enable_tls(&self) -> Result<PathBuf, String> {
        let dir = self.dir.path().join("tls");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run openssl: {e}"))?;
            out.status.success().then_some(()).ok_or_else(|| {
                format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr))
            })
        };
        let days = ["-days", "2"];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-subj",
                    "/CN=cw-test-ca",
                ][..],
                &days,
            ]
            .concat(),
        )?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        openssl(
            &[
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-extfile",
                    "ext",
                ][..],
                &days,
            ]
            .concat(),
        )?;
        if self.as_postgres {
            let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            for f in ["server.pem", "server.key"] {
                nix::unistd::chown(&dir.join(f), Some(pg.uid), Some(pg.gid)).unwrap();
            }
            nix::unistd::chown(&dir, Some(pg.uid), Some(pg.gid)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
        let data = PathBuf::from(self.data());
        let mut conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ));
        fs::write(data.join("postgresql.conf"), conf).unwrap();
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        self.restart(Duration::ZERO);
        Ok(dir)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// One host: its own state directory and config on the shared database.
/// The job is the same on every host (a host whose definition differs
/// would not claim it): each stamps the directory it runs in, its host's.
fn host(name: &str, url: &str, stamps: &Path) -> Env {
    Env::new(&format!(
        "store = {url:?}\nhost = {name:?}\nlease = \"3s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
         shell = '''echo \"$PWD $CRONWARDEN_JOB $CRONWARDEN_RUN_ID $CRONWARDEN_COVERS\" >> {}; sleep 2'''\n",
        stamps.display()
    ))
}

/// (host index, job, covered time) of each stamp.
fn stamps(path: &Path, hosts: &[Env]) -> Vec<(usize, String, i64)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .flat_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let h = hosts
                .iter()
                .position(|e| Path::new(w[0]) == e.dir.path())
                .unwrap_or_else(|| panic!("a stamp from an unknown directory: {l}"));
            w.get(3..)
                .unwrap_or_default()
                .iter()
                .map(|c| (h, w[1].to_string(), crate::util::unix(c)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The host of the newest stamp after `t`, once there is one.
fn winner_after(path: &Path, hosts: &[Env], t: i64, not: &[usize]) -> usize {
    wait_until("a fire run after the last step", LONG, || {
        stamps(path, hosts)
            .iter()
            .filter(|s| s.2 > t && !not.contains(&s.0))
            .max_by_key(|s| s.2)
            .map(|s| s.0)
    })
}

/// Stops (or continues, or kills) a host's supervisor and worker.
pub(crate) fn signal_host(sup: &Supervisor, worker: u32, sig: Signal) {
    kill(worker, sig);
    kill(sup.pid(), sig);
}

/// A PostgreSQL cluster of the test's own with an empty database `cw`,
/// or `None` (the test is skipped) where none can be started.
pub(crate) fn database() -> Option<(PgCluster, String)> {
    match PgCluster::start() {
        Ok(pg) => {
            pg.client("postgres")
                .batch_execute("CREATE DATABASE cw")
                .unwrap();
            let url = pg.url("cw");
            Some((pg, url))
        }
        Err(why) => {
            skip(&format!("no PostgreSQL cluster can be started: {why}"));
            None
        }
    }
}

pub(crate) fn worker_pid(env: &Env) -> u32 {
    wait_until("a worker pid", LONG, || {
        env.status().1?["worker"]["pid"].as_u64().map(|p| p as u32)
    })
}

#[test]
fn three_hosts_run_each_fire_once_through_a_kill_a_stop_and_a_database_restart() {
    let Some((pg, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stamp_file = dir.path().join("stamps");
    let hosts: Vec<Env> = ["h0", "h1", "h2"]
        .iter()
        .map(|h| host(h, &url, &stamp_file))
        .collect();
    let mut sups: Vec<Supervisor> = hosts.iter().map(Env::start).collect();
    let workers: Vec<u32> = hosts
        .iter()
        .map(|h| {
            h.wait_ok(LONG);
            worker_pid(h)
        })
        .collect();
    let from = now_unix() + 1;

    // The host running the fires dies hard, worker and all, with runs in
    // flight (each sleeps 2 s): a peer records them lost.
    let dead = winner_after(&stamp_file, &hosts, from, &[]);
    signal_host(&sups[dead], workers[dead], Signal::SIGKILL);
    let _ = sups[dead].child.wait();

    // The next one to run them stops past its lease (3 s), runs in
    // flight, then goes on.
    let stopped = winner_after(&stamp_file, &hosts, now_unix() + 1, &[dead]);
    signal_host(&sups[stopped], workers[stopped], Signal::SIGSTOP);
    let other = 3 - dead - stopped;
    winner_after(&stamp_file, &hosts, now_unix() + 5, &[dead, stopped]);
    signal_host(&sups[stopped], workers[stopped], Signal::SIGCONT);
    winner_after(&stamp_file, &hosts, now_unix() + 2, &[dead]);
    let until = now_unix() - 1;

    // The database goes away for a moment: claims fail closed meanwhile.
    pg.restart(Duration::from_secs(2));
    winner_after(&stamp_file, &hosts, now_unix() + 2, &[dead]);
    for i in [stopped, other] {
        assert_eq!(sups[i].stop(LONG), 0, "{}", sups[i].log());
    }

    let names = ["h0", "h1", "h2"];
    let stamped = stamps(&stamp_file, &hosts);
    // No fire ran twice, on one host or across hosts.
    let mut ran = BTreeMap::<(String, i64), Vec<&str>>::new();
    for (h, job, at) in &stamped {
        ran.entry((job.clone(), *at)).or_default().push(names[*h]);
    }
    let twice: Vec<_> = ran.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "fires that ran twice: {twice:?}");

    // The shared table: one row per fire, on the host that ran it, and
    // nothing left running once every host stopped or died.
    let mut db = pg.client("cw");
    let rows: BTreeMap<i64, (String, String, Option<String>)> = db
        .query(
            "SELECT (extract(epoch from scheduled_for))::bigint, host, state, lost_by
             FROM cw_fires WHERE job = 'tick'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    for ((_, at), hs) in &ran {
        let row = rows
            .get(at)
            .unwrap_or_else(|| panic!("fire {at} ran on {hs:?} and has no row"));
        assert_eq!(
            &row.0, &hs[0],
            "fire {at} ran on {hs:?}, the ledger says {row:?}"
        );
        // Lost: the dead host's runs in flight, and the stopped host's if
        // its supervisor, stopped as long, replaced its worker on waking
        // (the runs were then lost on that host too).
        assert!(
            row.1 == "finished" || (row.1 == "lost" && row.0 != names[other]),
            "fire {at}: {row:?} (dead {dead}, stopped {stopped}); the log of h{stopped}:\n{}",
            sups[stopped].log()
        );
    }
    for (at, (h, state, _)) in &rows {
        if state == "finished" {
            assert!(
                ran.contains_key(&("tick".to_string(), *at)),
                "fire {at} finished on {h} without its stamp"
            );
        }
    }
    // While some host was up and the database too, every fire was run.
    let missing: Vec<i64> = (from..=until).filter(|t| !rows.contains_key(t)).collect();
    assert!(
        missing.is_empty(),
        "fires between {from} and {until} never claimed: {missing:?}"
    );
    let peers: Vec<String> = db
        .query("SELECT host FROM cw_peers ORDER BY host", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(peers, names);
    // `cronwarden cluster` audits the same window across hosts from the
    // ledger: exactly once, and every host listed.
    let rfc = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let out = hosts[other].cmd(&[
        "cluster",
        "--config",
        hosts[other].config.to_str().unwrap(),
        "--from",
        &rfc(from),
        "--to",
        &rfc(until),
        "--json",
    ]);
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cluster --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(audit["ok"], true, "{audit:#}");
    assert_eq!(out.status.code(), Some(0));
    let listed: Vec<&str> = audit["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["host"].as_str())
        .collect();
    assert_eq!(listed, names);
    // The dead host's runs in flight were recorded lost by a peer, and so
    // were the stopped host's (set right to finished if they did end).
    let lost_by_peer = |h: &str| rows.values().filter(|r| r.0 == h && r.2.is_some()).count();
    assert!(lost_by_peer(names[dead]) > 0, "{rows:?}");
    assert!(lost_by_peer(names[stopped]) > 0, "{rows:?}");
}

/// `sslmode=require`: the host speaks TLS to the database and checks its
/// certificate against the system's trust store (here `SSL_CERT_FILE`, the
/// test's CA); a server it cannot verify is refused. The server takes TCP
/// connections with TLS only, so the one that succeeds was encrypted.
#[test]
fn the_ledger_over_tls_checks_the_servers_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        return skip("no openssl to make a test CA");
    }
    let pg = match PgCluster::start() {
        Ok(pg) => pg,
        Err(why) => return skip(&format!("no PostgreSQL cluster can be started: {why}")),
    };
    let tls = pg.enable_tls().unwrap();
    let env = Env::new(&format!(
        "store = \"{}?sslmode=require\"\nhost = \"h0\"\n",
        pg.url("postgres")
    ));
    let cluster = |ca: Option<&Path>| {
        let mut cmd = Command::new(crate::util::BIN);
        cmd.args([
            "cluster",
            "--json",
            "--config",
            env.config.to_str().unwrap(),
        ])
        .stdin(Stdio::null());
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            // A store with no test CA in it.
            None => cmd.env("SSL_CERT_FILE", env.path("empty.pem")),
        };
        cmd.output().unwrap()
    };
    fs::write(env.path("empty.pem"), "").unwrap();
    let out = cluster(Some(&tls.join("ca.pem")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// A host whose definition of a job differs from the other two hosts'
/// alerts on it (`job_definition_differs`, status degraded) and lists
/// the hosts in its status; the hosts that agree stay ok.
#[test]
fn a_differing_definition_on_one_host_is_an_alert_there_and_status_lists_the_hosts() {
    let Some((_pg, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stamp_file = dir.path().join("stamps");
    let agree: Vec<Env> = ["h0", "h1"]
        .iter()
        .map(|h| host(h, &url, &stamp_file))
        .collect();
    let _sups: Vec<Supervisor> = agree.iter().map(Env::start).collect();
    for h in &agree {
        h.wait_ok(LONG);
    }
    // Started once the other two published theirs: they are the most.
    let odd = Env::new(&format!(
        "store = {url:?}\nhost = \"h2\"\nlease = \"3s\"\n\
         [[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n\
         shell = \"true\"\n"
    ));
    let _odd_sup = odd.start();
    let status = wait_until(
        "h2 alerts on its differing definition of tick",
        LONG,
        || {
            let s = odd.status().1?;
            s["alerts"]
                .as_array()?
                .iter()
                .any(|a| a["kind"] == "job_definition_differs" && a["job"] == "tick")
                .then_some(s)
        },
    );
    assert_eq!(status["state"], "degraded", "{status}");
    let hosts = wait_until("h2's status lists the three hosts", LONG, || {
        let s = odd.status().1?;
        let hosts: Vec<String> = s["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p["host"].as_str().map(String::from))
            .collect();
        (hosts.len() == 3).then_some(hosts)
    });
    assert_eq!(hosts, ["h0", "h1", "h2"]);
    // The hosts that agree run the fires and alert on nothing of it.
    let s = agree[0].status().1.expect("h0's status");
    assert!(
        !s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "job_definition_differs"),
        "{s}"
    );
    let h0 = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["host"] == "h0")
        .cloned();
    assert!(h0.is_some_and(|p| p["alive"] == true), "{s}");
}

mod ahead;
mod reload;
mod worker;
