//! Reading a build event file while Bazel writes it, so that each target's result can be
//! reported the moment Bazel has it rather than when the whole batch ends.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The lines of a growing file, read as they are completed.
#[derive(Debug)]
pub(super) struct EventTail {
    path: PathBuf,
    /// Open once Bazel has created the file; reads go on from where the last one stopped.
    file: Option<File>,
    /// The end of the file that is not a whole line yet.
    pending: Vec<u8>,
    /// Every whole line read so far, for what needs the events up to now (test logs' paths).
    text: String,
}

impl EventTail {
    pub(super) fn new(path: &Path) -> EventTail {
        EventTail {
            path: path.to_path_buf(),
            file: None,
            pending: Vec::new(),
            text: String::new(),
        }
    }

    /// The lines completed since the last call (none while the file does not exist yet).
    pub(super) fn read(&mut self) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = &mut self.file else {
            return Vec::new();
        };
        // An error reading a file Bazel is writing is as good as nothing new: the batch's
        // results are read again from the whole file when it ends.
        let _ = file.read_to_end(&mut self.pending);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(end + 1);
        let complete =
            String::from_utf8_lossy(&std::mem::replace(&mut self.pending, rest)).into_owned();
        self.text.push_str(&complete);
        complete.lines().map(str::to_string).collect()
    }

    /// Every whole line read so far.
    pub(super) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_whole_lines_are_read_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let mut tail = EventTail::new(&path);
        assert!(tail.read().is_empty(), "no file yet");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(tail.read(), ["{\"a\":1}"]);
        assert!(tail.read().is_empty(), "half a line waits");
        file.write_all(b":2}\n{\"c\":3}\n").unwrap();
        assert_eq!(tail.read(), ["{\"b\":2}", "{\"c\":3}"]);
        assert_eq!(tail.text(), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }
}
