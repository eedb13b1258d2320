//! Arbitrary bytes through the coordinator's frame decoder, `decode_payload` (client and server
//! messages) and `peek_protocol_version`: never a panic, never an allocation beyond the cap, and
//! what decodes round-trips. The checks are in schemas/tests/fuzz_checks, shared with the
//! regression test that replays fuzz/regressions/.
#![no_main]

#[path = "../../schemas/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

#[global_allocator]
static ALLOCATOR: fuzz_checks::CappedAllocator = fuzz_checks::CappedAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::frame_decode(data);
});
