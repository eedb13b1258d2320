//! A batch's stderr, passed on as it comes without the one line of it that is false for the
//! session.
//!
//! A batch whose targets were all filtered out (`--test_tag_filters`, sizes, ...) or that held
//! only build tasks ends with Bazel's `ERROR: No test targets were found, yet testing was
//! requested`: true of that one Bazel invocation, false of the session, which has tests (a
//! session without any is left to Bazel alone). The line is dropped; every other byte is
//! forwarded at once, in order. Only when the wrapper's own stderr is not a terminal: on a
//! terminal Bazel's stderr stays attached to it, since a pipe would change how Bazel draws (no
//! progress bar, no colours), and the line shows.

use std::io::{IsTerminal as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The line dropped, as Bazel 4.2.3 and 7 print it (after any colour codes).
const NO_TESTS_LINE: &str = "ERROR: No test targets were found, yet testing was requested";

/// How long the rest of a batch's stderr is waited for once its Bazel has exited: the pipe
/// ends with it, unless a process it left behind holds it open.
const DRAIN: Duration = Duration::from_secs(5);

/// Pipes the batch's stderr when the wrapper's is not a terminal (see the module's comment).
pub(super) fn pipe_unless_terminal(command: &mut Command) {
    if !std::io::stderr().is_terminal() {
        command.stderr(Stdio::piped());
    }
}

/// Forwards a batch's piped stderr to the wrapper's, without the line (nothing to do when it
/// was not piped).
pub(super) struct Forwarder {
    /// The task reading the pipe, and what tells it to stop waiting for the pipe's end.
    task: Option<(JoinHandle<()>, CancellationToken)>,
}

impl Forwarder {
    /// Starts forwarding `child`'s stderr to the wrapper's, if it is piped.
    pub(super) fn start(child: &mut Child) -> Forwarder {
        Forwarder::start_to(child, write_out)
    }

    /// Starts forwarding `child`'s stderr to `sink`, if it is piped.
    fn start_to(child: &mut Child, sink: impl FnMut(&[u8]) + Send + 'static) -> Forwarder {
        let task = child.stderr.take().map(|stderr| {
            let stop = CancellationToken::new();
            (tokio::spawn(forward(stderr, stop.clone(), sink)), stop)
        });
        Forwarder { task }
    }

    /// Once the batch's Bazel has exited: waits for the rest of its stderr (up to [`DRAIN`]),
    /// so that its last lines (an interrupted build's among them) come before anything the
    /// wrapper prints next.
    pub(super) async fn finish(self) {
        self.finish_within(DRAIN).await;
    }

    async fn finish_within(self, drain: Duration) {
        let Some((mut task, stop)) = self.task else {
            return;
        };
        if tokio::time::timeout(drain, &mut task).await.is_err() {
            // What was read is still passed on, a line held back included.
            stop.cancel();
            let _ = task.await;
        }
    }
}

async fn forward(
    mut from: ChildStderr,
    stop: CancellationToken,
    mut sink: impl FnMut(&[u8]) + Send + 'static,
) {
    let mut filter = LineFilter::default();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = stop.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => sink(&filter.feed(&buffer[..n])),
        }
    }
    sink(&filter.finish());
}

/// Writes to the wrapper's stderr as `eprintln!` does, so that the two keep their order. A
/// stderr that cannot be written to is no reason to stop reading Bazel's: it would block.
fn write_out(bytes: &[u8]) {
    if !bytes.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(bytes);
        let _ = stderr.flush();
    }
}

/// Drops [`NO_TESTS_LINE`] from a byte stream, passing everything else through unchanged and as
/// soon as it can: a line is held back only while what it shows so far could still become the
/// dropped line. Colour and cursor codes around the text do not hide the line; those of a
/// dropped line are kept, since a progress bar's redrawing may depend on them. Pure: bytes in,
/// bytes out.
#[derive(Debug, Default)]
pub(super) struct LineFilter {
    /// The start of the current line, held back.
    held: Vec<u8>,
    /// The current line cannot be the dropped one: its bytes pass straight through.
    passing: bool,
}

impl LineFilter {
    /// The bytes to forward now, given the next `chunk` of the stream.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            if self.passing {
                out.extend_from_slice(piece);
            } else {
                self.held.extend_from_slice(piece);
            }
            if piece.ends_with(b"\n") {
                self.end_line(&mut out);
            } else if !self.passing {
                let shown = Shown::of(&self.held);
                if shown.text.is_empty() && !shown.unfinished_code {
                    // Only codes so far: nothing to decide yet, nothing to hold back.
                    out.append(&mut self.held);
                } else if !NO_TESTS_LINE.starts_with(shown.text.trim_start()) {
                    out.append(&mut self.held);
                    self.passing = true;
                }
            }
        }
        out
    }

    /// The bytes still held back when the stream ends (a last line without a newline).
    pub(super) fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.end_line(&mut out);
        out
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if !self.passing {
            let shown = Shown::of(&self.held);
            if shown.text.trim() == NO_TESTS_LINE {
                out.extend_from_slice(&shown.codes);
            } else {
                out.extend_from_slice(&self.held);
            }
        }
        self.held.clear();
        self.passing = false;
    }
}

/// What a piece of a line shows, apart from its terminal codes.
#[derive(Debug, PartialEq)]
struct Shown {
    /// The visible text.
    text: String,
    /// The escape sequences and carriage returns, in order (no newline).
    codes: Vec<u8>,
    /// It ends inside an escape sequence.
    unfinished_code: bool,
}

impl Shown {
    fn of(bytes: &[u8]) -> Shown {
        let mut text = Vec::new();
        let mut codes = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                0x1b => {
                    // CSI (`ESC [ params final`), else a two-byte escape.
                    let end = if bytes.get(i + 1) == Some(&b'[') {
                        bytes[i + 2..]
                            .iter()
                            .position(|b| (0x40..=0x7e).contains(b))
                            .map(|p| i + 2 + p + 1)
                    } else {
                        (i + 1 < bytes.len()).then_some(i + 2)
                    };
                    let Some(end) = end else {
                        codes.extend_from_slice(&bytes[i..]);
                        return Shown {
                            text: String::from_utf8_lossy(&text).into_owned(),
                            codes,
                            unfinished_code: true,
                        };
                    };
                    codes.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
                b'\r' => {
                    codes.push(b'\r');
                    i += 1;
                }
                b'\n' => i += 1,
                b => {
                    text.push(b);
                    i += 1;
                }
            }
        }
        Shown {
            text: String::from_utf8_lossy(&text).into_owned(),
            codes,
            unfinished_code: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream `chunks` make, filtered.
    fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
        let mut filter = LineFilter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(filter.feed(chunk));
        }
        out.extend(filter.finish());
        out
    }

    /// Regression (issue 10): every batch whose targets were all filtered out printed
    /// `ERROR: No test targets were found, yet testing was requested` into a session that has
    /// tests.
    #[test]
    fn the_no_test_targets_line_of_a_batch_is_dropped_and_nothing_else() {
        let bazel = b"INFO: Found 1 target and 0 test targets...\n\
            INFO: Build completed successfully, 1 total action\n\
            ERROR: No test targets were found, yet testing was requested\n\
            INFO: Build Event Protocol files produced successfully.\n";
        let want = b"INFO: Found 1 target and 0 test targets...\n\
            INFO: Build completed successfully, 1 total action\n\
            INFO: Build Event Protocol files produced successfully.\n";
        assert_eq!(filtered(&[bazel]), want);
        // However the stream is cut into reads.
        let bytes: Vec<&[u8]> = bazel.chunks(1).collect();
        assert_eq!(filtered(&bytes), want);
        let halves = bazel.split_at(100);
        assert_eq!(filtered(&[halves.0, halves.1]), want);
        // In colour (`--color=yes`), and as the last line without a newline.
        assert_eq!(
            filtered(&[b"a\n\x1b[31m\x1b[1mERROR: \x1b[0mNo test targets were found, yet testing was requested\x1b[0m\n"]),
            b"a\n\x1b[31m\x1b[1m\x1b[0m\x1b[0m"
        );
        assert_eq!(
            filtered(&[b"a\nERROR: No test targets were found, yet testing was requested"]),
            b"a\n"
        );
    }

    /// What a test's sink has been given.
    type Collected = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

    /// A sink that collects what is forwarded.
    fn collector() -> (Collected, impl FnMut(&[u8]) + Send + 'static) {
        let collected = Collected::default();
        let sink = {
            let collected = collected.clone();
            move |bytes: &[u8]| collected.lock().unwrap().extend_from_slice(bytes)
        };
        (collected, sink)
    }

    fn piped(script: &str) -> Child {
        let mut command = Command::new("sh");
        command.args(["-c", script]).stderr(Stdio::piped());
        command.spawn().unwrap()
    }

    /// An aborted batch: a signal, to which the process answers with its last words (no
    /// newline at the end) and exits, as Bazel does SIGINT. All of it arrives, without the line.
    /// (SIGTERM stands in for SIGINT: a shell started where SIGINT is ignored, as it is for
    /// background jobs, cannot trap it.)
    #[tokio::test]
    async fn an_interrupted_batch_ends_cleanly_with_nothing_lost() {
        let mut child = piped(
            "trap 'printf \"ERROR: build interrupted\\nINFO: Elapsed time: 1s\" >&2; exit 8' TERM; \
             echo 'INFO: Analyzed 1 target' >&2; \
             echo 'ERROR: No test targets were found, yet testing was requested' >&2; \
             echo ready >&2; \
             while :; do sleep 0.05; done",
        );
        let (collected, sink) = collector();
        let stderr = Forwarder::start_to(&mut child, sink);
        let ready = std::time::Instant::now();
        while !String::from_utf8_lossy(&collected.lock().unwrap()).contains("ready") {
            assert!(
                ready.elapsed() < Duration::from_secs(10),
                "the script never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crate::command_runner::terminate(
            &mut child,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(child.wait().await.unwrap().code(), Some(8));
        stderr.finish().await;
        assert_eq!(
            String::from_utf8_lossy(&collected.lock().unwrap()),
            "INFO: Analyzed 1 target\nready\nERROR: build interrupted\nINFO: Elapsed time: 1s"
        );
    }

    /// A process the batch left behind holding the pipe does not hold up the batch: what came
    /// before is forwarded, and the wait ends.
    #[tokio::test]
    async fn a_pipe_held_open_by_a_leftover_process_is_waited_for_a_while_only() {
        let mut child = piped("sleep 3 & printf 'last words' >&2");
        let (collected, sink) = collector();
        let stderr = Forwarder::start_to(&mut child, sink);
        child.wait().await.unwrap();
        let waited = std::time::Instant::now();
        stderr.finish_within(Duration::from_millis(300)).await;
        assert!(waited.elapsed() < Duration::from_secs(2));
        assert_eq!(&*collected.lock().unwrap(), b"last words");
    }

    #[test]
    fn every_other_line_passes_unchanged_and_at_once() {
        let mut filter = LineFilter::default();
        // Not the line: forwarded as soon as it cannot become it, newline or not.
        assert_eq!(filter.feed(b"ERROR: //a:b failed"), b"ERROR: //a:b failed");
        assert_eq!(filter.feed(b" to build\n"), b" to build\n");
        // Could still be it: held, then released when it turns out not to be.
        assert_eq!(filter.feed(b"ERROR: No test"), b"");
        assert_eq!(filter.feed(b"s here\n"), b"ERROR: No tests here\n");
        assert_eq!(
            filter.feed(b"ERROR: No test targets were found, yet testing was requested, really\n"),
            b"ERROR: No test targets were found, yet testing was requested, really\n".to_vec()
        );
        // Terminal codes alone pass at once.
        assert_eq!(filter.feed(b"\r\x1b[1A\x1b[K"), b"\r\x1b[1A\x1b[K");
        assert_eq!(filter.feed(b"\x1b["), b"");
        assert_eq!(filter.feed(b"K["), b"\x1b[K[");
        assert_eq!(filter.finish(), b"");
        let text = "naïve 测试 ERROR: No test targets were found, yet testing was requested\n";
        assert_eq!(filtered(&[text.as_bytes()]), text.as_bytes());
    }
}
