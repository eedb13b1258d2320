//! Bazel's command line, parsed as Bazel reads it: startup options, the command, its options,
//! and target patterns (before and after `--`). A pure function with table-driven tests.
//!
//! Which options take a value comes from `flags.txt`, generated from `bazel help completion`
//! (`scripts/gen-bazel-flags.sh`), so `-c opt` or `--config ci` are never taken for targets.
//! An option the table does not know is taken as a boolean; `--name=value` is always safe.

use std::collections::HashSet;
use std::sync::OnceLock;

/// The generated table of commands and value-taking options.
const FLAGS: &str = include_str!("flags.txt");

/// Short options and whether they take a value (Bazel's abbreviations).
const SHORT_OPTIONS: &[(&str, bool)] = &[
    ("-c", true),
    ("-j", true),
    ("-k", false),
    ("-s", false),
    ("-t", false),
];

struct Tables {
    commands: HashSet<&'static str>,
    startup_values: HashSet<&'static str>,
    option_values: HashSet<&'static str>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables = Tables {
            commands: HashSet::new(),
            startup_values: HashSet::new(),
            option_values: HashSet::new(),
        };
        for line in FLAGS.lines().filter(|l| !l.starts_with('#')) {
            match line.split_once(' ') {
                Some(("command", name)) => tables.commands.insert(name),
                Some(("startup", name)) => tables.startup_values.insert(name),
                Some(("option", name)) => tables.option_values.insert(name),
                _ => false,
            };
        }
        tables
    })
}

/// A parsed Bazel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Options before the command (`--output_user_root=...`), as given.
    pub startup: Vec<String>,
    /// The command (`test`, `build`, ...), if any.
    pub command: Option<String>,
    /// The command's options, as given (an option and its separate value stay adjacent).
    pub options: Vec<String>,
    /// Target patterns, in order, from before and after `--` (negative ones start with `-`).
    pub patterns: Vec<String>,
}

impl Invocation {
    /// Whether this is a command that task-sharding shards.
    pub fn is_shardable(&self) -> bool {
        matches!(self.command.as_deref(), Some("test" | "build"))
    }
}

/// Parses Bazel's argv (without the program name).
pub fn parse(args: &[String]) -> Invocation {
    let tables = tables();
    let mut invocation = Invocation::default();
    let mut rest = args.iter().peekable();

    // Startup options: everything before the first word that is not an option.
    while let Some(arg) = rest.peek() {
        if !arg.starts_with('-') {
            break;
        }
        let arg = rest.next().expect("peeked");
        invocation.startup.push(arg.clone());
        if takes_separate_value(arg, &tables.startup_values) {
            if let Some(value) = rest.next() {
                invocation.startup.push(value.clone());
            }
        }
    }
    invocation.command = rest.next().cloned();

    // The command's options and its residue (target patterns).
    while let Some(arg) = rest.next() {
        if arg == "--" {
            invocation.patterns.extend(rest.cloned());
            break;
        }
        if arg.starts_with('-') && !is_negative_pattern(arg) {
            invocation.options.push(arg.clone());
            let value_follows = match SHORT_OPTIONS.iter().find(|(name, _)| name == arg) {
                Some((_, takes_value)) => *takes_value,
                None => takes_separate_value(arg, &tables.option_values),
            };
            if value_follows {
                if let Some(value) = rest.next() {
                    invocation.options.push(value.clone());
                }
            }
        } else {
            invocation.patterns.push(arg.clone());
        }
    }
    invocation
}

/// Whether the command names one of Bazel's commands.
pub fn is_known_command(command: &str) -> bool {
    tables().commands.contains(command)
}

/// `--name` (not `--name=value`) whose name takes a value.
fn takes_separate_value(arg: &str, values: &HashSet<&'static str>) -> bool {
    match arg.strip_prefix("--") {
        Some(name) if !name.contains('=') => values.contains(name),
        _ => false,
    }
}

/// `-//foo/...` or `-:bar`: a pattern to subtract, which is only valid as residue but looks like
/// an option. Bazel itself requires `--` before such patterns; accept them either way.
fn is_negative_pattern(arg: &str) -> bool {
    arg.starts_with("-//") || arg.starts_with("-@") || arg.starts_with("-:")
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

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// argv, then the expected startup options, command, options and patterns.
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );

    #[test]
    fn command_lines_split_as_bazel_reads_them() {
        let cases: &[Case] = &[
            ("test //...", &[], Some("test"), &[], &["//..."]),
            (
                "--output_user_root=/x test -c opt //a:b",
                &["--output_user_root=/x"],
                Some("test"),
                &["-c", "opt"],
                &["//a:b"],
            ),
            (
                "--output_base /ob --batch test --config ci //a/... --test_output errors",
                &["--output_base", "/ob", "--batch"],
                Some("test"),
                &["--config", "ci", "--test_output", "errors"],
                &["//a/..."],
            ),
            (
                "test -k --jobs 4 //a -- //b -//b:skip",
                &[],
                Some("test"),
                &["-k", "--jobs", "4"],
                &["//a", "//b", "-//b:skip"],
            ),
            (
                "test //... -//slow/...",
                &[],
                Some("test"),
                &[],
                &["//...", "-//slow/..."],
            ),
            (
                "test --nocache_test_results //x",
                &[],
                Some("test"),
                &["--nocache_test_results"],
                &["//x"],
            ),
            (
                "test --remote_cache=http://c:1 --test_tag_filters=-failing //...",
                &[],
                Some("test"),
                &["--remote_cache=http://c:1", "--test_tag_filters=-failing"],
                &["//..."],
            ),
            ("test -- -//neg", &[], Some("test"), &[], &["-//neg"]),
            ("--help", &["--help"], None, &[], &[]),
            ("info", &[], Some("info"), &[], &[]),
            (
                "query //... --output label",
                &[],
                Some("query"),
                &["--output", "label"],
                &["//..."],
            ),
            // An option the table does not know is a boolean: its neighbour stays a target.
            (
                "test --some_future_flag //x",
                &[],
                Some("test"),
                &["--some_future_flag"],
                &["//x"],
            ),
            ("", &[], None, &[], &[]),
        ];
        for (line, startup, command, options, patterns) in cases {
            let got = parsed(line);
            let want = Invocation {
                startup: strings(startup),
                command: command.map(str::to_string),
                options: strings(options),
                patterns: strings(patterns),
            };
            assert_eq!(got, want, "for `{line}`");
        }
    }

    #[test]
    fn only_test_is_sharded() {
        assert!(parsed("test //...").is_shardable());
        assert!(parsed("--batch test //...").is_shardable());
        assert!(parsed("build //...").is_shardable());
        for line in ["query //...", "info", "--help", "run //x", ""] {
            assert!(!parsed(line).is_shardable(), "{line}");
        }
    }

    #[test]
    fn the_table_knows_bazels_commands_and_value_options() {
        for command in ["test", "build", "query", "info", "run", "coverage"] {
            assert!(is_known_command(command), "{command}");
        }
        let tables = tables();
        for option in [
            "config",
            "compilation_mode",
            "remote_cache",
            "test_tag_filters",
            "jobs",
        ] {
            assert!(tables.option_values.contains(option), "{option}");
        }
        assert!(!tables.option_values.contains("keep_going"));
        assert!(tables.startup_values.contains("output_user_root"));
    }
}
