//! Where the command is in Bazel's argv: the first argument that is not a startup option. That
//! is all the wrapper reads of the command line before planning, so that every command but
//! `test` and `build` goes to Bazel without a Bazel call; the command's options and target
//! patterns come later from Bazel's own parse, in the plan's build events ([`super::plan`]).
//!
//! Bazel's client splits the command line the same way: it takes arguments starting with `-`
//! (but `-h`, `-help` and `--help`, which are the `help` command) as startup options, and fails
//! on one it does not know. Only the options in [`STARTUP_VALUES`] can take their value as the
//! next argument; every other startup option is a boolean.
//!
//! A mis-parse here errs towards passing through: a value-taking startup option a future Bazel
//! adds, given with a separate value, makes that value look like the command, which is not
//! `test` or `build` (so Bazel runs the command line unchanged), or if it is, the planning run
//! puts `--nobuild` where Bazel expects its command, Bazel rejects it, and the original command
//! runs unchanged; the plan's own record of the command ([`super::plan::Plan::command`]) is
//! checked as well.

/// The startup options that take a value, which may be the next argument (`--output_base /ob`):
/// the client's unary startup flags (`RegisterUnaryStartupFlag` in Bazel's
/// `src/main/cpp/startup_options.cc` and `bazel_startup_options.cc`). The same 18 in Bazel 4.2.3
/// and 7.7.1: each accepted `--NAME 3 --bogus` (failing on `--bogus`, so `3` was its value),
/// while older names (`--host_javabase`, `--blazerc`, `--install_md5`) were unknown to both.
pub const STARTUP_VALUES: &[&str] = &[
    "bazelrc",
    "command_port",
    "connect_timeout_secs",
    "digest_function",
    "failure_detail_out",
    "host_jvm_args",
    "host_jvm_profile",
    "install_base",
    "invocation_policy",
    "io_nice_level",
    "local_startup_timeout_secs",
    "macos_qos_class",
    "max_idle_secs",
    "output_base",
    "output_user_root",
    "server_javabase",
    "server_jvm_out",
    "unix_digest_hash_attribute_name",
];

/// Bazel's argv split at the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Options before the command (`--output_user_root=...`), as given; their count is the
    /// command's index in argv.
    pub startup: Vec<String>,
    /// The command (`test`, `build`, ...), if any.
    pub command: Option<String>,
}

impl Invocation {
    /// Whether this is a command that task-sharding shards.
    pub fn is_shardable(&self) -> bool {
        matches!(self.command.as_deref(), Some("test" | "build"))
    }

    /// The command's index in argv.
    pub fn command_at(&self) -> usize {
        self.startup.len()
    }
}

/// Finds the command in Bazel's argv (without the program name).
pub fn parse(args: &[String]) -> Invocation {
    let mut invocation = Invocation::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if !is_startup_option(arg) {
            invocation.command = Some(arg.clone());
            break;
        }
        invocation.startup.push(arg.clone());
        if takes_separate_value(arg) {
            match rest.next() {
                Some(value) => invocation.startup.push(value.clone()),
                None => break,
            }
        }
    }
    invocation
}

/// What the client takes for a startup option (its `IsArg`).
fn is_startup_option(arg: &str) -> bool {
    arg.starts_with('-') && !matches!(arg, "-h" | "-help" | "--help")
}

/// `--name` (not `--name=value`) whose value is the next argument.
fn takes_separate_value(arg: &str) -> bool {
    arg.strip_prefix("--")
        .is_some_and(|name| STARTUP_VALUES.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Invocation {
        parse(
            &line
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_command_is_the_first_argument_after_the_startup_options() {
        // argv, then the expected startup options and command.
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("test //...", &[], Some("test")),
            (
                "--output_user_root=/x test -c opt //a:b",
                &["--output_user_root=/x"],
                Some("test"),
            ),
            (
                "--output_base /ob --batch --bazelrc test build //a/...",
                &["--output_base", "/ob", "--batch", "--bazelrc", "test"],
                Some("build"),
            ),
            (
                "--host_jvm_args -Xmx1g --nohome_rc --max_idle_secs=5 build //x",
                &[
                    "--host_jvm_args",
                    "-Xmx1g",
                    "--nohome_rc",
                    "--max_idle_secs=5",
                ],
                Some("build"),
            ),
            // The command's own options are not read: a separate value is no concern here.
            (
                "test --config ci --some_future_flag value //x",
                &[],
                Some("test"),
            ),
            ("--help", &[], Some("--help")),
            ("-h test", &[], Some("-h")),
            ("info", &[], Some("info")),
            ("--batch", &["--batch"], None),
            ("--output_base", &["--output_base"], None),
            ("", &[], None),
        ];
        for (line, startup, command) in cases {
            let want = Invocation {
                startup: startup.iter().map(|s| s.to_string()).collect(),
                command: command.map(str::to_string),
            };
            assert_eq!(parsed(line), want, "for `{line}`");
            assert_eq!(want.command_at(), startup.len());
        }
    }

    #[test]
    fn only_test_and_build_are_sharded() {
        assert!(parsed("test //...").is_shardable());
        assert!(parsed("--batch test //...").is_shardable());
        assert!(parsed("build //...").is_shardable());
        for line in [
            "query //...",
            "info",
            "--help",
            "run //x",
            "coverage //x",
            "",
        ] {
            assert!(!parsed(line).is_shardable(), "{line}");
        }
    }

    /// A value-taking startup option this list lacks, given a separate value: the value is
    /// taken for the command, and a value that is not `test` or `build` passes through.
    #[test]
    fn an_unknown_startup_value_is_taken_for_a_command_that_passes_through() {
        let invocation = parsed("--future_startup_path /p test //...");
        assert_eq!(invocation.command.as_deref(), Some("/p"));
        assert!(!invocation.is_shardable());
    }
}
