//! `wrapper/examples/custom_runner.rs`, the runner the README shows, run as the README says
//! against a real coordinator: two jobs share its words and both end with every word's result.
//!
//! The example is found through `E2E_CUSTOM_RUNNER_BIN`, else in Cargo's target directory
//! (Cargo has no `CARGO_BIN_EXE_` for examples): `cargo test --workspace` and
//! `cargo build --workspace --examples` put it there. When it is missing, this test builds it
//! that way. Built for the whole workspace, as those do, so that the shared dependencies keep
//! their features and nothing is rebuilt back and forth.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::{Coordinator, Job};

const LIMIT: Duration = Duration::from_secs(60);

fn custom_runner() -> PathBuf {
    if let Some(path) = std::env::var_os("E2E_CUSTOM_RUNNER_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/examples/custom_runner
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe.parent().and_then(|p| p.parent()).expect("a target dir");
    let path = profile.join("examples/custom_runner");
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--examples"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build the custom_runner example");
    }
    path
}

fn job(coordinator: &Coordinator, name: &str, words: &[&str]) -> Job {
    let mut command = Command::new(custom_runner());
    command
        .args(words)
        .env("TASK_SHARDING_COORDINATOR", &coordinator.addr)
        .env("TASK_SHARDING_CA", &coordinator.cert)
        .env("TASK_SHARDING_RUN_ID", "custom-1");
    Job::spawn(name, command).unwrap()
}

#[test]
fn the_custom_runner_example_shares_its_words_between_jobs() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
    let jobs = [
        job(&coordinator, "one", &words),
        job(&coordinator, "two", &words),
    ];
    let outputs: Vec<_> = jobs.into_iter().map(|j| j.wait(LIMIT).unwrap()).collect();
    let mut counted = 0;
    for output in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
        // Each job ends with every word's result...
        for word in words {
            assert!(
                stdout.contains(&format!("{word}: Passed by letters-")),
                "{stdout}"
            );
        }
        // ...and counted only the letters of those it ran.
        counted += stdout.lines().filter(|l| l.ends_with(" letters")).count();
    }
    assert_eq!(
        counted,
        words.len(),
        "each word ran once, in one job or the other"
    );
}

#[test]
fn the_custom_runner_example_fails_the_session_for_a_failing_word() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let output = job(&coordinator, "alone", &["box", "sun"])
        .wait(LIMIT)
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("box: Failed") && stdout.contains("sun: Passed"),
        "{stdout}"
    );
}
