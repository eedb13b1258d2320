//! The dashboard end to end: a real session of three `bazel test //...` jobs (real Bazel, the
//! nginx cache, the real coordinator) on the demo workspace, its dashboard read by a real
//! headless Chromium (Debian's `chromium`), its `/metrics` parsed as Prometheus text, each job's
//! output and JUnit file checked; and the dashboard off loopback, which requires the token.
//!
//! The screenshot Chromium takes is written to `target/dashboard.png` (the README's picture).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::bazel::{
    begin, summary_targets, BazelEnv, Checkout, Finished, Running, BUILT_TARGETS, FAILING_TEST,
    TEST_TARGETS,
};

/// Every target of the session: the tests and the library they use (a build task).
const TARGETS: usize = TEST_TARGETS.len() + BUILT_TARGETS.len();
use e2e::{binary, Coordinator};
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

/// Longest a job may take before it counts as hung (not a performance bound).
const LIMIT: Duration = Duration::from_secs(240);

/// What the failing test prints (`e2e/workspace/strings/broken_test.sh`), in its test.log.
const FAILING_LINE: &str = "FAIL: intentionally failing test: expected 'expected', got 'actual'";

/// The Cargo (or Bazel) target directory.
fn target_dir() -> PathBuf {
    binary("task-sharding")
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .to_path_buf()
}

/// Runs Chromium headless with `args` then `url`, and returns its stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("Debian's chromium is installed (scripts/setup.sh installs it)");
    assert!(
        output.status.success(),
        "chromium {args:?} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `curl -s` with `args`: (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A metric's value from a scrape, by name and one label.
fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {label:?} in {:#?}", scrape.samples));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

fn assert_junit(job: &Finished, path: &Path) {
    let xml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", job.name));
    let report = Report::deserialize_from_str(&xml).expect("JUnit XML");
    let mut cases: Vec<(&str, &TestCaseStatus)> = report
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .map(|c| (c.name.as_str(), &c.status))
        .collect();
    cases.sort_by_key(|c| c.0);
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let mut want = summary_targets();
    want.sort();
    assert_eq!(names, want, "{}: every target once", job.name);
    for suite in &report.test_suites {
        let host = suite.extra.get("hostname").map(|h| h.as_str());
        assert!(
            host.is_some_and(|h| h.starts_with("job-")),
            "{}: {host:?}",
            job.name
        );
    }
    for (name, status) in cases {
        match status {
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                description,
                ..
            } if name == FAILING_TEST => {
                let text = description.as_ref().map_or("", |d| d.as_str());
                assert!(text.contains(FAILING_LINE), "{}: {text}", job.name);
            }
            // A build task that was built succeeded, as a test that passed.
            TestCaseStatus::Success { .. }
                if TEST_TARGETS.contains(&name) || BUILT_TARGETS.contains(&name) => {}
            other => panic!("{}: {name} is {other:?}", job.name),
        }
    }
    assert_eq!((report.tests, report.failures), (TARGETS, 1));
}

#[test]
fn a_real_session_shows_on_the_dashboard_in_chromium() {
    let _serial = begin("a_real_session_shows_on_the_dashboard_in_chromium");
    let env = BazelEnv::start("dashboard").unwrap();
    let dashboard = env
        .coordinator
        .as_ref()
        .and_then(|c| c.dashboard.clone())
        .expect("the harness's coordinator serves a dashboard");
    let checkouts: Vec<Checkout> = (1..=3)
        .map(|i| Checkout::new(&format!("job-{i}")).unwrap())
        .collect();
    let args = env.test_args(&[]);
    let mut running = Running::default();
    let junit = |name: &str| env.scratch_dir().join(format!("{name}.xml"));
    for (i, checkout) in checkouts.iter().enumerate() {
        let name = format!("job-{}", i + 1);
        let mut command = env.bazel_job(checkout, &name, &args);
        command.env("TASK_SHARDING_JUNIT", junit(&name));
        running.spawn(&name, command).unwrap();
    }
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", env.report(&jobs));

    // Every job's output ends with the failing target's log tail, and writes the whole run's
    // JUnit.
    for job in &jobs {
        assert_eq!(job.code(), Some(3), "{}{why}", job.name);
        let stdout = job.stdout();
        let heading = format!("task-sharding: {FAILING_TEST} FAILED [");
        let (_, log) = stdout
            .split_once(&heading)
            .unwrap_or_else(|| panic!("{} shows the failing log{why}", job.name));
        // After the heading, only the log's lines, to the end of the output.
        let mut lines = log.lines().skip(1);
        assert!(
            lines.all(|l| l.starts_with("    ")),
            "{}'s output ends with the log{why}",
            job.name
        );
        assert!(
            log.contains(&format!("\n    {FAILING_LINE}\n")),
            "{}{why}",
            job.name
        );
        assert_junit(job, &junit(&job.name));
    }

    // The session, from the JSON API.
    let (status, sessions) = curl(&[&format!("{dashboard}api/sessions")]);
    assert_eq!(status, 200, "{sessions}");
    let sessions: serde_json::Value = serde_json::from_str(&sessions).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    assert_eq!(sessions[0]["finished"], TARGETS);
    assert_eq!(sessions[0]["passed"], false);

    // The pages, as Chromium renders them.
    let profile = tempfile::tempdir().unwrap();
    let overview = chromium(profile.path(), &["--dump-dom"], &dashboard);
    assert!(
        overview.contains(&format!("href=\"/sessions/{id}\"")),
        "{overview}"
    );
    assert!(overview.contains("bazel test"), "{overview}");
    assert!(
        overview.contains(&format!("{TARGETS}/{TARGETS}")),
        "{overview}"
    );
    let page = format!("{dashboard}sessions/{id}");
    let session = chromium(profile.path(), &["--dump-dom"], &page);
    for job in ["job-1", "job-2", "job-3"] {
        assert!(
            session.contains(&format!("class=\"lane\" data-job=\"{job}\"")),
            "a lane for {job}: {session}"
        );
    }
    assert_eq!(session.matches("class=\"lane\"").count(), 3, "{session}");
    assert_eq!(
        session.matches("<rect class=\"bar ").count(),
        TARGETS,
        "{session}"
    );
    for target in summary_targets() {
        assert!(
            session.contains(&format!("data-task=\"{target}\"")),
            "a bar for {target}"
        );
    }
    assert!(
        session.contains(&format!(
            "class=\"bar outcome-failed\" data-task=\"{FAILING_TEST}\""
        )),
        "{session}"
    );
    assert!(session.contains("class=\"ideal\""), "{session}");
    let log = session
        .split("<pre class=\"log\">")
        .nth(1)
        .expect("the failing target's log is shown");
    assert!(log.contains(FAILING_LINE), "{log}");
    let screenshot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,900",
        ],
        &page,
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "a real picture: {} bytes", png.len());

    // /metrics parses as Prometheus text and counts this run.
    let (status, text) = curl(&[&format!("{dashboard}metrics")]);
    assert_eq!(status, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let passed = value(
        &scrape,
        "task_sharding_results_total",
        Some(("outcome", "PASSED")),
    );
    let failed = value(
        &scrape,
        "task_sharding_results_total",
        Some(("outcome", "FAILED")),
    );
    assert_eq!((passed, failed), (25.0, 1.0), "{text}");
    assert_eq!(
        value(&scrape, "task_sharding_sessions_created_total", None),
        1.0
    );
    assert_eq!(value(&scrape, "task_sharding_sessions", None), 1.0);
    let handed = value(&scrape, "task_sharding_tasks_handed_total", None);
    let backups = value(&scrape, "task_sharding_backups_total", None);
    assert_eq!(
        handed,
        TARGETS as f64 + backups,
        "each task once, plus backup copies: {text}"
    );
    assert!(
        scrape.samples.iter().any(|s| s
            .metric
            .starts_with("task_sharding_http_request_duration_seconds")
            && s.labels.get("route") == Some("/sessions/:id")),
        "the latency of the session pages: {text}"
    );
}

/// The machine's own address on a network interface, if it has one that is not loopback.
fn interface_address() -> Option<String> {
    let output = Command::new("hostname").arg("-I").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
}

#[test]
fn off_loopback_the_dashboard_needs_the_token_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "dashboard-secret\n").unwrap();
    // 0.0.0.0 listens on every interface: reachable from the network, so not loopback. It is
    // reached here through 127.0.0.1 (and the interface's own address, when the machine has
    // one), so no packet leaves the machine.
    let coordinator = Coordinator::start(&[
        "--http",
        "0.0.0.0:0",
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .unwrap();
    let url = coordinator.dashboard.clone().unwrap();
    assert!(
        url.starts_with("https://0.0.0.0:"),
        "served over TLS: {url}"
    );
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    let cacert = coordinator.cert.to_str().unwrap().to_string();
    let mut hosts = vec!["127.0.0.1".to_string()];
    hosts.extend(interface_address());
    for host in hosts {
        // curl verifies the coordinator's certificate, which names localhost: `localhost` is
        // resolved to the address under test.
        let base = format!("https://localhost:{port}");
        let resolve = format!("localhost:{port}:{host}");
        let get = |path: &str, extra: &[&str]| {
            let mut args = vec!["--cacert", &cacert, "--resolve", &resolve];
            args.extend_from_slice(extra);
            let url = format!("{base}{path}");
            let mut owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            owned.push(url);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            curl(&refs)
        };
        let (status, body) = get("/", &[]);
        assert_eq!(status, 401, "{host}: no token, no page: {body}");
        assert!(body.contains("name=\"token\""), "the login form: {body}");
        assert_eq!(get("/metrics", &[]).0, 401, "{host}");
        assert_eq!(get("/api/sessions", &[]).0, 401, "{host}");
        assert_eq!(
            get("/", &["-H", "Authorization: Bearer wrong"]).0,
            401,
            "{host}: a wrong token"
        );
        let (status, body) = get("/", &["-H", "Authorization: Bearer dashboard-secret"]);
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("task-sharding sessions"), "{body}");
        assert_eq!(
            get(
                "/metrics",
                &["-H", "Authorization: Bearer dashboard-secret"]
            )
            .0,
            200
        );
        assert_eq!(get("/healthz", &[]).0, 200, "health checks need no token");
        // The login form sets a cookie that then serves the pages.
        let jar = dir.path().join(format!("cookies-{host}"));
        let jar = jar.to_str().unwrap();
        let (status, _) = get("/login", &["-d", "token=wrong", "-c", jar]);
        assert_eq!(status, 401, "{host}: a wrong token at the form");
        let (status, _) = get("/login", &["-d", "token=dashboard-secret", "-c", jar]);
        assert_eq!(status, 303, "{host}: logged in, sent on to /");
        let cookies = std::fs::read_to_string(jar).unwrap();
        assert!(
            !cookies.contains("dashboard-secret"),
            "the cookie is not the token: {cookies}"
        );
        assert_eq!(
            get("/", &["-b", jar]).0,
            200,
            "{host}: the cookie serves the page"
        );
    }
    // Plain HTTP is not served there.
    let (status, _) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_ne!(status, 200, "no plain HTTP off loopback");
}

#[test]
fn a_dashboard_off_loopback_without_a_token_is_refused_at_start() {
    let result = Coordinator::start(&["--http", "0.0.0.0:0"]);
    let error = format!("{:#}", result.expect_err("must not start"));
    assert!(error.contains("exited before it was ready"), "{error}");
}
