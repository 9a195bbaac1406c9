//! Where the config and the status socket are, for `run` and every client.
//!
//! The config is, in this order: `--config FILE`, then the environment
//! variable `CRONWARDEN_CONFIG`, then [`SYSTEM_CONFIG`] (where packages and
//! the systemd unit put it). The same order holds for `run`, `check` and
//! every client command, so an operator who exported `CRONWARDEN_CONFIG`
//! once talks to the scheduler they started.
//!
//! A client needs only the socket. When neither the flag nor the variable
//! is given and the system config cannot be read (absent, or readable by
//! root only because it holds webhook secrets), the client falls back to
//! the standard runtime path [`RUNTIME_SOCKET`] (systemd's
//! `RuntimeDirectory=cronwarden`), then to the socket of the default
//! `state_dir`. A config named explicitly (flag or variable) never falls
//! back: a typo there must be an error, not a quiet talk with another
//! scheduler.
//!
//! A readable config gives the socket through [`Config::locate`], by the
//! supervisor's own rule: the config's `socket`, else [`RUNTIME_SOCKET`]
//! for the default `state_dir` when `/run/cronwarden` exists, else
//! `<state_dir>/cronwarden.sock` (`config::default_socket`).
//!
//! Every error says where it looked, in order, and how to point elsewhere.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use cronwarden_shared::config::{Config, DEFAULT_STATE_DIR, RUNTIME_SOCKET};

/// The config's environment variable.
pub(crate) const ENV: &str = "CRONWARDEN_CONFIG";
/// The config used when neither `--config` nor [`ENV`] names one.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/cronwarden.toml";

/// What told us the config's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Flag,
    Env,
    System,
}

/// A config path and what chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) path: PathBuf,
    pub(crate) source: Source,
}

impl Located {
    /// The config for `--config` as given (`None`: not given), reading the
    /// environment. An empty variable counts as unset (as `NO_COLOR` does).
    pub(crate) fn config(flag: Option<&Path>) -> Located {
        Located::from_parts(flag, std::env::var_os(ENV).filter(|v| !v.is_empty()))
    }

    fn from_parts(flag: Option<&Path>, env: Option<std::ffi::OsString>) -> Located {
        match (flag, env) {
            (Some(p), _) => Located {
                path: p.into(),
                source: Source::Flag,
            },
            (None, Some(v)) => Located {
                path: v.into(),
                source: Source::Env,
            },
            (None, None) => Located {
                path: SYSTEM_CONFIG.into(),
                source: Source::System,
            },
        }
    }

    /// Where it looked, for an error: one line per place, in order.
    pub(crate) fn looked(&self) -> Vec<String> {
        let path = self.path.display();
        match self.source {
            Source::Flag => vec![format!("--config {path}")],
            Source::Env => vec!["--config: not given".into(), format!("${ENV}={path}")],
            Source::System => vec![
                "--config: not given".into(),
                format!("${ENV}: not set"),
                format!("{path} (the default)"),
            ],
        }
    }
}

/// How to point a command elsewhere, as the last lines of an error.
const HINT_CONFIG: &str =
    "point elsewhere with --config FILE or the environment variable CRONWARDEN_CONFIG=FILE";
const HINT_SOCKET: &str =
    "point elsewhere with --config FILE, CRONWARDEN_CONFIG=FILE or --socket PATH";

/// No config (or socket) found; says where it looked.
#[derive(Debug)]
pub(crate) struct NotFound {
    /// One line per place, with what was found there.
    pub(crate) looked: Vec<String>,
    pub(crate) hint: &'static str,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "looked in this order:")?;
        for l in &self.looked {
            writeln!(f, "  {l}")?;
        }
        f.write_str(self.hint)
    }
}

/// The config for `run` and `check`: it must be readable. The error says
/// where it looked and why the last place failed.
pub(crate) fn config_for_run(flag: Option<&Path>) -> Result<PathBuf, NotFound> {
    let located = Located::config(flag);
    match std::fs::metadata(&located.path) {
        Ok(m) if m.is_file() => Ok(located.path),
        other => {
            let why = match other {
                Ok(_) => "not a regular file".to_string(),
                Err(e) => e.to_string(),
            };
            let mut looked = located.looked();
            if let Some(last) = looked.last_mut() {
                *last = format!("{last}: {why}");
            }
            Err(NotFound {
                looked,
                hint: HINT_CONFIG,
            })
        }
    }
}

/// The socket (and the lock, when a config named it) a client talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) socket: PathBuf,
    pub(crate) lock: Option<PathBuf>,
}

/// The socket for a client: `--socket`, else the config's (see the module
/// documentation for the fallback).
pub(crate) fn socket(
    socket_flag: Option<&Path>,
    config_flag: Option<&Path>,
) -> Result<Target, String> {
    if let Some(s) = socket_flag {
        return Ok(Target {
            socket: s.into(),
            lock: None,
        });
    }
    let located = Located::config(config_flag);
    socket_from(&located, &fallback_sockets(), |p| {
        std::fs::symlink_metadata(p).is_ok()
    })
}

/// The sockets tried, in order, when no config can be read.
fn fallback_sockets() -> Vec<PathBuf> {
    vec![
        RUNTIME_SOCKET.into(),
        Path::new(DEFAULT_STATE_DIR).join("cronwarden.sock"),
    ]
}

fn socket_from(
    located: &Located,
    fallbacks: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> Result<Target, String> {
    let read_err = match Config::locate(&located.path) {
        Ok((socket, lock)) => {
            return Ok(Target {
                socket,
                lock: Some(lock),
            })
        }
        Err(e) => e,
    };
    let mut looked = located.looked();
    let why = match std::fs::File::open(&located.path) {
        Err(why) if located.source == Source::System => why,
        _ => {
            // Named explicitly, or readable but broken: say what is wrong
            // with it rather than look further.
            return Err(format!(
                "{read_err}\n{}",
                NotFound {
                    looked,
                    hint: HINT_SOCKET,
                }
            ));
        }
    };
    if let Some(last) = looked.last_mut() {
        *last = format!("{last}: {why}");
    }
    for s in fallbacks {
        if exists(s) {
            return Ok(Target {
                socket: s.clone(),
                lock: None,
            });
        }
        looked.push(format!("{}: no such socket", s.display()));
    }
    Err(format!(
        "cannot find cronwarden's config or socket\n{}",
        NotFound {
            looked,
            hint: HINT_SOCKET,
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_beats_the_variable_beats_the_system_file() {
        let env = Some(std::ffi::OsString::from("/from/env.toml"));
        let flag = Path::new("/from/flag.toml");
        assert_eq!(
            Located::from_parts(Some(flag), env.clone()),
            Located {
                path: flag.into(),
                source: Source::Flag
            }
        );
        assert_eq!(
            Located::from_parts(None, env).path,
            Path::new("/from/env.toml")
        );
        let system = Located::from_parts(None, None);
        assert_eq!(system.path, Path::new(SYSTEM_CONFIG));
        assert_eq!(
            system.looked(),
            [
                "--config: not given",
                "$CRONWARDEN_CONFIG: not set",
                "/etc/cronwarden.toml (the default)"
            ]
        );
    }

    #[test]
    fn an_unreadable_default_falls_back_to_the_runtime_socket() {
        let dir = tempfile::tempdir().unwrap();
        let located = Located {
            path: dir.path().join("absent.toml"),
            source: Source::System,
        };
        let fallbacks = [dir.path().join("a.sock"), dir.path().join("b.sock")];
        let second = fallbacks[1].clone();
        let t = socket_from(&located, &fallbacks, |p| p == second).unwrap();
        assert_eq!(t.socket, fallbacks[1]);
        let e = socket_from(&located, &fallbacks, |_| false).unwrap_err();
        assert!(
            e.starts_with("cannot find cronwarden's config or socket"),
            "{e}"
        );
        assert!(e.contains("a.sock: no such socket"), "{e}");
        assert!(e.contains("b.sock: no such socket"), "{e}");
        assert!(e.ends_with("--socket PATH"), "{e}");
        // Named explicitly: no fallback, whatever exists.
        let named = Located {
            source: Source::Env,
            ..located
        };
        let e = socket_from(&named, &fallbacks, |_| true).unwrap_err();
        assert!(e.contains("cannot read config file"), "{e}");
        assert!(e.contains("$CRONWARDEN_CONFIG="), "{e}");
    }
}
