//! Dead-man pings against a real receiver on 127.0.0.1: per-job
//! `ping_url` (start, then success or fail with the exit code and output),
//! and the whole-host `heartbeat_url` (hits while ok, `/fail` when the
//! worker is wedged).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{kill, sample, wait_until, Env, Hit, Receiver};

const LONG: Duration = Duration::from_secs(40);

fn paths(hits: &[Hit], prefix: &str) -> Vec<String> {
    hits.iter()
        .filter(|h| h.path.starts_with(prefix))
        .map(|h| h.path.clone())
        .collect()
}

#[test]
fn job_pings_start_then_success_or_fail_with_exit_code_and_output() {
    let hc = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"good\"\nschedule = \"@yearly\"\nshell = \"echo all good\"\nping_url = \"{0}/good\"\n\
         [[job]]\nname = \"bad\"\nschedule = \"@yearly\"\nshell = \"echo oops >&2; exit 3\"\nping_url = \"{0}/bad/\"\n",
        hc.url
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    for job in ["good", "bad"] {
        let out = env.cmd(&["trigger", job, "-c", env.config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let hits = wait_until("both runs pinged twice", LONG, || {
        let h = hc.hits();
        (paths(&h, "/hook/good").len() >= 2 && paths(&h, "/hook/bad").len() >= 2).then_some(h)
    });
    assert_eq!(
        paths(&hits, "/hook/good"),
        ["/hook/good/start", "/hook/good"]
    );
    assert_eq!(
        paths(&hits, "/hook/bad"),
        ["/hook/bad/start", "/hook/bad/fail"]
    );
    let body = |p: &str| hits.iter().find(|h| h.path == p).unwrap().clone();
    assert_eq!(body("/hook/good/start").method, "GET");
    let ok = body("/hook/good");
    assert_eq!(ok.method, "POST");
    assert!(ok.body.contains("success, exit code 0"), "{}", ok.body);
    assert!(ok.body.contains("all good"), "{}", ok.body);
    let fail = body("/hook/bad/fail");
    assert!(fail.body.contains("failed, exit code 3"), "{}", fail.body);
    assert!(fail.body.contains("oops"), "the stderr tail: {}", fail.body);
    // Delivered pings are counted in the metrics.
    wait_until("four job pings counted ok", LONG, || {
        let (_, text) = env.socket_get("/metrics")?;
        (sample(
            &text,
            "cronwarden_pings_total{target=\"job\",result=\"ok\"}",
        ) == Some(4.0))
        .then_some(())
    });
}

#[test]
fn host_heartbeat_pings_while_ok_and_fails_when_the_worker_is_stopped() {
    let hc = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "heartbeat_url = \"{}/host\"\nheartbeat_url_interval = \"1s\"\n\
         [watchdog]\nheartbeat_interval = \"250ms\"\nstall_after = \"2s\"\n\
         [[job]]\nname = \"a\"\nschedule = \"@yearly\"\nshell = \"true\"\n",
        hc.url
    ));
    let _sup = env.start();
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    wait_until("two ok pings", LONG, || {
        (hc.hits()
            .iter()
            .filter(|h| h.path == "/hook/host" && h.method == "GET")
            .count()
            >= 2)
            .then_some(())
    });
    assert!(
        !hc.hits().iter().any(|h| h.path == "/hook/host/fail"),
        "no /fail while ok: {:?}",
        hc.hits()
    );
    kill(pid, Signal::SIGSTOP);
    // Missing heartbeats make the state degraded within a second, then
    // the worker is replaced as stalled: /fail says which worker and why.
    let fail = wait_until("a /fail naming the stopped worker", LONG, || {
        hc.hits()
            .into_iter()
            .find(|h| h.path == "/hook/host/fail" && h.body.contains(&format!("worker {pid}")))
    });
    assert_eq!(fail.method, "POST");
    assert!(fail.body.contains("heartbeat"), "{}", fail.body);
    // The replacement worker brings the state, and the ok pings, back.
    env.wait_ok(LONG);
    wait_until("ok pings resume", LONG, || {
        let h = hc.hits();
        let last_fail = h.iter().rposition(|h| h.path == "/hook/host/fail")?;
        h[last_fail..]
            .iter()
            .any(|h| h.path == "/hook/host")
            .then_some(())
    });
}

#[test]
fn a_run_lost_with_its_worker_pings_fail() {
    let hc = Receiver::start(vec![]);
    let env = Env::new(&format!(
        "[[job]]\nname = \"long\"\nschedule = \"@yearly\"\nshell = \"sleep 60\"\nping_url = \"{}/long\"\n",
        hc.url
    ));
    let _sup = env.start();
    let pid = env.wait_ok(LONG)["worker"]["pid"].as_u64().unwrap() as u32;
    let out = env.cmd(&["trigger", "long", "-c", env.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the start ping", LONG, || {
        hc.hits()
            .iter()
            .any(|h| h.path == "/hook/long/start")
            .then_some(())
    });
    // The worker dies with the run in flight: the supervisor records the
    // run lost, and pings its failure itself.
    kill(pid, Signal::SIGKILL);
    let fail = wait_until("a /fail for the lost run", LONG, || {
        hc.hits().into_iter().find(|h| h.path == "/hook/long/fail")
    });
    assert!(fail.body.contains(": lost"), "{}", fail.body);
    assert!(fail.body.contains("the worker died"), "{}", fail.body);
    // The replacement reports the same lost run again on recovery; it is
    // not pinged twice.
    wait_until("a replacement worker beating", LONG, || {
        let s = env.status().1?;
        let w = &s["worker"];
        (w["pid"].as_u64().is_some_and(|p| p != pid as u64) && w["heartbeat_seq"].is_u64())
            .then_some(())
    });
    let fails = hc
        .hits()
        .iter()
        .filter(|h| h.path == "/hook/long/fail")
        .count();
    assert_eq!(fails, 1, "{:?}", hc.hits());
}

/// The query parameter `name` of a hit's path.
fn query<'a>(hit: &'a Hit, name: &str) -> Option<&'a str> {
    let (_, q) = hit.path.split_once('?')?;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn ping_templates_speak_healthchecks_cronitor_and_snitch_schemes() {
    let rx = Receiver::start(vec![]);
    let u = &rx.url;
    let env = Env::new(&format!(
        // healthchecks.io: /start and /{{exit_code}}, paired by ?rid=.
        "[[job]]\nname = \"hc\"\nschedule = \"@yearly\"\nshell = \"echo hc out; exit 4\"\n\
         ping_start_url = \"{u}/hc/start?rid={{run_uuid}}\"\n\
         ping_success_url = \"{u}/hc/{{exit_code}}?rid={{run_uuid}}\"\n\
         ping_failure_url = \"{u}/hc/{{exit_code}}?rid={{run_uuid}}\"\n\
         [[job]]\nname = \"cr\"\nschedule = \"@yearly\"\nshell = \"echo cronitor out\"\n\
         ping_start_url = \"{u}/cr/{{job}}?state=run&series={{run_id}}\"\n\
         ping_success_url = \"{u}/cr/{{job}}?state=complete&series={{run_id}}&status_code={{exit_code}}\"\n\
         ping_failure_url = \"{u}/cr/{{job}}?state=fail&series={{run_id}}&status_code={{exit_code}}\"\n\
         [[job]]\nname = \"dms\"\nschedule = \"@yearly\"\nshell = \"echo snitch out\"\n\
         ping_success_url = \"{u}/dms/token\"\n"
    ));
    let _sup = env.start();
    env.wait_ok(LONG);
    for job in ["hc", "cr", "dms"] {
        let out = env.cmd(&["trigger", job, "-c", env.config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let hits = wait_until("every run's pings", LONG, || {
        let h = rx.hits();
        let n = |p: &str| h.iter().filter(|x| x.path.starts_with(p)).count();
        (n("/hook/hc/") >= 2 && n("/hook/cr/") >= 2 && n("/hook/dms/") >= 1).then_some(h)
    });
    let of = |p: &str| -> Vec<Hit> {
        hits.iter()
            .filter(|h| h.path.starts_with(p))
            .cloned()
            .collect()
    };
    let run_id = |job: &str| env.rows(job)[0].id;

    // healthchecks.io: the exit status in the path, one rid for both.
    let hc = of("/hook/hc/");
    assert_eq!(hc.len(), 2, "{hc:?}");
    assert!(hc[0].path.starts_with("/hook/hc/start?rid="), "{hc:?}");
    assert!(hc[1].path.starts_with("/hook/hc/4?rid="), "{hc:?}");
    let rid = query(&hc[0], "rid").unwrap();
    assert_eq!(query(&hc[1], "rid"), Some(rid));
    assert_eq!(
        rid.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "a canonical UUID: {rid}"
    );
    assert!(
        rid.ends_with(&format!("{:012x}", run_id("hc"))),
        "{rid} names run {}",
        run_id("hc")
    );
    assert_eq!(
        (hc[0].method.as_str(), hc[1].method.as_str()),
        ("GET", "POST")
    );
    assert!(hc[1].body.contains("failed, exit code 4"), "{}", hc[1].body);
    assert!(
        hc[1].body.contains("hc out"),
        "the output tail: {}",
        hc[1].body
    );

    // Cronitor: state=run then state=complete, paired by series; nothing
    // appended to the path.
    let cr = of("/hook/cr/");
    assert_eq!(cr.len(), 2, "{cr:?}");
    let id = run_id("cr").to_string();
    assert_eq!(
        cr[0].path,
        format!("/hook/cr/cr?state=run&series={id}"),
        "{cr:?}"
    );
    assert_eq!(
        cr[1].path,
        format!("/hook/cr/cr?state=complete&series={id}&status_code=0"),
        "{cr:?}"
    );
    assert!(cr[1].body.contains("cronitor out"), "{}", cr[1].body);

    // Dead Man's Snitch: the bare URL on success only, no /start before it.
    let dms = of("/hook/dms/");
    assert_eq!(
        dms.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["/hook/dms/token"]
    );
    assert!(dms[0].body.contains("snitch out"), "{}", dms[0].body);
}
