//! Rate-limited log lines: the one budget type lives in the shared crate,
//! since the worker bounds the job output it logs with it too.

pub(crate) use cronwarden_shared::log_budget::LogBudget;
