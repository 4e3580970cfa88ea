//! Length-delimited frames on QUIC streams.
//!
//! Every QUIC stream of both protocols (peer and client) carries a sequence
//! of frames and nothing else:
//!
//! ```text
//! frame = length: u32 little-endian | body: `length` bytes
//! ```
//!
//! `length` counts the body only (not the 4 prefix bytes); 0 is a valid empty
//! body. What a body means is up to the protocol (see docs/protocol.md); this
//! layer moves opaque bodies. A stream ends cleanly only at a frame boundary
//! (the sender finishes the stream after a whole frame).
//!
//! The reader never allocates more than the caller's `frame_bytes_max`: a
//! declared length over it is refused from the 4 prefix bytes alone, before
//! any allocation; below it, the buffer grows with the bytes that actually
//! arrive. A stream that ends inside a prefix or a body is truncated,
//! a typed error. Nothing here panics on what the remote sends.

use bytes::{Bytes, BytesMut};

/// Bytes of the length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Most bytes reserved for a body before its bytes arrive.
pub const BODY_PREALLOCATION_BYTES_MAX: usize = 64 * 1024;
/// The largest body the format can describe (the u32 prefix).
pub const FRAME_BYTES_LIMIT: usize = u32::MAX as usize;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("frame declares {declared_bytes} body bytes, over the limit of {frame_bytes_max}")]
    TooLarge {
        declared_bytes: u64,
        frame_bytes_max: usize,
    },
    #[error("stream ended inside a frame: {received_bytes} of {expected_bytes} bytes of the {part} arrived")]
    Truncated {
        part: FramePart,
        expected_bytes: usize,
        received_bytes: usize,
    },
    #[error("reading a frame: {0}")]
    Read(#[from] quinn::ReadError),
}

/// Which part of a frame a truncation cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePart {
    Prefix,
    Body,
}

impl std::fmt::Display for FramePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramePart::Prefix => "length prefix",
            FramePart::Body => "body",
        })
    }
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FrameWriteError {
    #[error("frame body of {body_bytes} bytes does not fit the u32 length prefix")]
    TooLarge { body_bytes: usize },
    #[error("writing a frame: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Writes one frame (prefix, then `body`) without copying the body.
pub async fn write_frame(send: &mut quinn::SendStream, body: Bytes) -> Result<(), FrameWriteError> {
    let prefix = encode_prefix(body.len())?;
    let mut chunks = [Bytes::copy_from_slice(&prefix), body];
    send.write_all_chunks(&mut chunks).await?;
    Ok(())
}

/// The 4 prefix bytes for a body of `body_bytes`.
pub fn encode_prefix(body_bytes: usize) -> Result<[u8; FRAME_PREFIX_BYTES], FrameWriteError> {
    let length = u32::try_from(body_bytes).map_err(|_| FrameWriteError::TooLarge { body_bytes })?;
    Ok(length.to_le_bytes())
}

/// Reads the next frame's body. `Ok(None)` when the stream ended cleanly
/// before a new frame; a body longer than `frame_bytes_max` is refused before
/// anything is allocated for it.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, FrameReadError> {
    match read_frame_length(recv, frame_bytes_max).await? {
        Some(body_bytes) => read_frame_body(recv, body_bytes).await.map(Some),
        None => Ok(None),
    }
}

/// Reads the next frame's length prefix: the body's length, checked against
/// `frame_bytes_max`, or `Ok(None)` when the stream ended cleanly before a
/// new frame. Read the body with [`read_frame_body`]; in between, a caller
/// may wait for room in a memory budget before anything is buffered.
pub async fn read_frame_length(
    recv: &mut quinn::RecvStream,
    frame_bytes_max: usize,
) -> Result<Option<usize>, FrameReadError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let mut prefix_filled = 0usize;
    while prefix_filled < FRAME_PREFIX_BYTES {
        let unfilled = prefix.get_mut(prefix_filled..).unwrap_or_default();
        match recv.read(unfilled).await? {
            Some(read_bytes) => prefix_filled += read_bytes,
            None if prefix_filled == 0 => return Ok(None),
            None => {
                return Err(FrameReadError::Truncated {
                    part: FramePart::Prefix,
                    expected_bytes: FRAME_PREFIX_BYTES,
                    received_bytes: prefix_filled,
                })
            }
        }
    }
    debug_assert_eq!(prefix_filled, FRAME_PREFIX_BYTES);
    let declared_bytes = u32::from_le_bytes(prefix);
    match usize::try_from(declared_bytes) {
        Ok(body_bytes) if body_bytes <= frame_bytes_max => Ok(Some(body_bytes)),
        _ => Err(FrameReadError::TooLarge {
            declared_bytes: u64::from(declared_bytes),
            frame_bytes_max,
        }),
    }
}

/// Reads a body of `body_bytes` (the length [`read_frame_length`] returned).
pub async fn read_frame_body(
    recv: &mut quinn::RecvStream,
    body_bytes: usize,
) -> Result<Bytes, FrameReadError> {
    // Grow with what arrives instead of reserving the declared size: a
    // remote that declares a large frame and sends nothing pins only
    // BODY_PREALLOCATION_BYTES_MAX, and what it does send is bounded by the
    // QUIC receive windows.
    let mut body = BytesMut::with_capacity(body_bytes.min(BODY_PREALLOCATION_BYTES_MAX));
    while body.len() < body_bytes {
        let remaining_bytes = body_bytes - body.len();
        match recv.read_chunk(remaining_bytes, true).await? {
            Some(chunk) => {
                debug_assert!(chunk.bytes.len() <= remaining_bytes);
                if body.is_empty() && chunk.bytes.len() == body_bytes {
                    // The whole body in one chunk: hand it on without a copy.
                    return Ok(chunk.bytes);
                }
                body.extend_from_slice(&chunk.bytes);
            }
            None => {
                return Err(FrameReadError::Truncated {
                    part: FramePart::Body,
                    expected_bytes: body_bytes,
                    received_bytes: body.len(),
                })
            }
        }
    }
    debug_assert_eq!(body.len(), body_bytes);
    Ok(body.freeze())
}
