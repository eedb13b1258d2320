//! The session key of a `bazel test` or `bazel build`: identical jobs of one CI run must compute
//! the same key, and anything that changes what they would run must change it.

use sha2::{Digest as _, Sha256};

/// Options that name per-job output files: they differ between jobs without changing what runs.
const PER_JOB_OPTIONS: &[&str] = &[
    "--build_event_json_file",
    "--build_event_binary_file",
    "--build_event_text_file",
    "--execution_log_json_file",
    "--execution_log_binary_file",
    "--profile",
];

/// `bazel/<run id>/<hash>`, the hash covering the commit, the command (`test` and `build` of
/// the same targets are different work), its options (without per-job output files) and the
/// sorted target list.
pub fn session_key(
    run_id: &str,
    commit: &str,
    command: &str,
    options: &[String],
    targets: &[String],
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |text: &str| {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    field(commit);
    field(command);
    let mut skip_value = false;
    for option in options {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let name = option.split('=').next().unwrap_or(option);
        if PER_JOB_OPTIONS.contains(&name) {
            skip_value = !option.contains('=');
            continue;
        }
        field(option);
    }
    field("--");
    for target in targets {
        field(target);
    }
    format!("bazel/{run_id}/{}", hex::encode(&hasher.finalize()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(options: &[&str], targets: &[&str]) -> String {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        session_key("run-1", "abc", "test", &s(options), &s(targets))
    }

    #[test]
    fn what_changes_the_work_changes_the_key() {
        let base = key(&["-c", "opt"], &["//a:t", "//b:t"]);
        assert!(base.starts_with("bazel/run-1/"));
        assert_eq!(base, key(&["-c", "opt"], &["//a:t", "//b:t"]));
        assert_ne!(base, key(&["-c", "dbg"], &["//a:t", "//b:t"]));
        assert_ne!(base, key(&["-c", "opt"], &["//a:t"]));
        assert_ne!(
            base,
            session_key(
                "run-2",
                "abc",
                "test",
                &["-c".into(), "opt".into()],
                &["//a:t".into(), "//b:t".into()]
            )
        );
        assert_ne!(
            base,
            session_key(
                "run-1",
                "def",
                "test",
                &["-c".into(), "opt".into()],
                &["//a:t".into(), "//b:t".into()]
            )
        );
        assert_ne!(
            base,
            session_key(
                "run-1",
                "abc",
                "build",
                &["-c".into(), "opt".into()],
                &["//a:t".into(), "//b:t".into()]
            )
        );
    }

    #[test]
    fn per_job_output_files_do_not() {
        let base = key(&["-c", "opt"], &["//a:t"]);
        assert_eq!(
            base,
            key(
                &["-c", "opt", "--build_event_json_file=/job1.json"],
                &["//a:t"]
            )
        );
        assert_eq!(base, key(&["--profile", "/p2", "-c", "opt"], &["//a:t"]));
    }
}
