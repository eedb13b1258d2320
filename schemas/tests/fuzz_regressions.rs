//! Replays the fuzz regressions: every file under `fuzz/regressions/<target>/` goes through the
//! same checks as that fuzz target (`tests/fuzz_checks`), under the same allocation cap. A crash
//! the fuzzer finds is committed there, so it stays fixed without cargo-fuzz or a nightly.
//!
//! A file whose name starts with `err-` must also be refused: for `frame_decode`, the stream ends
//! in an error; for `schema_parse`, the schema does not parse. Other files must only not panic.
//!
//! `fuzz/` is outside the Bazel workspace (`.bazelignore`), so under Bazel (`TEST_SRCDIR` set)
//! the replay skips; the named tests below, which build their inputs in code, run everywhere.

mod fuzz_checks;

use std::path::PathBuf;

use fuzz_checks::CappedAllocator;
use schemas::{FrameError, DEFAULT_MAX_FRAME_LEN};

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// The files under `fuzz/regressions/<target>/`, sorted; `None` under Bazel.
fn regressions(target: &str) -> Option<Vec<(String, Vec<u8>)>> {
    if std::env::var_os("TEST_SRCDIR").is_some() {
        eprintln!("fuzz/ is not in Bazel's view: skipping the replay of fuzz/regressions/{target}");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).expect("a regression input");
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regressions in {}", dir.display());
    Some(files)
}

/// `text`, cut to a line's length for the log.
fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(200) {
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Replays `fuzz/regressions/<target>/` through `check`, which says whether it refused the input
/// and how the input fared.
fn replay(target: &str, check: impl Fn(&[u8]) -> (bool, String)) {
    for (name, input) in regressions(target).unwrap_or_default() {
        let (refused, fared) = check(&input);
        eprintln!("{name}: {}", shorten(fared));
        if name.starts_with("err-") {
            assert!(refused, "{name} was not refused");
        }
    }
}

#[test]
fn every_frame_decode_regression_replays() {
    replay("frame_decode", |input| {
        let verdict = fuzz_checks::frame_decode(input);
        (verdict.error.is_some(), format!("{verdict:?}"))
    });
}

#[test]
fn every_schema_parse_regression_replays() {
    replay("schema_parse", |input| {
        let parsed = fuzz_checks::schema_parse(input);
        (parsed.is_err(), format!("{parsed:?}"))
    });
}

/// A frame stream as `frame_decode` takes it: `control` (chunk size - 1), then the frames.
fn stream(control: u8, frames: &[&[u8]]) -> Vec<u8> {
    let mut bytes = vec![control];
    for payload in frames {
        bytes.extend((payload.len() as u32).to_be_bytes());
        bytes.extend(*payload);
    }
    bytes
}

fn refused_with(input: &[u8]) -> FrameError {
    let verdict = fuzz_checks::frame_decode(input);
    assert!(verdict.messages.is_empty(), "{verdict:?}");
    verdict.error.expect("the stream is refused")
}

#[test]
fn a_length_prefix_of_u32_max_is_refused_before_any_allocation() {
    let error = refused_with(&[0, 0xff, 0xff, 0xff, 0xff]);
    assert!(
        matches!(error, FrameError::TooLarge { len, .. } if len == u32::MAX as usize),
        "{error:?}"
    );
}

#[test]
fn a_frame_at_the_cap_that_never_completes_is_an_error_at_the_end() {
    // The codec reserves the whole frame (the cap's worth, which the allocator allows) and
    // waits; the stream ending first is an error, not a silent drop.
    let mut input = vec![0];
    input.extend((DEFAULT_MAX_FRAME_LEN as u32).to_be_bytes());
    input.extend([0, 1]);
    assert!(matches!(refused_with(&input), FrameError::Io(_)));
}

#[test]
fn a_truncated_frame_is_an_error_at_the_end() {
    let mut input = stream(0, &[&[3, 0]]);
    input.pop();
    assert!(matches!(refused_with(&input), FrameError::Io(_)));
}

#[test]
fn a_vec_claiming_2_pow_60_elements_is_refused_without_allocating_it() {
    // `Results` (variant 3) with a varint length of 2^60 (0xfd: eight little-endian bytes follow).
    let payload = [3, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
    for control in [0, 255] {
        let error = refused_with(&stream(control, &[&payload]));
        assert!(matches!(error, FrameError::Decode { .. }), "{error:?}");
    }
}

#[test]
fn a_string_claiming_2_pow_60_bytes_is_refused_without_allocating_it() {
    // A hello (variant 0) of version 1 whose client id claims 2^60 bytes.
    let payload = [0, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
    match refused_with(&stream(0, &[&payload])) {
        FrameError::Decode { hello_version, .. } => assert_eq!(hello_version, Some(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_in_a_string_is_a_decode_error() {
    let payload = [0, 1, 3, 0xff, 0xfe, 0xfd];
    let error = refused_with(&stream(0, &[&payload]));
    assert!(matches!(error, FrameError::Decode { .. }), "{error:?}");
}

#[test]
fn a_valid_frame_then_garbage_yields_the_message_then_the_error() {
    // `Results([])`, then an unknown variant.
    let verdict = fuzz_checks::frame_decode(&stream(2, &[&[3, 0], &[9]]));
    assert_eq!(
        verdict.messages,
        vec![schemas::ClientMessage::Results(vec![])]
    );
    assert!(matches!(verdict.error, Some(FrameError::Decode { .. })));
}

#[test]
fn deeply_nested_yaml_is_refused_not_a_stack_overflow() {
    // Not deeper: libyaml's flow parsing is quadratic in the depth (80,000 levels take ~30 s).
    let depth = 5_000;
    for yaml in [
        format!(
            "name: x\ntasks: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        format!(
            "name: x\ntasks:\n  - task: {}1{}\n",
            "{a: ".repeat(depth),
            "}".repeat(depth)
        ),
    ] {
        assert!(fuzz_checks::schema_parse(yaml.as_bytes()).is_err());
    }
}

#[test]
fn an_alias_bomb_is_refused_before_it_expands() {
    // Nine levels of nine aliases each: 9^9 strings if expanded. A schema has nowhere to hold a
    // nested list, so the first one is refused.
    let mut levels = vec![format!("&a [{}]", ["x"; 9].join(", "))];
    for (name, previous) in "bcdefghi".chars().zip("abcdefgh".chars()) {
        let aliases = vec![format!("*{previous}"); 9].join(", ");
        levels.push(format!("&{name} [{aliases}]"));
    }
    let yaml = format!("name: x\ntasks: [{}]\n", levels.join(", "));
    let error = fuzz_checks::schema_parse(yaml.as_bytes()).unwrap_err();
    assert!(error.contains("invalid type"), "{error}");
}
