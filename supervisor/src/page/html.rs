//! Drawing the status page: pure, from the snapshot's status and the
//! strips read by the caller. Every mark is an element whose `data-`
//! attributes say what it stands for (the test reads them back), and whose
//! `title` is what hovering shows.

use std::fmt::Write;

use cronwarden_shared::{
    status::{JobStatus, StatusReport},
    timefmt::human_duration,
    VERSION,
};
use jiff::Timestamp;

use super::{Bucket, PageData, Strip, BUCKET, BUCKETS, PAGE_JOBS};

/// Worst first: a bucket's mark takes the colour of its worst record.
const WORST_FIRST: [&str; 7] = [
    "lost", "failed", "timeout", "killed", "skipped", "running", "success",
];

/// Pixels per bucket.
const PX: usize = 5;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse} td,th{padding:3px 8px;text-align:left;vertical-align:middle;white-space:nowrap}
td.summary{white-space:normal}
tr:nth-child(even){background:#f6f6f6} .muted{color:#777}
.state{padding:1px 8px;border-radius:4px;color:#fff}
.s-ok{background:#2e9d4f}.s-degraded{background:#e0a800}.s-stalled,.s-down{background:#d0312d}
.strip{position:relative;height:16px;background:#eee;border:1px solid #ddd}
.mark{position:absolute;top:2px;height:12px;width:4px}
.mark:hover{outline:2px solid #000}
.late{position:absolute;top:-5px;height:5px;width:4px;background:#ff7f0e}
.o-success{background:#2e9d4f}.o-failed{background:#d0312d}.o-timeout{background:#8e44ad}
.o-killed{background:#555}.o-lost{background:#000}.o-skipped{background:#e8c24a}.o-running{background:#1f77b4}
.legend span.mark,.legend span.late{position:static;display:inline-block;margin:0 4px 0 12px}
";

/// Text for HTML content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn hm(t: Timestamp) -> String {
    t.strftime("%H:%M").to_string()
}

/// The whole page.
pub(crate) fn render(report: &StatusReport, data: &PageData) -> String {
    let mut o = String::with_capacity(16 * 1024 + data.strips.len() * 4096);
    let state = report.state.as_str();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>cronwarden: {state}</title><style>{STYLE}</style></head><body>\
         <h1>cronwarden <span id=\"state\" class=\"state s-{state}\" data-state=\"{state}\">{state}</span></h1>"
    );
    if !report.reasons.is_empty() {
        o.push_str("<ul id=\"reasons\">");
        for r in &report.reasons {
            let _ = write!(o, "<li>{}</li>", esc(r));
        }
        o.push_str("</ul>");
    }
    let w = &report.worker;
    let _ = write!(
        o,
        "<p class=\"muted\">as of {} · supervisor pid {} (cronwarden {}) since {} · worker {} · {} restarts</p>",
        when(data.now),
        report.supervisor.pid,
        esc(VERSION),
        when(report.supervisor.started_at),
        w.pid.map_or("down".to_string(), |p| format!("pid {p}")),
        w.restarts,
    );
    alerts(&mut o, report);
    jobs(&mut o, report, data);
    o.push_str("</body></html>\n");
    o
}

fn alerts(o: &mut String, report: &StatusReport) {
    let _ = write!(o, "<h2>Open alerts ({})</h2>", report.alerts.len());
    if report.alerts.is_empty() {
        o.push_str("<p id=\"alerts\" class=\"muted\">none</p>");
        return;
    }
    o.push_str("<table id=\"alerts\"><tr><th>severity</th><th>kind</th><th>job</th><th>opened</th><th>summary</th></tr>");
    for a in &report.alerts {
        let _ = write!(
            o,
            "<tr class=\"alert\" data-kind=\"{k}\"><td>{}</td><td>{k}</td><td>{}</td><td>{}</td><td class=\"summary\">{}</td></tr>",
            a.severity.as_str(),
            esc(a.job.as_deref().unwrap_or("")),
            when(a.opened_at),
            esc(&a.summary),
            k = a.kind.as_str(),
        );
    }
    o.push_str("</table>");
}

fn jobs(o: &mut String, report: &StatusReport, data: &PageData) {
    let total = report.jobs.len();
    let first = data.page * PAGE_JOBS;
    let shown = data.strips.len();
    let _ = write!(o, "<h2>Jobs ({total})</h2>");
    if total > PAGE_JOBS {
        let _ = write!(
            o,
            "<p>jobs {}–{} of {total}",
            (first + 1).min(total),
            first + shown
        );
        if data.page > 0 {
            let _ = write!(o, " · <a href=\"?page={}\">previous</a>", data.page - 1);
        }
        if first + shown < total {
            let _ = write!(o, " · <a href=\"?page={}\">next</a>", data.page + 1);
        }
        o.push_str("</p>");
    }
    legend(o);
    let from = data.now.checked_sub(super::WINDOW).unwrap_or(data.now);
    let _ = write!(
        o,
        "<table id=\"jobs\"><tr><th>job</th><th>state</th><th>schedule</th><th>next fire</th><th>last run</th>\
         <th><span style=\"display:inline-block;width:{w}px\">24 h ago ({}) <span style=\"float:right\">now ({})</span></span></th></tr>",
        hm(from),
        hm(data.now),
        w = BUCKETS * PX,
    );
    for strip in &data.strips {
        let Some(job) = report.jobs.iter().find(|j| j.name == strip.job) else {
            continue;
        };
        job_row(o, job, strip, data.now);
    }
    o.push_str("</table>");
}

fn legend(o: &mut String) {
    o.push_str("<p class=\"legend muted\">");
    for k in WORST_FIRST.iter().rev() {
        let _ = write!(o, "<span class=\"mark o-{k}\"></span>{k}");
    }
    o.push_str("<span class=\"late\"></span>late (job_late opened)</p>");
}

fn job_row(o: &mut String, job: &JobStatus, strip: &Strip, now: Timestamp) {
    let next = match (job.paused, job.next_fire_at) {
        (true, _) => "paused".to_string(),
        (false, Some(t)) => when(t),
        (false, None) => "–".to_string(),
    };
    let last = job.last_run.as_ref().map_or("–".to_string(), |r| {
        format!(
            "{} {}",
            r.outcome.as_str(),
            r.started_at
                .or(r.scheduled_at)
                .map(when)
                .unwrap_or_default()
        )
    });
    let _ = write!(
        o,
        "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>",
        esc(&job.name),
        job.state.as_str(),
        esc(&job.schedule),
        next,
        esc(&last),
    );
    let _ = write!(
        o,
        "<div class=\"strip\" style=\"width:{}px\" data-job=\"{}\" data-upto=\"{}\"{}>",
        BUCKETS * PX,
        esc(&strip.job),
        strip.upto,
        strip
            .cut_at
            .map(|t| format!(
                " data-cut-at=\"{t}\" title=\"{}\"",
                esc(&format!(
                    "more than {} records in 24 h: the strip starts at {}",
                    super::MARKS_PER_JOB,
                    when(t)
                ))
            ))
            .unwrap_or_default(),
    );
    let from = now.checked_sub(super::WINDOW).unwrap_or(now);
    for (i, b) in strip.buckets.iter().enumerate() {
        let start = from
            .checked_add(BUCKET.checked_mul(i as i32).unwrap_or_default())
            .unwrap_or(from);
        mark(o, i, b, start);
    }
    o.push_str("</div></td></tr>");
}

fn mark(o: &mut String, i: usize, b: &Bucket, start: Timestamp) {
    let left = i * PX;
    for summary in &b.late {
        let _ = write!(
            o,
            "<span class=\"late\" data-late=\"1\" style=\"left:{left}px\" title=\"late: {}\"></span>",
            esc(summary)
        );
    }
    let Some(newest) = &b.newest else {
        return;
    };
    let worst = WORST_FIRST
        .iter()
        .find(|k| b.counts.contains_key(*k))
        .copied()
        .unwrap_or("success");
    let counts = b
        .counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let total: u32 = b.counts.values().sum();
    let run = describe(newest);
    let title = if total == 1 {
        run
    } else {
        let end = start.checked_add(BUCKET).unwrap_or(start);
        let list = b
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{}–{} UTC · {total} records: {list} · newest: {run}",
            hm(start),
            hm(end)
        )
    };
    let _ = write!(
        o,
        "<span class=\"mark o-{worst}\" style=\"left:{left}px\" data-outcome=\"{worst}\" data-counts=\"{counts}\" data-run=\"{}\" title=\"{}\"></span>",
        newest.id,
        esc(&title)
    );
}

/// One record as hovering shows it.
fn describe(m: &cronwarden_shared::store::RunMark) -> String {
    let mut s = format!("run {} · {}", m.id, m.outcome.as_str());
    if let Some(r) = m.skip_reason {
        let _ = write!(s, " ({})", crate::model::counters::reason_str(r));
    }
    let _ = write!(s, " · {} · {}", m.trigger.as_str(), when(m.at));
    if let Some(c) = m.exit_code {
        let _ = write!(s, " · exit {c}");
    }
    if let Some(d) = m.duration_ms {
        let _ = write!(
            s,
            " · {}",
            human_duration(std::time::Duration::from_millis(d))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{bucket_of, Bucket, BUCKETS};
    use cronwarden_shared::{
        status::{Outcome, SkipReason, Trigger},
        store::RunMark,
    };

    fn mk(id: u64, at: Timestamp, outcome: Outcome) -> RunMark {
        RunMark {
            id,
            at,
            scheduled_at: Some(at),
            trigger: Trigger::Schedule,
            outcome,
            skip_reason: (outcome == Outcome::Skipped).then_some(SkipReason::Overlap),
            exit_code: (outcome == Outcome::Failed).then_some(3),
            duration_ms: Some(1500),
        }
    }

    #[test]
    fn buckets_cover_the_window_and_nothing_else() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let h = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(bucket_of(h("2026-12-02T12:00:00Z"), now), Some(0));
        assert_eq!(bucket_of(h("2026-12-02T12:09:59Z"), now), Some(0));
        assert_eq!(bucket_of(h("2026-12-02T12:10:00Z"), now), Some(1));
        assert_eq!(bucket_of(h("2026-12-03T11:59:59Z"), now), Some(BUCKETS - 1));
        assert_eq!(bucket_of(now, now), Some(BUCKETS - 1));
        assert_eq!(bucket_of(h("2026-12-02T11:59:59Z"), now), None);
        assert_eq!(bucket_of(h("2026-12-03T12:00:01Z"), now), None);
    }

    #[test]
    fn a_bucket_shows_its_worst_record_and_every_count() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let t: Timestamp = "2026-12-03T11:55:00Z".parse().unwrap();
        let mut strip = Strip {
            job: "a<b\"".into(),
            buckets: vec![Bucket::default(); BUCKETS],
            upto: 0,
            cut_at: None,
        };
        strip.add(mk(7, t, Outcome::Success), now);
        strip.add(mk(8, t, Outcome::Failed), now);
        strip.add(mk(9, t, Outcome::Skipped), now);
        let mut o = String::new();
        let start = now.checked_sub(BUCKET).unwrap();
        mark(&mut o, BUCKETS - 1, &strip.buckets[BUCKETS - 1], start);
        assert!(o.contains("data-outcome=\"failed\""), "{o}");
        assert!(
            o.contains("data-counts=\"failed=1 skipped=1 success=1\""),
            "{o}"
        );
        assert!(o.contains("data-run=\"9\""), "{o}");
        assert!(
            o.contains("3 records: 1 failed, 1 skipped, 1 success"),
            "{o}"
        );
        assert!(o.contains("run 9 · skipped (overlap)"), "{o}");
        assert_eq!(strip.upto, 9);
    }

    #[test]
    fn a_single_run_is_described_in_full_and_late_is_its_own_mark() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let t: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let b = Bucket {
            counts: [("timeout", 1)].into_iter().collect(),
            newest: Some(mk(3, t, Outcome::Timeout)),
            late: vec!["job \"x\" is late".into()],
        };
        let mut o = String::new();
        mark(&mut o, 132, &b, t);
        assert!(o.contains("class=\"late\""), "{o}");
        assert!(o.contains("late: job &quot;x&quot; is late"), "{o}");
        assert!(o.contains("data-outcome=\"timeout\""), "{o}");
        assert!(
            o.contains("title=\"run 3 · timeout · schedule · 2026-12-03 10:00:00 UTC · 1s\""),
            "{o}"
        );
        let _ = now;
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
