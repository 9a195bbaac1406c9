//! The JSON shapes users see: `GET /v1/status`, run records, alerts.
//!
//! These are a contract (DESIGN.md): fields may be added, never renamed.
//! The tests (status_tests.rs) pin the JSON so that a rename fails the build.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alert_kind::AlertKind;

/// Overall health, worst first when sorted descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok,
    Degraded,
    Stalled,
    Down,
}

impl State {
    /// `cronwarden status` exit code: 0 ok, 1 degraded, 2 stalled or down.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Degraded => 1,
            State::Stalled | State::Down => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Stalled => "stalled",
            State::Down => "down",
        }
    }
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Catchup,
    Manual,
    /// A run started again after its fire's run failed (`retries`).
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Catchup => "catchup",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not finished yet (only ever seen while the run is in flight).
    Running,
    Success,
    Failed,
    Timeout,
    Killed,
    Lost,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::Lost => "lost",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether a run with this outcome counts toward the failure streak.
    /// `killed` does not: cronwarden itself ended the run (shutdown, or
    /// `overlap = replace`), which says nothing about the job.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Timeout | Outcome::Lost)
    }
}

/// Why a fire did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The job was still running (overlap `skip`, or a fire already queued).
    Overlap,
    /// Due longer ago than the job's misfire grace.
    Misfire,
    Paused,
    /// The worker was down or shutting down when the fire was due.
    WorkerDown,
    /// A fire waiting for its job (queued behind a run) when a reload
    /// removed the job from the config; or, several hosts, a fire claimed
    /// ahead in the shared ledger that a reload removed or re-scheduled
    /// before its instant.
    Removed,
    /// The store could not commit the fire's claim and the job says
    /// `on_store_failure = "hold"`: not run, recorded once the store writes.
    StoreUnavailable,
    /// Several hosts: another host claimed the fire in the shared ledger
    /// (it runs there). Not a record of this host's: reported only.
    Peer,
    /// Several hosts: this host's definition of the job differs from the
    /// one most live hosts hold, so it does not claim the job's fires.
    DefinitionDiffers,
}

impl SkipReason {
    /// The word the JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Misfire => "misfire",
            SkipReason::Paused => "paused",
            SkipReason::WorkerDown => "worker_down",
            SkipReason::Removed => "removed",
            SkipReason::StoreUnavailable => "store_unavailable",
            SkipReason::Peer => "peer",
            SkipReason::DefinitionDiffers => "definition_differs",
        }
    }
}

/// One run of a job, or one skipped fire (DESIGN.md "A run record").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub job: String,
    pub scheduled_at: Option<Timestamp>,
    /// Every scheduled time this run stands for (a coalesced catch-up covers several).
    pub covers: Vec<Timestamp>,
    pub trigger: Trigger,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub outcome: Outcome,
    pub skip_reason: Option<SkipReason>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Why the run failed when the job itself could not say (spawn error,
    /// timeout, lost); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last bytes of stdout and stderr (lossy UTF-8), bounded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    /// What the run held and cost (see [`Containment`]).
    #[serde(flatten)]
    pub contain: Containment,
    /// This catch-up may repeat fires that already ran: the first after
    /// both processes died while the store could not commit, when nothing
    /// durable says whether the dead worker ran them (issue 14; see
    /// docs/DESIGN.md, "Exactly once through store faults").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_repeat: bool,
}

/// What a run's processes were held in and what they cost: the cgroup
/// (or, without one, the process group), CPU and peak memory, and what
/// was left behind when the main process exited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Containment {
    /// The run's cgroup (absent: process group only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// CPU time of all the run's processes, µs (cgroup `cpu.stat`); null
    /// without a cgroup.
    #[serde(default)]
    pub cpu_usec: Option<u64>,
    /// Peak memory of the run, bytes (`memory.peak`); null where the
    /// memory controller is not delegated.
    #[serde(default)]
    pub memory_peak: Option<u64>,
    /// Processes still alive after the main process exited (or after the
    /// run was stopped), killed at the run's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftovers_killed: Option<u32>,
    /// The process still holding the run's output open when it ended
    /// (`pid (name)`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_holder: Option<String>,
    /// Without a cgroup: the run's process group and its leader's start
    /// time (clock ticks since boot), kept while it runs so that a new
    /// generation can kill it after a crash, and only it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_start: Option<u64>,
}

impl RunRecord {
    /// A record standing for `covers` (empty for a manual run), with
    /// `scheduled_at` the latest covered time, nothing finished yet, and no
    /// output: the one starting point every record is built from.
    pub fn new(
        id: u64,
        job: &str,
        covers: Vec<Timestamp>,
        trigger: Trigger,
        outcome: Outcome,
    ) -> RunRecord {
        RunRecord {
            id,
            job: job.to_string(),
            scheduled_at: covers.iter().max().copied(),
            covers,
            trigger,
            started_at: None,
            finished_at: None,
            outcome,
            skip_reason: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            error: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            contain: Containment::default(),
            may_repeat: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: Timestamp,
    /// Set when the executable this supervisor was started from has been
    /// replaced or removed on disk since: says what changed. A worker
    /// restarted from now on runs the file's new binary under this old
    /// supervisor until the service is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_replaced: Option<String>,
}

/// The worker as last observed. Fields are `null` when there is no worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub pid: Option<u32>,
    pub started_at: Option<Timestamp>,
    pub restarts: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub last_good_turn_age_ms: Option<u64>,
    /// The loop sequence number of the last heartbeat.
    pub heartbeat_seq: Option<u64>,
    /// Event lines from the worker that could not be decoded.
    pub malformed_events: u64,
}

/// Consecutive-run counters that reveal a quiet failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streaks {
    pub failures: u32,
    pub zero_output: u32,
    pub overlap_skips: u32,
}

/// A job's state as the status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Idle,
    Running,
    Late,
    Paused,
    Failing,
    Wedged,
}

impl JobState {
    /// Every state, in declaration order (the summary counts each).
    pub const ALL: [JobState; 6] = [
        JobState::Idle,
        JobState::Running,
        JobState::Late,
        JobState::Paused,
        JobState::Failing,
        JobState::Wedged,
    ];

    /// The state named `s` as the JSON spells it.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Idle => "idle",
            JobState::Running => "running",
            JobState::Late => "late",
            JobState::Paused => "paused",
            JobState::Failing => "failing",
            JobState::Wedged => "wedged",
        }
    }
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningInfo {
    pub run_id: u64,
    pub pid: u32,
    pub started_at: Timestamp,
    pub scheduled_at: Option<Timestamp>,
    /// When it last wrote anything, and what (as of the last heartbeat).
    #[serde(default)]
    pub last_output_at: Option<Timestamp>,
    #[serde(default)]
    pub last_line: Option<String>,
    /// Its output pipes' inodes (to find who holds them).
    #[serde(default, skip_serializing)]
    pub pipes: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub state: JobState,
    pub paused: bool,
    pub next_fire_at: Option<Timestamp>,
    /// Shared, not copied: a record is ~300 bytes and more with its
    /// output's tails, the supervisor keeps a status of every job, and each
    /// evaluation reports every job (issue 18). The same JSON as inline.
    pub last_run: Option<Arc<RunRecord>>,
    pub streaks: Streaks,
    #[serde(default)]
    pub running: Vec<RunningInfo>,
}

/// An open condition that needs a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub job: Option<String>,
    pub severity: Severity,
    pub opened_at: Timestamp,
    /// Always null here (the alert is open); present so that open alerts
    /// and the history (`GET /v1/alerts?all=1`) read with one shape.
    #[serde(default)]
    pub resolved_at: Option<Timestamp>,
    pub summary: String,
    /// Several hosts (store = postgres), a condition of the job's fires:
    /// the host that delivers it to the sinks (this one or a peer); absent
    /// for a single host, a per-host kind, or while the ledger has not
    /// answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// An alert as sinks receive it, and as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNotice {
    /// `opened`, `resolved` or `reminder`.
    pub event: String,
    pub kind: AlertKind,
    pub job: Option<String>,
    pub severity: Severity,
    pub summary: String,
    pub opened_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub host: String,
    pub details: serde_json::Value,
}

/// A jump of the worker's wall clock against its monotonic clock (NTP step,
/// suspend/resume, VM restore), as the worker observed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockJump {
    /// When it was noticed (the new wall time).
    pub at: Timestamp,
    /// Positive forward, negative backward.
    pub jump_ms: i64,
    /// Jobs with fires due at once because of it (forward jumps).
    pub jobs_due: u32,
    /// Scheduled times it passed over, all jobs together (forward jumps;
    /// at most 10,000 per job are counted).
    #[serde(default)]
    pub fires_due: u32,
    /// A step of the wall clock, or a suspend of the machine.
    #[serde(default)]
    pub kind: ClockJumpKind,
}

/// What moved the wall clock against the monotonic one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockJumpKind {
    /// The wall clock was set (NTP step, an operator, a VM restore).
    #[default]
    Step,
    /// The machine was suspended: boot time ran on while the monotonic
    /// clock stood still.
    Suspend,
}

impl ClockJumpKind {
    /// The word the JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockJumpKind::Step => "step",
            ClockJumpKind::Suspend => "suspend",
        }
    }
}

/// An alert sink's delivery health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkHealth {
    pub name: String,
    /// `exec` or `webhook`.
    pub kind: String,
    /// Notices that reached the sink (late ones included).
    pub delivered: u64,
    /// Deliveries that failed all their attempts (a notice re-sent later
    /// counts once per failed try).
    pub failed: u64,
    /// Notices lost to a full queue (the oldest go first).
    pub dropped: u64,
    /// Notices waiting for their first try.
    pub queued: usize,
    /// Notices taken from the queue and not delivered yet: the one under
    /// way, and those that failed and wait to be re-sent.
    #[serde(default)]
    pub undelivered: usize,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// Failed deliveries since the last success; from two on, the sink
    /// counts as failing and `alert_delivery_failed` is raised.
    pub consecutive_failures: u32,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub state: State,
    pub reasons: Vec<String>,
    pub supervisor: SupervisorInfo,
    pub worker: WorkerInfo,
    /// Shared with the supervisor's model, which rebuilds a job's status
    /// only when what it shows changed (issue 18). The same JSON as inline.
    pub jobs: Vec<Arc<JobStatus>>,
    pub alerts: Vec<Alert>,
    /// Alert sinks and how delivery to them is going.
    #[serde(default)]
    pub sinks: Vec<SinkHealth>,
    /// The last wall-clock jumps the worker noticed (newest last).
    #[serde(default)]
    pub clock_jumps: Vec<ClockJump>,
    /// The hosts sharing the ledger (store = postgres) as this host's
    /// worker last listed them; empty for a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<crate::cluster::Peer>,
}

impl StatusReport {
    /// This report without its per-job list: the default `GET /v1/status`.
    pub fn summary(&self) -> StatusSummary {
        let mut jobs_by_state: BTreeMap<JobState, usize> =
            JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for j in &self.jobs {
            *jobs_by_state.entry(j.state).or_default() += 1;
        }
        StatusSummary {
            state: self.state,
            reasons: self.reasons.clone(),
            supervisor: self.supervisor.clone(),
            worker: self.worker.clone(),
            jobs_total: self.jobs.len(),
            jobs_by_state,
            alerts: self.alerts.clone(),
            sinks: self.sinks.clone(),
            clock_jumps: self.clock_jumps.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// `GET /v1/status` (the default; `?jobs=all` gives the whole
/// [`StatusReport`]): everything but the per-job list, which `GET /v1/jobs`
/// serves by pages. Its size does not grow with the number of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSummary {
    pub state: State,
    pub reasons: Vec<String>,
    pub supervisor: SupervisorInfo,
    pub worker: WorkerInfo,
    /// How many jobs there are.
    pub jobs_total: usize,
    /// How many jobs are in each state; every state is present, 0 included.
    pub jobs_by_state: BTreeMap<JobState, usize>,
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub sinks: Vec<SinkHealth>,
    #[serde(default)]
    pub clock_jumps: Vec<ClockJump>,
    /// The hosts sharing the ledger (store = postgres) as this host's
    /// worker last listed them; empty for a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<crate::cluster::Peer>,
}

impl StatusSummary {
    /// The whole report, with the jobs read separately (`GET /v1/jobs`).
    pub fn with_jobs(self, jobs: Vec<Arc<JobStatus>>) -> StatusReport {
        StatusReport {
            state: self.state,
            reasons: self.reasons,
            supervisor: self.supervisor,
            worker: self.worker,
            jobs,
            alerts: self.alerts,
            sinks: self.sinks,
            clock_jumps: self.clock_jumps,
            peers: self.peers,
        }
    }
}

/// The body of every error reply on the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// The result of an audit (`GET /v1/jobs/{name}/audit`, `cronwarden audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub job: String,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Scheduled times in the window.
    pub expected: usize,
    /// Records that stand for scheduled times in the window.
    pub records: usize,
    /// Scheduled times with no record.
    pub missing: Vec<Timestamp>,
    /// Scheduled times with more than one record.
    pub duplicated: Vec<Timestamp>,
    /// Times claimed by records that the schedule does not have.
    pub unexpected: Vec<Timestamp>,
    /// Records by outcome (`success`, `skipped:overlap`, …).
    pub outcomes: BTreeMap<String, usize>,
    /// Ids of the catch-up runs in the window that may have repeated fires
    /// (`RunRecord::may_repeat`: both processes died while the store
    /// failed). The ledger holds one record per time, as the invariant
    /// asks; these say where a job may have run twice all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_repeat: Vec<u64>,
    pub ok: bool,
}

/// The recent output lines of a run as the supervisor received them
/// (`GET /v1/jobs/{name}/runs/{id}/output?after=SEQ`, `cronwarden logs -f`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowReply {
    pub job: String,
    pub run_id: u64,
    /// Whether the run is still in progress; once false, `lines` holds
    /// everything that will come.
    pub running: bool,
    /// The lines after `after`, oldest first.
    pub lines: Vec<FollowLine>,
    /// Lines after `after` that are no longer kept (the supervisor keeps
    /// only the newest of each run).
    pub missed: u64,
    /// What to pass as `after` next.
    pub next: u64,
}

/// One line of a run's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowLine {
    pub seq: u64,
    pub stream: crate::wire::OutputStream,
    pub line: String,
    /// Lines of this run held back by the output log budget just before
    /// this one.
    #[serde(default)]
    pub held_back: u64,
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
