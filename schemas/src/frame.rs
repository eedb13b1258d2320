//! Framing: each message is a 4-byte big-endian length followed by that many bytes of bincode.
//!
//! [`MessageCodec`] implements tokio-util's `Decoder` and `Encoder`, which work on byte buffers
//! only; the coordinator and the client wrap their QUIC streams with `FramedRead` /
//! `FramedWrite`. The length is checked against a hard maximum as soon as its four bytes arrive,
//! so a peer cannot make either side buffer more than that.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

/// The default upper bound on one frame: room for a join carrying a schema of ~100,000 Bazel
/// labels, or the final report for it.
pub const DEFAULT_MAX_FRAME_LEN: usize = 32 * 1024 * 1024;

/// The largest frame accepted before a client has been welcomed: a hello is a few hundred bytes,
/// and a peer that has not proved it holds the token must not make the coordinator hold more
/// than this for it (see SECURITY.md). The full cap applies once the hello is accepted.
pub const PRE_HELLO_MAX_FRAME_LEN: usize = 64 * 1024;

/// Bytes of the length prefix.
const HEADER_LEN: usize = 4;

/// The most buffer reserved ahead of the bytes that arrived, while a frame is incomplete.
const RESERVE_AHEAD: usize = 64 * 1024;

/// bincode's settings for payloads. The limit also caps what a decoder will allocate for a
/// length claimed inside a payload.
type PayloadConfig = Configuration<LittleEndian, Varint, Limit<DEFAULT_MAX_FRAME_LEN>>;

fn payload_config() -> PayloadConfig {
    bincode::config::standard().with_limit::<DEFAULT_MAX_FRAME_LEN>()
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The receiver's maximum.
        max: usize,
    },
    /// The payload was not a valid message.
    #[error("undecodable message: {reason}")]
    Decode {
        /// What the decoder said.
        reason: String,
        /// The protocol version, if the payload starts like a hello. A hello from another
        /// version may not decode, and this lets the receiver say why in words.
        hello_version: Option<u16>,
    },
    /// The frame would take a byte budget shared with other connections past its limit (see
    /// [`FrameBudget`]): the receiver is busy, and the sender may try again later.
    #[error("a frame of {len} bytes does not fit in what the receiver buffers now; retry later")]
    OverBudget {
        /// The announced length.
        len: usize,
    },
    /// The message could not be encoded (cannot happen for this crate's messages).
    #[error("unencodable message: {0}")]
    Encode(String),
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Encodes one message's payload (without the length prefix).
pub fn encode_payload<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    bincode::serde::encode_to_vec(message, payload_config())
        .map_err(|e| FrameError::Encode(e.to_string()))
}

/// Encodes one message as a whole frame (length prefix included), refusing one over
/// `max_frame_len`. The frame can then be shared by every receiver of the same message.
pub fn encode_frame<T: Serialize>(
    message: &T,
    max_frame_len: usize,
) -> Result<bytes::Bytes, FrameError> {
    let payload = encode_payload(message)?;
    if payload.len() > max_frame_len {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: max_frame_len,
        });
    }
    let mut frame = BytesMut::with_capacity(HEADER_LEN + payload.len());
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    Ok(frame.freeze())
}

/// Decodes one message's payload, which must be consumed exactly.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let undecodable = |reason: String| FrameError::Decode {
        reason,
        hello_version: crate::protocol::peek_protocol_version(payload),
    };
    let (message, used) = bincode::serde::decode_from_slice(payload, payload_config())
        .map_err(|e| undecodable(e.to_string()))?;
    if used != payload.len() {
        return Err(undecodable(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(message)
}

/// Decodes a value from the start of a payload, ignoring whatever follows it.
pub(crate) fn decode_prefix<T: DeserializeOwned>(payload: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(payload, payload_config())
        .ok()
        .map(|(value, _)| value)
}

/// Bytes that many connections' incomplete frames may hold together. A frame larger than
/// [`RESERVE_AHEAD`] takes its length from every budget its codec was given as soon as its header
/// arrives, and gives it back once it is complete (or the codec is dropped); a frame that does not
/// fit is refused with [`FrameError::OverBudget`] before its body is buffered. Small frames are
/// not counted: what they hold is bounded by the reserve ahead.
#[derive(Debug)]
pub struct FrameBudget {
    /// The most bytes held at once.
    limit: usize,
    /// The bytes held now.
    used: AtomicUsize,
}

impl FrameBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<FrameBudget> {
        Arc::new(FrameBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A length-delimited bincode codec that decodes `In` and encodes `Out`.
#[derive(Debug)]
pub struct MessageCodec<In, Out> {
    /// The largest frame accepted or produced.
    max_frame_len: usize,
    /// The budgets a large incoming frame must fit in, all of them.
    budgets: Vec<Arc<FrameBudget>>,
    /// What the incomplete frame took from each of `budgets`.
    taken: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> MessageCodec<In, Out> {
    /// A codec that refuses frames over `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        MessageCodec {
            max_frame_len,
            budgets: Vec::new(),
            taken: 0,
            _types: PhantomData,
        }
    }

    /// Large incoming frames must also fit in each of `budgets` (see [`FrameBudget`]).
    pub fn with_budgets(mut self, budgets: Vec<Arc<FrameBudget>>) -> Self {
        self.budgets = budgets;
        self
    }

    /// Takes `len` from every budget, or from none.
    fn take(&mut self, len: usize) -> bool {
        for (i, budget) in self.budgets.iter().enumerate() {
            if !budget.try_take(len) {
                self.budgets[..i].iter().for_each(|b| b.give(len));
                return false;
            }
        }
        self.taken = len;
        true
    }

    fn give_back(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        if taken > 0 {
            self.budgets.iter().for_each(|b| b.give(taken));
        }
    }
}

impl<In, Out> Drop for MessageCodec<In, Out> {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl<In, Out> MessageCodec<In, Out> {
    /// Changes the largest frame accepted from now on: the coordinator raises it from
    /// [`PRE_HELLO_MAX_FRAME_LEN`] once a client's hello is accepted.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }
}

impl<In, Out> Default for MessageCodec<In, Out> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl<In: DeserializeOwned, Out> Decoder for MessageCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if src.len() < HEADER_LEN + len {
            if len > RESERVE_AHEAD && self.taken == 0 && !self.take(len) {
                return Err(FrameError::OverBudget { len });
            }
            // Room for what is missing, but not more than a chunk ahead of what arrived: a
            // header alone must not make a peer's connection hold a whole frame's worth of
            // memory.
            src.reserve((HEADER_LEN + len - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len);
        self.give_back();
        decode_payload(&payload).map(Some)
    }
}

impl<In, Out: Serialize> Encoder<&Out> for MessageCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, message: &Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&encode_frame(message, self.max_frame_len)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientMessage, WorkRequest};

    type Codec = MessageCodec<ClientMessage, ClientMessage>;

    fn frame(message: &ClientMessage) -> BytesMut {
        let mut buf = BytesMut::new();
        Codec::default().encode(message, &mut buf).unwrap();
        buf
    }

    #[test]
    fn decodes_byte_by_byte_and_back_to_back() {
        let a = ClientMessage::Request(WorkRequest {
            max_tasks: 3,
            overhead_ms: 0,
        });
        let b = ClientMessage::Results(vec![]);
        let mut wire = frame(&a);
        wire.extend_from_slice(&frame(&b));
        let mut codec = Codec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(message) = codec.decode(&mut buf).unwrap() {
                got.push(message);
            }
        }
        assert_eq!(got, vec![a, b]);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&2048u32.to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 2048,
                    max: 1024
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("exceeds the maximum"));
    }

    #[test]
    fn a_raised_cap_accepts_what_the_first_refused() {
        let mut codec = Codec::new(PRE_HELLO_MAX_FRAME_LEN);
        let header = ((PRE_HELLO_MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(codec.decode(&mut BytesMut::from(&header[..])).is_err());
        codec.set_max_frame_len(DEFAULT_MAX_FRAME_LEN);
        assert!(codec
            .decode(&mut BytesMut::from(&header[..]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn large_frames_share_a_budget_and_give_it_back() {
        let shared = FrameBudget::new(3 * RESERVE_AHEAD);
        let len = 2 * RESERVE_AHEAD;
        let header = || BytesMut::from(&(len as u32).to_be_bytes()[..]);
        let mut first = Codec::default().with_budgets(vec![shared.clone()]);
        let mut buf = header();
        assert!(first.decode(&mut buf).unwrap().is_none());
        assert!(
            first.decode(&mut buf).unwrap().is_none(),
            "taken once per frame"
        );
        assert_eq!(shared.used(), len);
        let mut second =
            Codec::default().with_budgets(vec![FrameBudget::new(usize::MAX), shared.clone()]);
        let err = second.decode(&mut header()).unwrap_err();
        assert!(matches!(err, FrameError::OverBudget { .. }), "{err}");
        assert_eq!(second.budgets[0].used(), 0, "all budgets or none");
        // A dropped codec gives back what it took, and so does a frame once complete.
        drop(first);
        assert_eq!(shared.used(), 0);
        let payload = encode_payload(&ClientMessage::Results(vec![])).unwrap();
        let mut wire = BytesMut::new();
        wire.put_u32(len as u32);
        wire.put_slice(&payload);
        wire.resize(HEADER_LEN + len, 0);
        let mut third = Codec::default().with_budgets(vec![shared.clone()]);
        let mut buf = wire.split_to(HEADER_LEN + 10);
        assert!(third.decode(&mut buf).unwrap().is_none());
        assert_eq!(shared.used(), len, "the incomplete frame holds its share");
        buf.unsplit(wire);
        // The padding makes it undecodable, which does not matter here.
        assert!(third.decode(&mut buf).is_err());
        assert_eq!(shared.used(), 0);
        // Small frames are not counted.
        let mut small = Codec::default().with_budgets(vec![FrameBudget::new(0)]);
        assert!(small
            .decode(&mut frame(&ClientMessage::Results(vec![])))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_header_alone_does_not_reserve_the_whole_frame() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&(30u32 << 20).to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * RESERVE_AHEAD, "{}", buf.capacity());
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let len = round % 64;
            let mut buf = BytesMut::new();
            buf.put_u32(len as u32);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.put_u8(seed as u8);
            }
            // Either a message (random bytes can spell one) or an error; never a panic or a hang.
            let _ = Codec::default().decode(&mut buf);
        }
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            Codec::default().decode(&mut buf),
            Err(FrameError::Decode { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = encode_payload(&ClientMessage::Results(vec![])).unwrap();
        payload.push(0);
        assert!(decode_payload::<ClientMessage>(&payload).is_err());
    }

    #[test]
    fn a_huge_claimed_vector_does_not_allocate_it() {
        // Variant 3 (Results) followed by a varint length of 2^60 elements.
        let payload = [3u8, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(decode_payload::<ClientMessage>(&payload).is_err());
    }
}
