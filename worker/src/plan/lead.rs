//! Fires decided ahead of their time: the loop (`scheduler/fire.rs`)
//! fires for an instant up to [`LEAD`] ahead of the wall clock, and what
//! the plan does between that turn and the instant must neither start a
//! run early nor take the instant twice. Further ahead than [`LEAD`] is no
//! lead but a clock stepped back, judged on the clock as it is.

use cronwarden_shared::config::JobSpec;
use jiff::{SignedDuration, Timestamp};

use super::jitter;

/// How far ahead of its time the loop decides a fire (on one host and a
/// healthy store: `scheduler/fire.rs`): `fire_due` may be called for an
/// instant up to this far ahead of the wall clock. Past the store's usual
/// stalls, short beside any schedule's second (a worker killed within it
/// leaves the fire recorded `lost`, as one killed between a commit and the
/// clone always did).
pub const LEAD: std::time::Duration = std::time::Duration::from_millis(5);

/// [`LEAD`] as a span of wall-clock time.
pub(crate) fn lead_span() -> SignedDuration {
    SignedDuration::try_from(LEAD).unwrap_or_default()
}

/// When a queued fire starts once the run before it ends at `now`: at
/// `now`, or at its time if that is still ahead within [`LEAD`] (it was
/// decided ahead, and a job never starts before its time). Further ahead
/// is no lead but a clock stepped back: it starts now.
pub(super) fn queued_start(spec: &JobSpec, covers: &[Timestamp], now: Timestamp) -> Timestamp {
    covers
        .iter()
        .map(|t| jitter::start_of(spec, *t))
        .max()
        .filter(|at| ahead_within_lead(now, *at))
        .unwrap_or(now)
}

/// Whether `at` is ahead of `now` by at most [`LEAD`]: an instant the
/// loop may have decided ahead (further ahead is a clock stepped back).
pub(crate) fn ahead_within_lead(now: Timestamp, at: Timestamp) -> bool {
    at > now && at.duration_since(now) <= lead_span()
}
