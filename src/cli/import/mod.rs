//! `cronwarden import` (placeholder).

pub(crate) mod crontab;
