//! The pipe protocol between supervisor and worker: NDJSON, one object per
//! line, `{"type": ...}`-tagged.
//!
//! - Events flow worker → supervisor on an inherited pipe (fd 3 in the
//!   worker): hello, heartbeat, schedule, fire, skip, finish, output.
//! - Commands flow supervisor → worker on the worker's stdin: configure,
//!   trigger, pause, resume, kill, report schedule, re-arm a job, shutdown.
//!
//! Lines are bounded by [`MAX_LINE`]; a reader drops (and counts) longer or
//! undecodable lines instead of failing, so nothing the worker writes can
//! crash the supervisor.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::status::{RunRecord, SkipReason, Trigger};

/// The longest event line (worker → supervisor) accepted, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;
/// The longest command line (supervisor → worker): `configure` carries the
/// whole config text, JSON-escaped (at most twice its size for valid TOML),
/// and a config with its drop-ins may be up to `config::MAX_CONFIG_BYTES`. The
/// supervisor validated it before sending, so a larger bound is safe here.
pub const MAX_COMMAND_LINE: usize = 2 * crate::config::MAX_CONFIG_BYTES + 64 * 1024;

/// A job and the next instant the worker has armed for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Armed {
    pub job: String,
    pub next_fire_at: Option<Timestamp>,
    pub paused: bool,
}

/// A compact digest of an armed schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmedDigest {
    pub jobs: u32,
    pub digest: u64,
}

impl ArmedDigest {
    /// FNV-1a over `(name, next fire)` pairs, which must come sorted by name.
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<Timestamp>)>) -> ArmedDigest {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut jobs = 0;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        for (name, next) in pairs {
            jobs += 1;
            eat(name.as_bytes());
            eat(&[0]);
            eat(&next
                .map(|t| t.as_nanosecond())
                .unwrap_or(i128::MIN)
                .to_le_bytes());
        }
        ArmedDigest { jobs, digest: h }
    }
}

/// What a run in flight has written so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub run_id: u64,
    pub bytes: u64,
    pub last_output_at: Option<Timestamp>,
    /// The last complete or partial line (at most 200 characters).
    pub last_line: String,
}

/// What the worker's claim thread last learnt from the shared ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterHealth {
    /// This host's name in the ledger.
    pub host: String,
    /// This host's wall clock minus the database's, in milliseconds, at
    /// the last beat that reached the database (none yet: unmeasured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_ms: Option<i64>,
    /// Skew beyond this many milliseconds either way is alerted.
    pub skew_bound_ms: u64,
    /// Jobs whose definition here differs from the one most live hosts
    /// hold: their fires are not claimed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<DefinitionDiffers>,
    /// Every host the ledger knows (this one too), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<crate::cluster::Peer>,
}

/// A job this host holds another definition of than most live hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionDiffers {
    pub job: String,
    /// This host's definition hash.
    pub ours: String,
    /// The one most live hosts hold.
    pub theirs: String,
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker is up and has applied its config.
    Hello {
        pid: u32,
        version: String,
        started_at: Timestamp,
    },
    /// Written by the scheduling loop itself after a turn: proof of progress.
    Heartbeat {
        /// Loop turns completed since the worker started.
        seq: u64,
        at: Timestamp,
        /// The last turn that completed without error.
        last_good_turn_at: Option<Timestamp>,
        /// Runs in progress.
        running: u32,
        /// Why the last store write failed, while it keeps failing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store_error: Option<String>,
        /// A digest of every (job, next fire) the worker has armed, and how
        /// many jobs: the supervisor checks them against its own view.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        armed: Option<ArmedDigest>,
        /// Output progress of the runs in flight (the oldest 100).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        progress: Vec<RunProgress>,
        /// Store write latency and dropped log lines, for the metrics
        /// (absent in lines from older workers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stats: Option<crate::stats::WorkerStats>,
    },
    /// The full set of armed jobs, after (re)configuration.
    Schedule { jobs: Vec<Armed> },
    /// A run started.
    Fire {
        job: String,
        run_id: u64,
        scheduled_at: Option<Timestamp>,
        covers: Vec<Timestamp>,
        trigger: Trigger,
        /// The job's pid, which is also its process group id.
        pid: u32,
        /// Inodes of the job's stdout and stderr pipes, to find who holds them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pipes: Vec<u64>,
        started_at: Timestamp,
        next_fire_at: Option<Timestamp>,
    },
    /// A scheduled fire that did not run.
    Skip {
        job: String,
        run_id: u64,
        scheduled_at: Timestamp,
        reason: SkipReason,
        /// The run that was still busy, for `overlap`.
        busy_run_id: Option<u64>,
        next_fire_at: Option<Timestamp>,
    },
    /// A fire was queued behind a busy run (`overlap = queue`); it is
    /// accounted for, and a `fire` follows when it starts.
    Queued {
        job: String,
        run_id: u64,
        covers: Vec<Timestamp>,
        next_fire_at: Option<Timestamp>,
    },
    /// A run ended (or could not start: `outcome` failed with `error`).
    Finish { run: RunRecord },
    /// Sent while the store cannot commit, before a run is spawned: the
    /// run's record and its job's next fire, which the supervisor keeps
    /// for the next worker should this one die (issue 14). A `fire`
    /// follows once the job started.
    Claimed {
        run: RunRecord,
        next_fire_at: Option<Timestamp>,
    },
    /// A command could not be carried out.
    CommandFailed { command: String, error: String },
    /// The wall clock jumped; fires it skipped go through the misfire rules.
    ClockJump(crate::status::ClockJump),
    /// This host's view of the shared ledger (store = postgres), sent at
    /// each beat of the claim thread: the whole state, so a lost one is
    /// made good by the next.
    Cluster(ClusterHealth),
    /// One line a running job wrote (`log_output` or not), for
    /// `cronwarden logs -f`: only the lines within the output log budget
    /// are sent, and `held_back` counts those of this run left out before
    /// this one.
    Output {
        job: String,
        run_id: u64,
        stream: OutputStream,
        line: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        held_back: u64,
    },
    /// The answer to a command that carried a `request` id.
    Reply {
        request: u64,
        ok: bool,
        error: Option<String>,
        /// The run a trigger started.
        run_id: Option<u64>,
    },
}

/// Which of a job's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Apply this config (the file's text, already validated by the
    /// supervisor; sent whole so both sides run the same config even if
    /// the file changes in between).
    Configure {
        path: PathBuf,
        source: String,
        /// The drop-ins read with it, in order (see `config::dropin`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dropins: Vec<crate::config::DropIn>,
    },
    /// Run the job now (trigger `manual`). With a `request` id the worker
    /// answers with a `reply` event.
    Trigger {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Stop firing the job until resumed (skipped fires are recorded
    /// `paused`); survives restarts.
    Pause {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    Resume {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// End the job's running run (`run_id`), or all of them: SIGTERM to
    /// the group, SIGKILL after the kill grace; recorded `killed` "by
    /// operator (uid N)". Answered with a `reply`.
    Kill {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<u64>,
        /// Who asked (the socket peer's uid), for the record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Send a `schedule` event with every job's armed time (the supervisor
    /// asks when the armed digest disagrees with its own, to find which).
    ReportSchedule,
    /// Arm the job again from its schedule and what it last accounted: the
    /// supervisor's expectation and the worker's arming kept disagreeing.
    /// Fires a wrong arming passed over are accounted by the misfire rules;
    /// a `schedule` event follows either way.
    Rearm { job: String },
    /// Stop every job within its kill grace, then exit.
    Shutdown,
    /// Sent to a new worker before `configure` (any number of them, each
    /// within the line bound): the supervisor's second copy of what its
    /// predecessor may have held in memory, not confirmed stored. The new
    /// worker writes it when it takes the store over, before it plans:
    /// records only where the store has none (or only a `running` one),
    /// cursors only forward, so nothing that ran runs again (issue 14).
    Adopt {
        #[serde(default)]
        records: Vec<crate::status::RunRecord>,
        #[serde(default)]
        cursors: Vec<AdoptedCursor>,
    },
}

/// A job's next fire as the dead worker had claimed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedCursor {
    pub job: String,
    pub next_fire_at: Timestamp,
}

/// One frame of an NDJSON stream, as [`LineCodec`] cuts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line without its `\n` (and without a `\r` before it). Bytes, not a
    /// string: invalid UTF-8 is the decoder's business, not the framer's.
    Line(bytes::Bytes),
    /// A line longer than the limit: counted, never buffered whole. Reported
    /// once, as soon as the limit is passed; the rest of it, up to its
    /// newline, is thrown away as it arrives.
    TooLong,
}

/// Cuts a byte stream into lines of at most `max` bytes.
///
/// Unlike tokio-util's `LinesCodec` it never fails on content: invalid UTF-8
/// is passed on as bytes, and an over-long line yields [`Frame::TooLong`]
/// instead of an error. That matters because `FramedRead` ends the stream
/// after any decoder error, and a reader that treats the end as EOF would
/// stop listening to a perfectly healthy peer over one bad line. Memory held
/// is bounded by `max` plus one read, whatever the peer writes.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Inside an over-long line: drop bytes until its newline.
    discarding: bool,
    /// Where to resume the newline search (the buffered prefix has none).
    scanned: usize,
}

impl LineCodec {
    pub fn new(max: usize) -> LineCodec {
        LineCodec {
            max,
            discarding: false,
            scanned: 0,
        }
    }
}

impl tokio_util::codec::Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| self.scanned + i);
            if self.discarding {
                match newline {
                    Some(i) => {
                        let _ = buf.split_to(i + 1);
                        self.discarding = false;
                        self.scanned = 0;
                        continue;
                    }
                    None => {
                        buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                }
            }
            match newline {
                Some(i) if i <= self.max => {
                    let mut line = buf.split_to(i + 1).freeze();
                    self.scanned = 0;
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    return Ok(Some(Frame::Line(line)));
                }
                Some(i) => {
                    let _ = buf.split_to(i + 1);
                    self.scanned = 0;
                    return Ok(Some(Frame::TooLong));
                }
                None if buf.len() > self.max => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong));
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A last line without its newline (the peer died mid-write) is
        // still a line; what remains of a discarded one is not.
        self.scanned = 0;
        if self.discarding || buf.is_empty() {
            buf.clear();
            self.discarding = false;
            return Ok(None);
        }
        Ok(Some(Frame::Line(buf.split().freeze())))
    }
}

/// Why an event line was dropped.
#[derive(Debug, thiserror::Error)]
pub enum BadLine {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("not an event: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes one framed line as an event.
pub fn decode_event(frame: Frame) -> Result<Event, BadLine> {
    match frame {
        Frame::TooLong => Err(BadLine::TooLong),
        Frame::Line(line) => Ok(serde_json::from_str(std::str::from_utf8(&line)?)?),
    }
}

/// Encodes one NDJSON line, newline included.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("wire types always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn event_json_is_pinned() {
        let cases = [
            (
                Event::Hello {
                    pid: 42,
                    version: "0.1.0".into(),
                    started_at: ts("2026-11-22T10:00:00Z"),
                },
                json!({"type": "hello", "pid": 42, "version": "0.1.0", "started_at": "2026-11-22T10:00:00Z"}),
            ),
            (
                Event::Heartbeat {
                    seq: 9,
                    at: ts("2026-11-22T10:00:01Z"),
                    last_good_turn_at: Some(ts("2026-11-22T10:00:01Z")),
                    running: 1,
                    store_error: None,
                    armed: None,
                    progress: vec![],
                    stats: None,
                },
                json!({"type": "heartbeat", "seq": 9, "at": "2026-11-22T10:00:01Z", "last_good_turn_at": "2026-11-22T10:00:01Z", "running": 1}),
            ),
            (
                Event::Skip {
                    job: "a".into(),
                    run_id: 3,
                    scheduled_at: ts("2026-11-22T10:00:00Z"),
                    reason: SkipReason::Overlap,
                    busy_run_id: Some(2),
                    next_fire_at: None,
                },
                json!({"type": "skip", "job": "a", "run_id": 3, "scheduled_at": "2026-11-22T10:00:00Z", "reason": "overlap", "busy_run_id": 2, "next_fire_at": null}),
            ),
            (
                Event::Fire {
                    job: "a".into(),
                    run_id: 4,
                    scheduled_at: None,
                    covers: vec![],
                    trigger: Trigger::Manual,
                    pid: 77,
                    pipes: vec![],
                    started_at: ts("2026-11-22T10:00:00Z"),
                    next_fire_at: None,
                },
                json!({"type": "fire", "job": "a", "run_id": 4, "scheduled_at": null, "covers": [], "trigger": "manual", "pid": 77, "started_at": "2026-11-22T10:00:00Z", "next_fire_at": null}),
            ),
            (
                Event::ClockJump(crate::status::ClockJump {
                    at: ts("2026-11-22T10:00:00Z"),
                    jump_ms: 30_000,
                    jobs_due: 1,
                    fires_due: 30,
                    kind: crate::status::ClockJumpKind::Step,
                }),
                json!({"type": "clock_jump", "at": "2026-11-22T10:00:00Z", "jump_ms": 30000, "jobs_due": 1, "fires_due": 30, "kind": "step"}),
            ),
            (
                Event::Cluster(ClusterHealth {
                    host: "h1".into(),
                    skew_ms: Some(-2500),
                    skew_bound_ms: 2000,
                    differs: vec![DefinitionDiffers {
                        job: "a".into(),
                        ours: "aa".into(),
                        theirs: "bb".into(),
                    }],
                    peers: vec![crate::cluster::Peer {
                        host: "h2".into(),
                        last_seen: ts("2026-11-22T10:00:00Z"),
                        skew_ms: 3,
                        claimed_last_hour: 12,
                        alive: true,
                    }],
                }),
                json!({"type": "cluster", "host": "h1", "skew_ms": -2500, "skew_bound_ms": 2000,
                       "differs": [{"job": "a", "ours": "aa", "theirs": "bb"}],
                       "peers": [{"host": "h2", "last_seen": "2026-11-22T10:00:00Z", "skew_ms": 3, "claimed_last_hour": 12, "alive": true}]}),
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(serde_json::to_value(&ev).unwrap(), want);
            let line = encode(&ev);
            assert_eq!(*line.last().unwrap(), b'\n');
            assert_eq!(serde_json::from_slice::<Event>(&line).unwrap(), ev);
        }
    }

    #[test]
    fn command_json_is_pinned() {
        assert_eq!(
            serde_json::to_value(Command::Trigger {
                job: "a".into(),
                request: None
            })
            .unwrap(),
            json!({"type": "trigger", "job": "a"})
        );
        assert_eq!(
            serde_json::to_value(Command::Pause {
                job: "a".into(),
                request: Some(3)
            })
            .unwrap(),
            json!({"type": "pause", "job": "a", "request": 3})
        );
        assert_eq!(
            serde_json::to_value(Event::Reply {
                request: 3,
                ok: false,
                error: Some("no".into()),
                run_id: None
            })
            .unwrap(),
            json!({"type": "reply", "request": 3, "ok": false, "error": "no", "run_id": null})
        );
        assert_eq!(
            serde_json::to_value(Command::Shutdown).unwrap(),
            json!({"type": "shutdown"})
        );
    }

    #[test]
    fn output_and_kill_json_is_pinned() {
        let line = Event::Output {
            job: "a".into(),
            run_id: 4,
            stream: OutputStream::Stderr,
            line: "oops".into(),
            held_back: 0,
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({"type": "output", "job": "a", "run_id": 4, "stream": "stderr", "line": "oops"})
        );
        let held =
            r#"{"type":"output","job":"a","run_id":4,"stream":"stdout","line":"x","held_back":7}"#;
        match serde_json::from_str::<Event>(held).unwrap() {
            Event::Output {
                held_back, stream, ..
            } => {
                assert_eq!((held_back, stream), (7, OutputStream::Stdout))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            serde_json::to_value(Command::Kill {
                job: "a".into(),
                run_id: Some(4),
                uid: Some(1000),
                request: Some(2)
            })
            .unwrap(),
            json!({"type": "kill", "job": "a", "run_id": 4, "uid": 1000, "request": 2})
        );
        assert_eq!(
            serde_json::to_value(Command::Kill {
                job: "a".into(),
                run_id: None,
                uid: None,
                request: None
            })
            .unwrap(),
            json!({"type": "kill", "job": "a"})
        );
    }

    #[test]
    fn heartbeat_stats_are_optional_both_ways() {
        // A line from a worker that predates `stats` still decodes.
        let old = r#"{"type":"heartbeat","seq":1,"at":"2026-11-22T10:00:01Z","last_good_turn_at":null,"running":0}"#;
        match serde_json::from_str::<Event>(old).unwrap() {
            Event::Heartbeat { stats, .. } => assert_eq!(stats, None),
            other => panic!("{other:?}"),
        }
        let mut stats = crate::stats::WorkerStats::default();
        stats
            .store_write_seconds
            .observe(crate::stats::STORE_WRITE_BUCKETS, 0.002);
        stats.log_lines_dropped = 3;
        let ev = Event::Heartbeat {
            seq: 2,
            at: ts("2026-11-22T10:00:01Z"),
            last_good_turn_at: None,
            running: 0,
            store_error: None,
            armed: None,
            progress: vec![],
            stats: Some(stats),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["stats"]["log_lines_dropped"], 3);
        assert_eq!(v["stats"]["store_write_seconds"]["count"], 1);
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
    }

    #[test]
    fn junk_does_not_decode() {
        for junk in [&b"not json"[..], b"{\"type\":\"nope\"}", b"\xff\xfe", b"{}"] {
            assert!(serde_json::from_slice::<Event>(junk).is_err());
        }
    }
}
