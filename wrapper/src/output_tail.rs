//! A task's own output, passed through to the job's output as it comes and its tail kept: what
//! a failing command sends with its result (see [`schemas::log_tail`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::log_tail::{self, MAX_LOG_TAIL_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::process::Child;
use tokio::task::JoinHandle;

/// How long the pipes may stay open after the process exited (a background process it started
/// may hold them) before what they said so far is taken as the whole output.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The last bytes of a process's stdout and stderr, interleaved as they arrived.
#[derive(Debug, Default, Clone)]
pub(crate) struct OutputTail {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl OutputTail {
    /// Copies the child's piped stdout and stderr to this process's, keeping their tail. Returns
    /// the copying tasks, to be awaited with [`OutputTail::finish`].
    pub(crate) fn capture(&self, child: &mut Child) -> Vec<JoinHandle<()>> {
        let mut copies = Vec::new();
        if let Some(out) = child.stdout.take() {
            copies.push(tokio::spawn(self.clone().copy(out, tokio::io::stdout())));
        }
        if let Some(err) = child.stderr.take() {
            copies.push(tokio::spawn(self.clone().copy(err, tokio::io::stderr())));
        }
        copies
    }

    async fn copy(self, mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
        let mut buffer = vec![0; 8192];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            // The job's output matters more than the tail: write it first, ignore a closed one.
            let _ = to.write_all(&buffer[..n]).await;
            let _ = to.flush().await;
            self.keep(&buffer[..n]);
        }
    }

    fn keep(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        bytes.extend_from_slice(chunk);
        // Trimmed in steps, not on every write: at most twice the tail is held.
        if bytes.len() > 2 * MAX_LOG_TAIL_BYTES {
            let cut = bytes.len() - MAX_LOG_TAIL_BYTES - 1;
            bytes.drain(..cut);
        }
    }

    /// Waits (briefly) for the copies to reach the end of the output, then returns its tail.
    pub(crate) async fn finish(&self, copies: Vec<JoinHandle<()>>) -> String {
        let all = futures_util::future::join_all(copies);
        let _ = tokio::time::timeout(DRAIN_GRACE, all).await;
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        log_tail::tail(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    async fn tail_of(script: &str) -> String {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tail = OutputTail::default();
        let copies = tail.capture(&mut child);
        child.wait().await.unwrap();
        tail.finish(copies).await
    }

    /// Regression: this test once wrote to both pipes and expected stderr's line last, but the
    /// two pipes are read concurrently, so a line may arrive before another process's earlier
    /// one and be trimmed away. Each pipe is checked on its own.
    #[tokio::test]
    async fn stdout_and_stderr_end_up_in_the_tail() {
        let text = tail_of("seq 1 500").await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"500"), "{text}");
        assert!(!lines.contains(&"100"), "only the tail is kept");
        assert_eq!(
            tail_of("echo out; echo boom >&2; exit 1")
                .await
                .lines()
                .count(),
            2
        );
        assert!(tail_of("echo boom >&2").await.contains("boom"));
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipe_does_not_hang_the_task() {
        // The shell exits at once; only its background `sleep` holds the pipes.
        let begun = std::time::Instant::now();
        assert_eq!(tail_of("echo started; sleep 30 &").await, "started");
        assert!(begun.elapsed() < Duration::from_secs(5));
    }
}
