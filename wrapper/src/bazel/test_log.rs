//! The log of a failing target: the `test.log` Bazel names in the build events
//! (`testResult.testActionOutput`, a `file://` URI), of which the tail travels with the result
//! so that every job can show why the target failed.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use schemas::log_tail::{self, MAX_LOG_TAIL_BYTES};
use schemas::TaskReport;
use serde_json::Value;

/// Each target's `test.log`, from its last attempt that names one (a flaky target's failing
/// attempts come first; a failing target's last attempt is the one that failed).
pub fn test_logs(jsonl: &str) -> HashMap<String, PathBuf> {
    let mut logs = HashMap::new();
    for line in jsonl.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(label) = event["id"]["testResult"]["label"].as_str() else {
            continue;
        };
        let outputs = event["testResult"]["testActionOutput"].as_array();
        let log = outputs
            .into_iter()
            .flatten()
            .find(|file| file["name"].as_str() == Some("test.log"))
            .and_then(|file| file["uri"].as_str())
            .and_then(path_of_file_uri);
        if let Some(path) = log {
            logs.insert(label.to_string(), path);
        }
    }
    logs
}

/// Gives each failing report the tail of its target's `test.log`. `labels` names each report's
/// target, by task id.
pub fn attach_failing_logs(reports: &mut [TaskReport], labels: &HashMap<u32, &str>, jsonl: &str) {
    let failing = reports.iter().any(|r| !r.result.outcome.is_success());
    if !failing {
        return;
    }
    let logs = test_logs(jsonl);
    for report in reports {
        if report.result.outcome.is_success() {
            continue;
        }
        let path = labels.get(&report.task).and_then(|label| logs.get(*label));
        report.result.log_tail = path.and_then(|path| read_tail(path).ok());
    }
}

/// The tail of the file at `path`, reading only its last bytes: a test log may be huge. Bazel's
/// own sandbox chatter (`--sandbox_debug` writes the linux-sandbox's trace into `test.log`,
/// after the test's output) is left out: it would push out the lines that say why it failed.
pub fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    // More than is kept, so that what is left after the chatter still fills the tail (and a
    // line cut at the start is seen as cut).
    let from = len.saturating_sub(4 * MAX_LOG_TAIL_BYTES as u64 + 1);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(log_tail::tail(&without_sandbox_chatter(&bytes)))
}

/// `bytes` without the lines the linux-sandbox traces, `1796180939.836: src/main/tools/...`.
fn without_sandbox_chatter(bytes: &[u8]) -> Vec<u8> {
    let is_chatter = |line: &[u8]| {
        let Some(colon) = line.windows(2).position(|w| w == b": ") else {
            return false;
        };
        let (stamp, rest) = (&line[..colon], &line[colon + 2..]);
        !stamp.is_empty()
            && stamp.iter().all(|b| b.is_ascii_digit() || *b == b'.')
            && rest.starts_with(b"src/main/tools/")
    };
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| !is_chatter(line))
        .flatten()
        .copied()
        .collect()
}

/// The path of a `file://` URI, percent-decoded; `None` for any other URI (a remote `bytestream://`
/// output has no local file).
fn path_of_file_uri(uri: &str) -> Option<PathBuf> {
    let encoded = uri.strip_prefix("file://")?;
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    Some(PathBuf::from(std::ffi::OsString::from_vec(decoded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_trace_is_left_out_of_the_tail() {
        let log = "exec ${PAGER:-/usr/bin/less} \"$0\" || exit 1\n\
            FAIL: expected 'a', got 'b'\n\
            1796180939.836431418: src/main/tools/linux-sandbox-pid1.cc:291: remount ro: /\n\
            1796180939.991732532: src/main/tools/linux-sandbox-pid1.cc:441: child exited normally with code 1\n\
            12.5: a line of the test's own that looks like a time\n";
        let kept = String::from_utf8(without_sandbox_chatter(log.as_bytes())).unwrap();
        assert_eq!(
            kept,
            "exec ${PAGER:-/usr/bin/less} \"$0\" || exit 1\n\
             FAIL: expected 'a', got 'b'\n\
             12.5: a line of the test's own that looks like a time\n"
        );
    }
    use schemas::{Outcome, TaskResult};

    fn event(label: &str, attempt: u32, uri: &str) -> String {
        format!(
            r#"{{"id":{{"testResult":{{"label":"{label}","run":1,"shard":1,"attempt":{attempt}}}}},"testResult":{{"testActionOutput":[{{"name":"test.xml","uri":"file:///x/test.xml"}},{{"name":"test.log","uri":"{uri}"}}],"status":"FAILED"}}}}"#
        )
    }

    #[test]
    fn the_last_attempt_s_test_log_is_found_and_decoded() {
        let jsonl = [
            event("//a:t", 1, "file:///out/a/attempt_1.log"),
            event("//a:t", 2, "file:///out/a%20b/test.log"),
            event("//b:t", 1, "bytestream://cache/blobs/abc/12"),
            "not json".into(),
        ]
        .join("\n");
        let logs = test_logs(&jsonl);
        assert_eq!(logs["//a:t"], PathBuf::from("/out/a b/test.log"));
        assert!(!logs.contains_key("//b:t"));
    }

    #[test]
    fn failing_reports_get_their_log_s_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("test.log");
        let text: String = (0..300).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let uri = format!("file://{}", log.display());
        let jsonl = [event("//a:fail", 1, &uri), event("//a:pass", 1, &uri)].join("\n");
        let report = |task, outcome| TaskReport {
            task,
            result: TaskResult {
                outcome,
                exit_code: None,
                duration_ms: 1,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
        };
        let mut reports = [report(0, Outcome::Failed), report(1, Outcome::Passed)];
        let labels = HashMap::from([(0, "//a:fail"), (1, "//a:pass")]);
        attach_failing_logs(&mut reports, &labels, &jsonl);
        let tail = reports[0].result.log_tail.as_deref().unwrap();
        assert!(tail.starts_with("line 100\n") && tail.ends_with("line 299"));
        assert_eq!(reports[1].result.log_tail, None, "only failures carry logs");
    }
}
