//! The status server against hostile clients: a real server on a temporary
//! Unix socket, raw bytes from real client sockets. Limits (431, 413, 503
//! over the cap, header timeout), hyper's answer to malformed HTTP, and a
//! property test over arbitrary requests: always a well-formed response, in
//! bounded time, 4xx for junk.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use cronwarden_shared::{config::Config, store::Store};
use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::{control::ControlReply, model::Model, snapshot::Snapshot};

/// A server on its own thread and runtime, for the life of the test process.
struct TestServer {
    socket: PathBuf,
    /// What the loop would publish; the server serves the latest.
    publisher: tokio::sync::watch::Sender<Arc<Snapshot>>,
    _dir: tempfile::TempDir,
}

fn start() -> TestServer {
    let dir = tempfile::Builder::new()
        .prefix("cw-srv-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("cronwarden.toml");
    let text = format!(
        "state_dir = {:?}\n[[job]]\nname = \"a\"\nschedule = \"@hourly\"\nshell = \"true\"\n",
        dir.path().display().to_string()
    );
    let config = Config::parse(&path, &text).unwrap();
    drop(Store::open(&config.state_dir.join(cronwarden_shared::store::FILE_NAME)).unwrap());
    let socket = config.socket.clone();
    let model = Model::for_test(config.clone());
    let snapshot = Snapshot::of(&model, tokio::time::Instant::now(), Timestamp::now());
    let (publisher, snapshots) = tokio::sync::watch::channel(Arc::new(snapshot));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let listener = bind(&config.socket, &config.state_dir, None).unwrap();
            // Control calls get a prompt answer, as from a main loop without
            // a worker.
            let (tx, mut rx) = mpsc::channel::<ControlRequest>(64);
            tokio::task::spawn_local(async move {
                while let Some(req) = rx.recv().await {
                    let _ = req.reply.send(ControlReply::error(503, "no worker here"));
                }
            });
            ready_tx.send(()).unwrap();
            serve(
                listener,
                Shared {
                    snapshots,
                    control: tx,
                },
            )
            .await;
        });
    });
    ready_rx.recv().unwrap();
    TestServer {
        socket,
        publisher,
        _dir: dir,
    }
}

/// A parsed response: status code, header names (lowercased), body.
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one response off `s`, checking that it is well-formed HTTP/1.1:
/// a status line, `name: value` headers, a content-length the body matches.
fn read_reply(s: &mut UnixStream, limit: Duration) -> Result<Reply, String> {
    read_reply_to(s, limit, false)
}

/// As [`read_reply`]; the reply to a HEAD request has no body whatever its
/// content-length says.
fn read_reply_to(s: &mut UnixStream, limit: Duration, is_head: bool) -> Result<Reply, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed without a response: {buf:?}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no response: {e}; got {buf:?}")),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut headers = vec![];
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .ok_or("no content-length")?
        .1
        .parse()
        .map_err(|e| format!("content-length: {e}"))?;
    let len = if is_head { 0 } else { len };
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("body: {e}")),
        }
    }
    if body.len() < len {
        return Err(format!(
            "body of {} bytes, content-length {len}",
            body.len()
        ));
    }
    // Whatever follows belongs to the next response (a pipelined request).
    body.truncate(len);
    Ok(Reply {
        code,
        headers,
        body,
    })
}

fn exchange(server: &TestServer, request: &[u8]) -> Result<Reply, String> {
    let mut s = UnixStream::connect(&server.socket).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer (and close) before all of a bad request is
    // written; what it answers is what matters.
    let _ = s.write_all(request);
    read_reply_to(
        &mut s,
        Duration::from_secs(5),
        request.starts_with(b"HEAD "),
    )
}

#[test]
fn reads_serve_the_latest_published_snapshot() {
    let server = start();
    let get = |path: &str| {
        let r = exchange(&server, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(r.code, 200, "{path}: {r:?}");
        String::from_utf8(r.body).unwrap()
    };
    assert!(!get("/v1/status").contains("sentinel"));
    // A reason no model computes: only the published snapshot has it.
    let mut next = Snapshot::from_parts(
        server.publisher.borrow().status.clone(),
        server.publisher.borrow().counters.clone(),
        server.publisher.borrow().config.clone(),
        server.publisher.borrow().store_path.clone(),
    );
    next.status.reasons = vec!["sentinel".into()];
    next.status.worker.restarts = 7;
    server.publisher.send_replace(Arc::new(next));
    assert!(get("/v1/status").contains("sentinel"));
    assert!(get("/metrics").contains("cronwarden_worker_restarts_total 7"));
    assert!(get("/v1/jobs/a").contains("\"name\": \"a\""));
}

#[test]
fn path_segments_are_percent_decoded_and_a_bad_escape_is_a_400() {
    let server = start();
    let get =
        |path: &str| exchange(&server, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    let r = get("/v1/jobs/%61");
    assert_eq!(r.code, 200, "%61 is job \"a\": {r:?}");
    assert_eq!(get("/v1/jobs/a%20b").code, 404, "\"a b\" is not \"a\"");
    for bad in ["/v1/jobs/a%2", "/v1/jobs/%zz", "/v1/jobs/%FF"] {
        let r = get(bad);
        assert_eq!(r.code, 400, "{bad}: {r:?}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("path segment"),
            "{bad}: {r:?}"
        );
    }
}

#[test]
fn replies_name_the_instance_and_another_instances_client_is_refused() {
    let server = start();
    let ours = cronwarden_shared::identity::of_dir(server._dir.path());
    let header = |r: &Reply, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let r = exchange(&server, b"GET /v1/status HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(header(&r, identity::STATE_DIR_HEADER), Some(ours.clone()));
    assert_eq!(
        header(&r, identity::PID_HEADER),
        Some(std::process::id().to_string())
    );
    let expecting = |dir: &str| {
        exchange(
            &server,
            format!(
                "POST /v1/jobs/a/pause HTTP/1.1\r\n{}: {dir}\r\n\r\n",
                identity::EXPECT_HEADER
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let r = expecting("/elsewhere");
    assert_eq!(r.code, 409, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("not of /elsewhere"),
        "{r:?}"
    );
    // Its own instance's client gets through (to the test's loop, which
    // answers 503 "no worker here").
    assert_eq!(expecting(&ours).code, 503);
}

#[test]
fn malformed_http_gets_400_not_a_silent_close() {
    let server = start();
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /v1/status HTTP/9.9\r\n\r\n",
        b"G\x00T /v1/status HTTP/1.1\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\ncontent-length: 12abc\r\n\r\n",
        b"GET /v1/st\x7fatus HTTP/1.1\r\n\r\n",
    ] {
        let r = exchange(&server, junk).unwrap_or_else(|e| panic!("{junk:?}: {e}"));
        assert_eq!(r.code, 400, "{junk:?}: {r:?}");
    }
    // Well-formed but unknown: the handler's own 404/405, with a reason.
    let r = exchange(&server, b"BREW /coffee HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.code, 404, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("no such endpoint"));
}

#[test]
fn an_oversized_head_gets_431() {
    let server = start();
    let mut req = b"GET /v1/status HTTP/1.1\r\nx-junk: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let r = exchange(&server, &req).unwrap();
    assert_eq!(r.code, 431, "{r:?}");
}

#[test]
fn an_oversized_body_gets_413_without_being_read() {
    let server = start();
    let mut s = UnixStream::connect(&server.socket).unwrap();
    // Declares 1 GiB and sends none of it: the answer must not wait for it.
    s.write_all(b"POST /v1/reload HTTP/1.1\r\ncontent-length: 1073741824\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let r = read_reply(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(r.code, 413, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.headers.contains(&("connection".into(), "close".into())));
    // A body within the cap is fine (and ignored).
    let r = exchange(
        &server,
        b"POST /v1/reload HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(r.code, 503, "the stub main loop's answer: {r:?}");
}

#[test]
fn a_slowloris_client_is_cut_off_after_the_header_timeout() {
    let server = start();
    let mut s = UnixStream::connect(&server.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /v1/status HTTP/1.1\r\nx-slow: ".iter().cycle() {
        if started.elapsed() > HEADER_TIMEOUT + Duration::from_secs(3) {
            break;
        }
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) | Err(_) if started.elapsed() < Duration::from_millis(300) => {}
            Ok(0) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "still connected after {took:?}");
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(500),
        "cut off too early: {took:?}"
    );
}

#[test]
fn beyond_the_connection_cap_a_client_gets_503_promptly_then_service_resumes() {
    let server = start();
    // This test's uid may make control calls, so it has the control
    // slots as well as the readers' ones.
    let mut idle: Vec<UnixStream> = (0..MAX_CONNECTIONS + MAX_CONTROL_CONNECTIONS)
        .map(|_| UnixStream::connect(&server.socket).unwrap())
        .collect();
    // Every slot is taken by a client that sends nothing.
    let started = Instant::now();
    let r = exchange(&server, b"GET /v1/status HTTP/1.1\r\n\r\n").unwrap();
    let took = started.elapsed();
    assert_eq!(r.code, 503, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("too many connections"),
        "{r:?}"
    );
    assert!(
        took >= OVERFLOW_WAIT - Duration::from_millis(100) && took < OVERFLOW_WAIT * 3,
        "answered after {took:?}"
    );
    // A slot that frees while a client waits goes to that client.
    let mut waiter = UnixStream::connect(&server.socket).unwrap();
    waiter
        .write_all(b"GET /v1/status HTTP/1.1\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(idle.pop());
    let r = read_reply(&mut waiter, Duration::from_secs(5)).unwrap();
    assert_eq!(r.code, 200, "{r:?}");
    drop(idle);
    let r = exchange(&server, b"GET /v1/status HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.code, 200, "{r:?}");
}

/// Bytes that look more or less like an HTTP request: each part is either
/// plausible, wild-but-printable, or arbitrary bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
    let method = prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"POST".to_vec()),
        Just(b"HEAD".to_vec()),
        Just(b"PUT".to_vec()),
        Just(b"DELETE".to_vec()),
        "[A-Z]{1,10}".prop_map(String::into_bytes),
        bytes(12),
    ];
    let path = prop_oneof![
        Just("/v1/status".to_string()),
        Just("/v1/jobs".to_string()),
        Just("/v1/jobs/a".to_string()),
        Just("/v1/jobs/a/runs".to_string()),
        Just("/v1/jobs/a/audit".to_string()),
        Just("/v1/alerts".to_string()),
        Just("/v1/jobs/a/trigger".to_string()),
        Just("/v1/reload".to_string()),
        Just("*".to_string()),
        Just("http://x/v1/status".to_string()),
        "(/[a-z0-9%.~-]{0,12}){0,6}",
        "/v1/jobs/[ -~]{0,30}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        "\\?(limit|from|to|all)=[ -~]{0,30}",
        "\\?[ -~]{0,60}",
        "\\?limit=[0-9]{1,25}",
        "\\?from=[0-9T:Z+%.-]{0,40}&to=[0-9T:Z+%.-]{0,40}",
    ];
    let target = prop_oneof![
        4 => (path, query).prop_map(|(p, q)| format!("{p}{q}").into_bytes()),
        1 => bytes(60),
    ];
    let version = prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        1 => Just(b"HTTP/1.0".to_vec()),
        1 => Just(b"HTTP/2.0".to_vec()),
        1 => "HTTP/[0-9]\\.[0-9]".prop_map(String::into_bytes),
        1 => bytes(10),
    ];
    let header = prop_oneof![
        ("[A-Za-z-]{1,20}", "[ -~]{0,40}").prop_map(|(k, v)| format!("{k}: {v}").into_bytes()),
        "(content-length|transfer-encoding|expect|connection|host): [ -~]{0,20}"
            .prop_map(String::into_bytes),
        bytes(40),
    ];
    let headers = proptest::collection::vec(header, 0..8);
    prop_oneof![
        8 => (method, target, version, headers).prop_map(|(m, t, v, hs)| {
            let mut r = [m, t, v].join(&b' ');
            r.extend_from_slice(b"\r\n");
            for h in hs {
                r.extend(h);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"\r\n");
            r
        }),
        // Wholly arbitrary bytes, ended as a head would be.
        1 => bytes(300).prop_map(|mut b| {
            b.extend_from_slice(b"\r\n\r\n");
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_well_formed_reply_in_bounded_time(req in request()) {
        // Blank lines before a request line are allowed (RFC 9112 2.2): the
        // server rightly waits for the request, until its header timeout.
        prop_assume!(req.iter().any(|b| *b != b'\r' && *b != b'\n'));
        thread_local!(static SERVER: TestServer = start());
        let reply = SERVER.with(|s| exchange(s, &req));
        // A request the server left hanging would meet the header timeout,
        // where hyper closes the connection without a reply: a well-formed
        // reply is the proof it was answered, with no clock to read (a
        // timing bound here failed on a loaded machine, not on the server).
        let reply = reply.map_err(|e| TestCaseError::fail(format!("{:?}: {e}", String::from_utf8_lossy(&req))))?;
        let line = req.split(|b| *b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line).to_string();
        // `GET /` is the status page (with or without a query).
        let known = ["GET /v1/", "HEAD /v1/", "POST /v1/", "GET http://x/v1/", "HEAD http://x/v1/", "POST http://x/v1/",
                     "GET / ", "GET /?", "HEAD / ", "HEAD /?"]
            .iter()
            .any(|p| line.starts_with(p));
        if !known {
            // Junk is the client's fault, and says so.
            prop_assert!((400..500).contains(&reply.code), "{line:?}: {reply:?}");
        } else {
            // The stub main loop answers control calls with 503.
            prop_assert!(reply.code < 500 || reply.code == 503, "{line:?}: {reply:?}");
        }
    }
}
