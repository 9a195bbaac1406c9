//! Drop-in files: `<name>.d/*.toml` beside the config file `<name>.toml`
//! (so `/etc/cronwarden.d/` for `/etc/cronwarden.toml`), where packages and
//! configuration management put jobs and alert sinks without editing the
//! main file.
//!
//! A drop-in holds only `[[job]]` and `[[alert]]` blocks. The files are read
//! in lexical (byte) order of their names, after the main file; names ending
//! in anything but `.toml` (editor backups, `.dpkg-old`) and hidden files
//! are ignored. A job or sink name defined twice is refused, naming both
//! files. Each drop-in is validated as if its blocks were in the main file
//! (the main file's `timezone` and `[watchdog]` defaults, relative paths
//! against the main file's directory), and every error names the drop-in.
//!
//! This module reads the directory ([`read`]) and merges the validated
//! blocks ([`merge`]); the texts travel to the worker with the main text
//! ([`Source`]), so both processes run the same bytes.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::Value;

use super::{job::JobDefaults, validate::Validator, ConfigError, JobSpec, SinkSpec};

/// The config's text and its drop-ins' texts, from one read: what the
/// supervisor validated and what every worker runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub text: String,
    pub dropins: Vec<DropIn>,
}

impl Source {
    pub fn of(text: String, dropins: Vec<DropIn>) -> Source {
        Source { text, dropins }
    }
}

/// One drop-in file, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropIn {
    pub path: PathBuf,
    pub text: String,
}

/// The keys a drop-in may hold.
const KEYS: &[&str] = &["job", "alert"];

/// The drop-in directory of the config file at `config`: its name with the
/// extension replaced by `.d`, beside it.
pub fn dir(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cronwarden".into());
    config.with_file_name(format!("{stem}.d"))
}

/// Reads every drop-in of the config at `config`, in lexical order. No
/// directory means no drop-ins; an unreadable directory or file is an
/// error naming it. `budget` is how many bytes the drop-ins may add up to
/// (the config and its drop-ins travel to the worker in one bounded line).
pub fn read(config: &Path, budget: usize) -> Result<Vec<DropIn>, Vec<ConfigError>> {
    let dir = dir(config);
    let error = |file: &Path, message: String| ConfigError {
        file: file.to_path_buf(),
        job: None,
        key: String::new(),
        message,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(vec![error(
                &dir,
                format!("cannot read the drop-in directory: {e}"),
            )])
        }
    };
    let mut paths = vec![];
    let mut errors = vec![];
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".toml") && !name.starts_with('.') {
                    paths.push(entry.path());
                }
            }
            Err(e) => errors.push(error(
                &dir,
                format!("cannot read the drop-in directory: {e}"),
            )),
        }
    }
    // Byte order of the names, whatever the locale: `10-b` before `20-a`.
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut dropins = vec![];
    let mut total = 0usize;
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // The path travels too, JSON-escaped (at most doubled).
                let path_len = 2 * path.as_os_str().len() + 32;
                total = total.saturating_add(text.len()).saturating_add(path_len);
                if total > budget {
                    errors.push(error(
                        &path,
                        format!(
                            "the config and its drop-ins exceed {} bytes together",
                            super::MAX_CONFIG_BYTES
                        ),
                    ));
                    break;
                }
                dropins.push(DropIn { path, text });
            }
            Err(e) => errors.push(error(&path, format!("cannot read drop-in file: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(dropins)
    } else {
        Err(errors)
    }
}

/// Where each name was defined first: job and sink names are unique
/// across the config and all its drop-ins.
#[derive(Default)]
pub(super) struct Names {
    jobs: BTreeMap<String, PathBuf>,
    sinks: BTreeMap<String, PathBuf>,
}

impl Names {
    /// Records the names of the main file's jobs (as written, valid or not:
    /// a name is taken even by a job with an error) and sinks.
    pub(super) fn main(&mut self, file: &Path, jobs: Option<&Value>, sinks: &[SinkSpec]) {
        for name in raw_job_names(jobs) {
            self.jobs.entry(name).or_insert_with(|| file.to_path_buf());
        }
        for s in sinks {
            self.sinks
                .entry(s.name.clone())
                .or_insert_with(|| file.to_path_buf());
        }
    }
}

/// The `name` of every `[[job]]` table in `jobs`.
fn raw_job_names(jobs: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = jobs else {
        return vec![];
    };
    items
        .iter()
        .filter_map(|t| t.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// What the drop-ins add to a config.
#[derive(Default)]
pub(super) struct Merged {
    pub jobs: Vec<JobSpec>,
    pub sinks: Vec<SinkSpec>,
    /// The drop-in each of `jobs` came from.
    pub job_files: BTreeMap<String, PathBuf>,
    pub errors: Vec<ConfigError>,
}

/// Validates each drop-in and merges its blocks after the main file's
/// (whose names are in `names`), refusing a name defined twice.
pub(super) fn merge(dropins: &[DropIn], defaults: &JobDefaults, mut names: Names) -> Merged {
    let mut merged = Merged::default();
    for d in dropins {
        let mut v = Validator::new(d.path.clone());
        let Some(table) = v.document(&d.text) else {
            merged.errors.append(&mut v.errors);
            continue;
        };
        for k in table.keys() {
            if !KEYS.contains(&k.as_str()) {
                v.err(
                    None,
                    k,
                    "a drop-in holds only [[job]] and [[alert]] blocks; set this key in the main config file".into(),
                );
            }
        }
        for name in raw_job_names(table.get("job")) {
            if let Some(first) = names.jobs.get(&name) {
                v.err(
                    Some(name.clone()),
                    "name",
                    format!("duplicate job name: already defined in {}", first.display()),
                );
            }
        }
        let sinks = v.sinks(table.get("alert"));
        for s in &sinks {
            if let Some(first) = names.sinks.get(&s.name) {
                v.err(
                    None,
                    &format!("alert.{}.name", s.name),
                    format!(
                        "duplicate sink name: already defined in {} (an unnamed sink is named <kind>#<n>; give it a name)",
                        first.display()
                    ),
                );
            }
        }
        let jobs = v.jobs(table.get("job"), defaults);
        // Names of this file are taken from now on, whatever its errors.
        for name in raw_job_names(table.get("job")) {
            names.jobs.entry(name).or_insert_with(|| d.path.clone());
        }
        for s in &sinks {
            names
                .sinks
                .entry(s.name.clone())
                .or_insert_with(|| d.path.clone());
        }
        if !v.errors.is_empty() {
            merged.errors.append(&mut v.errors);
            continue;
        }
        for j in &jobs {
            merged.job_files.insert(j.name.clone(), d.path.clone());
        }
        merged.jobs.extend(jobs);
        merged.sinks.extend(sinks);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn job(name: &str) -> String {
        format!("[[job]]\nname = \"{name}\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n")
    }

    fn source(main: &str, dropins: &[(&str, &str)]) -> Source {
        Source {
            text: main.into(),
            dropins: dropins
                .iter()
                .map(|(p, t)| DropIn {
                    path: PathBuf::from(format!("/etc/cronwarden.d/{p}")),
                    text: t.to_string(),
                })
                .collect(),
        }
    }

    fn errors(s: &Source) -> Vec<String> {
        match Config::parse_source(Path::new("/etc/cronwarden.toml"), s) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_directory_is_the_config_name_with_d() {
        assert_eq!(
            dir(Path::new("/etc/cronwarden.toml")),
            Path::new("/etc/cronwarden.d")
        );
        assert_eq!(dir(Path::new("cw.toml")), Path::new("cw.d"));
    }

    #[test]
    fn drop_in_jobs_and_sinks_follow_the_main_ones_in_order() {
        let s = source(
            &format!("timezone = \"Europe/Berlin\"\n{}", job("main")),
            &[
                ("10-a.toml", &job("a")),
                (
                    "20-b.toml",
                    &format!(
                        "{}[[alert]]\nname = \"ops\"\nkind = \"exec\"\ncommand = [\"true\"]\n",
                        job("b")
                    ),
                ),
            ],
        );
        let c = Config::parse_source(Path::new("/etc/cronwarden.toml"), &s).unwrap();
        let names: Vec<_> = c.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["main", "a", "b"]);
        assert_eq!(c.sinks.len(), 1);
        // The main file's defaults apply to drop-in jobs.
        assert_eq!(c.jobs[1].timezone, "Europe/Berlin");
        assert_eq!(c.file_of("main"), Path::new("/etc/cronwarden.toml"));
        assert_eq!(c.file_of("b"), Path::new("/etc/cronwarden.d/20-b.toml"));
    }

    #[test]
    fn a_duplicate_name_is_refused_naming_both_files() {
        let errs = errors(&source(
            &job("backup"),
            &[("10-a.toml", &job("x")), ("20-b.toml", &job("x"))],
        ));
        assert_eq!(
            errs,
            ["/etc/cronwarden.d/20-b.toml: job \"x\": key \"name\": duplicate job name: already defined in /etc/cronwarden.d/10-a.toml"]
        );
        let errs = errors(&source(&job("backup"), &[("10-a.toml", &job("backup"))]));
        assert_eq!(
            errs,
            ["/etc/cronwarden.d/10-a.toml: job \"backup\": key \"name\": duplicate job name: already defined in /etc/cronwarden.toml"]
        );
        let sink = "[[alert]]\nname = \"ops\"\nkind = \"exec\"\ncommand = [\"true\"]\n";
        let errs = errors(&source(sink, &[("10-a.toml", sink)]));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("/etc/cronwarden.d/10-a.toml: key \"alert.ops.name\": duplicate sink name: already defined in /etc/cronwarden.toml"),
            "{errs:?}"
        );
    }

    #[test]
    fn errors_name_the_drop_in_job_and_key() {
        let errs = errors(&source(
            &job("main"),
            &[
                (
                    "10-a.toml",
                    "state_dir = \"/x\"\n[[job]]\nname = \"a\"\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\n",
                ),
                ("20-b.toml", "[[job]\n"),
            ],
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "/etc/cronwarden.d/10-a.toml: key \"state_dir\": a drop-in holds only"
            ),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("/etc/cronwarden.d/10-a.toml: job \"a\": key \"schedule\""),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("/etc/cronwarden.d/20-b.toml: line 1: invalid TOML"),
            "{errs:?}"
        );
    }

    #[test]
    fn read_takes_toml_files_in_byte_order_and_ignores_others() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("cronwarden.toml");
        assert_eq!(read(&config, 1 << 20).unwrap(), vec![]);
        let dd = d.path().join("cronwarden.d");
        std::fs::create_dir(&dd).unwrap();
        for (name, text) in [
            ("20-b.toml", "b"),
            ("10-a.toml", "a"),
            ("B.toml", "B"),
            ("30-c.toml~", "no"),
            (".hidden.toml", "no"),
            ("x.toml.dpkg-old", "no"),
        ] {
            std::fs::write(dd.join(name), text).unwrap();
        }
        let got: Vec<_> = read(&config, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|d| d.text)
            .collect();
        assert_eq!(got, ["a", "b", "B"]);
        let too_big = read(&config, 0).unwrap_err();
        assert_eq!(too_big.len(), 1);
        assert_eq!(too_big[0].file, dd.join("10-a.toml"));
    }
}
