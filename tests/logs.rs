//! `log_dir`: the supervisor's and the worker's lines both land in the
//! daily file, without terminal colours, and old files beyond
//! `log_retention` are removed.

use std::{fs, time::Duration};

use crate::util::{wait_until, Env};

const LONG: Duration = Duration::from_secs(40);

#[test]
fn both_processes_log_to_the_daily_file_and_old_files_are_pruned() {
    let env = Env::new("");
    let dir = env.path("logs");
    fs::create_dir_all(&dir).unwrap();
    for day in 1..=4 {
        fs::write(dir.join(format!("cronwarden.2020-01-0{day}.log")), "old\n").unwrap();
    }
    fs::write(dir.join("unrelated.txt"), "keep me\n").unwrap();
    env.write_config(
        "log_dir = \"logs\"\nlog_retention = 2\n\
         [[job]]\nname = \"hello\"\nschedule = \"@yearly\"\nshell = \"echo hi\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let out = env.cmd(&["trigger", "hello", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success());
    let today = dir.join(format!(
        "cronwarden.{}.log",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    ));
    let text = wait_until("supervisor and worker lines in the file", LONG, || {
        let t = fs::read_to_string(&today).ok()?;
        // "supervisor started" is the supervisor's; "worker started jobs="
        // and the run's "finished" line are the worker's own.
        (t.contains("supervisor started")
            && t.contains("worker started jobs=1")
            && t.contains("finished job=hello"))
        .then_some(t)
    });
    assert!(!text.contains('\x1b'), "no ANSI colours in the file");
    let mut logs: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cronwarden."))
        .collect();
    logs.sort();
    assert!(
        logs.len() <= 2,
        "retention 2 keeps at most 2 files: {logs:?}"
    );
    assert!(logs.contains(&today.file_name().unwrap().to_string_lossy().into_owned()));
    assert!(
        dir.join("unrelated.txt").exists(),
        "only its own files are pruned"
    );
    // Stderr still has the lines too, without colours when it is not a
    // terminal (a file here, the journal's socket under systemd).
    let stderr = _sup.log();
    assert!(stderr.contains("supervisor started"));
    assert!(
        !stderr.contains('\x1b'),
        "no ANSI colours on a non-terminal stderr"
    );
}

/// `keep_output = 2`: each run's whole stdout and stderr are in files
/// named by its run id, and only the newest two runs' files stay.
#[test]
fn keep_output_writes_each_runs_output_to_files_and_keeps_the_newest() {
    let env = Env::new(
        "[[job]]\nname = \"report\"\nschedule = \"@yearly\"\nkeep_output = 2\n\
         shell = \"seq 1 20000; echo oops >&2; echo run $CRONWARDEN_RUN_ID\"\n",
    );
    let _sup = env.start();
    env.wait_ok(LONG);
    let config = env.config.to_str().unwrap();
    let mut ids = vec![];
    for _ in 0..3 {
        let out = env.cmd(&["trigger", "report", "--config", config, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["run_id"].as_u64().unwrap();
        wait_until("the run finished", LONG, || {
            env.rows("report")
                .iter()
                .any(|r| r.id == id as i64 && r.finished_at.is_some())
                .then_some(())
        });
        ids.push(id);
    }
    let dir = env.state_dir().join("output").join("report");
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    for id in &ids[1..] {
        let out = fs::read_to_string(dir.join(format!("{id}.stdout"))).unwrap();
        assert_eq!(
            out,
            format!("{expected}run {id}\n"),
            "the whole stdout of run {id}"
        );
        let err = fs::read_to_string(dir.join(format!("{id}.stderr"))).unwrap();
        assert_eq!(err, "oops\n");
    }
    wait_until("the oldest run's files are pruned", LONG, || {
        (!dir.join(format!("{}.stdout", ids[0])).exists()
            && !dir.join(format!("{}.stderr", ids[0])).exists())
        .then_some(())
    });
}
