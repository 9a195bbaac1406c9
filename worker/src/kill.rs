//! `cronwarden kill`: which runs an operator's kill ends, or why none.
//! Pure: the loop passes the runs in progress and signals what this
//! chooses (through each run's stop handle: SIGTERM to its group, SIGKILL
//! after the job's kill grace, recorded `killed` "by operator (uid N)").

/// The runs of `job` to end: `run_id` alone when given, else every run of
/// the job in progress (oldest first). An error says what is not running.
pub(crate) fn chosen<'a>(
    job: &str,
    run_id: Option<u64>,
    running: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<Vec<u64>, String> {
    let mut ids: Vec<u64> = running
        .into_iter()
        .filter(|(_, j)| *j == job)
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    match run_id {
        Some(id) if ids.contains(&id) => Ok(vec![id]),
        Some(id) => Err(format!(
            "run {id} of job {job:?} is not running{}",
            running_now(&ids)
        )),
        None if ids.is_empty() => Err(format!("job {job:?} has no run in progress")),
        None => Ok(ids),
    }
}

fn running_now(ids: &[u64]) -> String {
    match ids {
        [] => " (the job has no run in progress)".into(),
        ids => format!(
            " (running now: {})",
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_ends_the_named_run_or_every_run_of_the_job() {
        let running = [(7, "a"), (3, "a"), (5, "b")];
        assert_eq!(chosen("a", None, running), Ok(vec![3, 7]));
        assert_eq!(chosen("a", Some(7), running), Ok(vec![7]));
        assert_eq!(
            chosen("a", Some(5), running),
            Err("run 5 of job \"a\" is not running (running now: 3, 7)".into())
        );
        assert_eq!(
            chosen("c", None, running),
            Err("job \"c\" has no run in progress".into())
        );
        assert_eq!(
            chosen("c", Some(1), running),
            Err("run 1 of job \"c\" is not running (the job has no run in progress)".into())
        );
    }
}
