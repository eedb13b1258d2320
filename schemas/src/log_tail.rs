//! The tail of a failing task's log: what a job sends with a failing result so that every job
//! can show why the run failed. Bounded on both ends — the job cuts it, and the coordinator cuts
//! again whatever a peer sends — so a chatty test cannot fill a report or a dashboard.

/// The most lines of a log tail kept.
pub const MAX_LOG_TAIL_LINES: usize = 200;

/// The most bytes of a log tail kept.
pub const MAX_LOG_TAIL_BYTES: usize = 64 * 1024;

/// The last [`MAX_LOG_TAIL_LINES`] lines of `log`, at most [`MAX_LOG_TAIL_BYTES`] of them, as
/// text (bytes that are not UTF-8 are replaced). A partial first line is kept whole only if it
/// fits; otherwise it starts at a character boundary.
pub fn tail(log: &[u8]) -> String {
    let log = log.strip_suffix(b"\n").unwrap_or(log);
    // Lines from the end: the start of the (MAX_LINES)th line from the end.
    let mut start = 0;
    let mut lines = 0;
    for (i, byte) in log.iter().enumerate().rev() {
        if *byte == b'\n' {
            lines += 1;
            if lines == MAX_LOG_TAIL_LINES {
                start = i + 1;
                break;
            }
        }
    }
    let start = start.max(log.len().saturating_sub(MAX_LOG_TAIL_BYTES));
    let text = String::from_utf8_lossy(&log[start..]);
    // Replacement characters can make the text longer than the bytes it came from.
    bound_bytes(&text).to_owned()
}

/// `text` cut to its last [`MAX_LOG_TAIL_BYTES`] and [`MAX_LOG_TAIL_LINES`]: what the coordinator
/// keeps of a tail a peer sent.
pub fn bound(text: String) -> String {
    if text.len() <= MAX_LOG_TAIL_BYTES && text.matches('\n').count() < MAX_LOG_TAIL_LINES {
        return text;
    }
    tail(text.as_bytes())
}

/// The longest suffix of `text` within [`MAX_LOG_TAIL_BYTES`] that starts on a character.
fn bound_bytes(text: &str) -> &str {
    let mut start = text.len().saturating_sub(MAX_LOG_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let log: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let tail = tail(log.as_bytes());
        assert_eq!(tail.lines().count(), MAX_LOG_TAIL_LINES);
        assert!(tail.starts_with("line 300\n"), "{}", &tail[..20]);
        assert!(tail.ends_with("line 499"));
    }

    #[test]
    fn keeps_the_last_bytes_of_long_lines() {
        let log = "é".repeat(MAX_LOG_TAIL_BYTES);
        let tail = tail(log.as_bytes());
        assert!(tail.len() <= MAX_LOG_TAIL_BYTES);
        assert!(tail.len() >= MAX_LOG_TAIL_BYTES - 4);
        assert!(tail.chars().all(|c| c == 'é' || c == '\u{fffd}'));
    }

    #[test]
    fn short_logs_are_kept_whole() {
        assert_eq!(tail(b"a\nb\n"), "a\nb");
        assert_eq!(bound("a\nb".into()), "a\nb");
        assert_eq!(tail(b""), "");
    }

    #[test]
    fn a_peer_s_oversized_tail_is_cut() {
        let big = "x\n".repeat(100_000);
        let cut = bound(big);
        assert_eq!(cut.lines().count(), MAX_LOG_TAIL_LINES);
    }
}
