//! Control requests from the socket to the supervisor's main loop, which
//! alone talks to the worker and owns the config. A handler sends a
//! [`ControlRequest`] and waits (bounded) for its [`ControlReply`].

use serde_json::Value;
use tokio::sync::oneshot;

/// What a control call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    Trigger(String),
    Pause(String),
    Resume(String),
    /// Re-read and validate the config file, then apply it.
    Reload,
    /// Send a marked test alert through every sink and report each result.
    AlertTest,
    /// End the job's run `run_id` (or every run of it in progress), asked
    /// by the socket peer with `uid`.
    Kill {
        job: String,
        run_id: Option<u64>,
        uid: Option<u32>,
    },
    /// The output lines of a run after sequence number `after` (a read,
    /// answered by the loop from what it keeps for followers).
    Output {
        job: String,
        run_id: u64,
        after: u64,
    },
}

impl ControlOp {
    pub fn name(&self) -> &'static str {
        match self {
            ControlOp::Trigger(_) => "trigger",
            ControlOp::Pause(_) => "pause",
            ControlOp::Resume(_) => "resume",
            ControlOp::Reload => "reload",
            ControlOp::AlertTest => "alerts test",
            ControlOp::Kill { .. } => "kill",
            ControlOp::Output { .. } => "output",
        }
    }
}

/// The HTTP status and JSON body to answer with.
#[derive(Debug)]
pub struct ControlReply {
    pub status: u16,
    pub body: Value,
}

impl ControlReply {
    pub fn ok(body: Value) -> Self {
        ControlReply { status: 200, body }
    }

    pub fn error(status: u16, msg: impl Into<String>) -> Self {
        ControlReply {
            status,
            body: serde_json::json!({ "error": msg.into() }),
        }
    }
}

pub struct ControlRequest {
    pub op: ControlOp,
    pub reply: oneshot::Sender<ControlReply>,
}
