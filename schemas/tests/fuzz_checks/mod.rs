//! The checks the fuzz targets run on each input, shared with `tests/fuzz_regressions.rs` so that
//! a replayed input goes through exactly what the fuzzer ran.
//!
//! The fuzz crate (`fuzz/`, outside the workspace) includes this file with `#[path]`; it lives
//! here, not there, because `fuzz/` is in `.bazelignore` and Bazel must still compile the
//! regression test. Only the public decode APIs are used, so fields added to the messages need no
//! change here.

#![allow(dead_code)] // Each user (a fuzz target, the regression test) calls only part of this.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;

use bytes::BytesMut;
use schemas::frame::{decode_payload, encode_payload};
use schemas::{
    peek_protocol_version, ClientMessage, FrameError, MessageCodec, Schema, ServerMessage,
    DEFAULT_MAX_FRAME_LEN,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::Decoder as _;

/// The largest single allocation a decoder may make: one frame at the cap (the codec reserves
/// room for a frame as soon as its length is known), its header, and room for the rest of the
/// input. Anything larger means a length claimed by the peer was believed beyond the cap.
pub const MAX_ALLOCATION: usize = DEFAULT_MAX_FRAME_LEN + 1024 * 1024;

/// The system allocator, aborting the process on any allocation over [`MAX_ALLOCATION`].
/// libFuzzer reports the abort as a crash and saves the input; without a sanitizer (stable Rust)
/// its own `-malloc_limit_mb` is not enforced, so this is what enforces "never allocate beyond
/// the cap".
pub struct CappedAllocator;

impl CappedAllocator {
    fn check(size: usize) {
        if size > MAX_ALLOCATION {
            // No formatting: allocating here would recurse.
            let _ = std::io::stderr()
                .write_all(b"fuzz_checks: an allocation exceeded MAX_ALLOCATION; aborting\n");
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`, after a check that only reads the size.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// How a byte stream fared through the coordinator's codec.
#[derive(Debug)]
pub struct StreamVerdict {
    /// The messages decoded before the stream ended or failed.
    pub messages: Vec<ClientMessage>,
    /// The error that ended the stream, if it did not end cleanly between frames.
    pub error: Option<FrameError>,
}

/// The `frame_decode` target. Input: one control byte, then the bytes a client sent.
///
/// - The bytes go through `MessageCodec<ClientMessage, _>` as the coordinator's `FramedRead`
///   feeds it: in chunks (of `control + 1` bytes, so chunk boundaries fall everywhere, one byte
///   at a time included), decoding after each chunk until an error, then `decode_eof` at the end.
///   The result must equal that of feeding the whole stream at once.
/// - The bytes, and the bytes after a 4-byte header, go through `decode_payload` as a
///   `ClientMessage` and as a `ServerMessage`, and through `peek_protocol_version`.
/// - Whatever decodes must re-encode to bytes that decode to the same value.
///
/// Panics (the fuzzer's crash) on any broken invariant; returns how the stream fared.
pub fn frame_decode(data: &[u8]) -> StreamVerdict {
    let Some((&control, stream)) = data.split_first() else {
        return StreamVerdict {
            messages: Vec::new(),
            error: None,
        };
    };
    let chunked = decode_stream(stream, usize::from(control) + 1);
    let whole = decode_stream(stream, stream.len().max(1));
    assert_eq!(
        chunked.messages, whole.messages,
        "chunk boundaries changed what decoded"
    );
    assert_eq!(
        chunked.error.as_ref().map(ToString::to_string),
        whole.error.as_ref().map(ToString::to_string),
        "chunk boundaries changed how the stream ended"
    );
    for message in &chunked.messages {
        assert_round_trips(message);
    }

    // What a client's codec does with the same bytes, read as server messages.
    let _ = MessageCodec::<ServerMessage, ClientMessage>::default()
        .decode_eof(&mut BytesMut::from(stream));

    check_payload(stream);
    if let Some(payload) = stream.get(4..) {
        check_payload(payload);
    }
    chunked
}

/// Feeds `stream` to a fresh coordinator codec `chunk` bytes at a time.
fn decode_stream(stream: &[u8], chunk: usize) -> StreamVerdict {
    let mut codec = MessageCodec::<ClientMessage, ServerMessage>::default();
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                // FramedRead ends the stream at the first error: a frame reader cannot resync.
                Err(error) => {
                    return StreamVerdict {
                        messages,
                        error: Some(error),
                    }
                }
            }
        }
        assert!(
            buf.capacity() <= MAX_ALLOCATION,
            "the codec buffered {} bytes",
            buf.capacity()
        );
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => {
                return StreamVerdict {
                    messages,
                    error: None,
                }
            }
            Err(error) => {
                return StreamVerdict {
                    messages,
                    error: Some(error),
                }
            }
        }
    }
}

/// Decodes `payload` every way a peer's payload is decoded.
fn check_payload(payload: &[u8]) {
    let version = peek_protocol_version(payload);
    match decode_payload::<ClientMessage>(payload) {
        Ok(message) => {
            let hello_version = match &message {
                ClientMessage::Hello(hello) => Some(hello.protocol_version),
                _ => None,
            };
            assert_eq!(version, hello_version, "peek disagrees with the message");
            assert_round_trips(&message);
        }
        Err(FrameError::Decode { hello_version, .. }) => {
            assert_eq!(
                hello_version, version,
                "the error's version disagrees with peek"
            );
        }
        Err(other) => panic!("decode_payload failed with {other:?}, not a decode error"),
    }
    if let Ok(message) = decode_payload::<ServerMessage>(payload) {
        assert_round_trips(&message);
    }
}

/// Re-encoding a decoded value and decoding that gives the same value, and the encoding is a
/// fixed point (so two peers agree on the bytes of what they exchanged).
fn assert_round_trips<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let _ = format!("{value:?}");
    let bytes = encode_payload(value).expect("a decoded value encodes");
    let again: T = decode_payload(&bytes).expect("a re-encoded value decodes");
    assert_eq!(&again, value, "re-encoding changed the value");
    assert_eq!(
        encode_payload(&again).expect("encodes"),
        bytes,
        "encoding is not stable"
    );
}

/// The `schema_parse` target. Input: the bytes of a schema file.
///
/// UTF-8 input goes through `Schema::from_yaml`; a schema it accepts must validate, have a stable
/// digest, and survive both the YAML and the wire round trip unchanged. Returns the parse result
/// (non-UTF-8 input is an error, as reading the file as a string would be).
pub fn schema_parse(data: &[u8]) -> Result<Schema, String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let schema = Schema::from_yaml(text).map_err(|e| e.to_string())?;
    schema.validate().expect("a parsed schema validates");
    let digest = schema.digest();
    let _ = (digest.to_string(), digest.short(), format!("{schema:?}"));

    let yaml = schema.to_yaml();
    let reparsed = Schema::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("to_yaml wrote {yaml:?}, which does not parse: {e}"));
    assert_eq!(reparsed, schema, "the YAML round trip changed the schema");
    assert_eq!(reparsed.digest(), digest);

    let wire = encode_payload(&schema).expect("a schema encodes");
    let received: Schema = decode_payload(&wire).expect("an encoded schema decodes");
    assert_eq!(received, schema, "the wire round trip changed the schema");
    received.validate().expect("a received schema validates");
    Ok(schema)
}
