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
}

impl ControlOp {
    pub fn name(&self) -> &'static str {
        match self {
            ControlOp::Trigger(_) => "trigger",
            ControlOp::Pause(_) => "pause",
            ControlOp::Resume(_) => "resume",
            ControlOp::Reload => "reload",
            ControlOp::AlertTest => "alerts test",
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
