//! Arbitrary text through the YAML schema parser, validation and digest: never a panic, and a
//! schema that parses survives the YAML and wire round trips. The checks are in
//! schemas/tests/fuzz_checks, shared with the regression test that replays fuzz/regressions/.
#![no_main]

#[path = "../../schemas/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

#[global_allocator]
static ALLOCATOR: fuzz_checks::CappedAllocator = fuzz_checks::CappedAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::schema_parse(data);
});
