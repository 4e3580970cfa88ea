//! The byte layout of log entries inside an AppendEntries.
//!
//! Each entry travels as one self-checking frame, encoded and decoded by the
//! storage engine's own codec (storage-format.md, "Frame"), so what a leader
//! reads from its log is what goes on the wire and what a follower stores:
//!
//! ```text
//! crc: u32            CRC32 (IEEE, crc32fast) of bytes [4, frame_bytes) of this frame
//! frame_bytes: u32    48 + payload length
//! index: u64, term: u64
//! kind: u8            1 data, 2 config, 3 noop
//! flags: u8           bit 0: has producer; other bits zero
//! reserved: [u8; 6]   zero
//! producer_id: u64, sequence: u64   zero unless flag bit 0
//! payload: [u8; frame_bytes - 48]
//! ```
//!
//! A block is frames back to back, with consecutive indexes; its length is
//! given by the enclosing message. Payloads decode as zero-copy slices.

use bytes::{Bytes, BytesMut};

use super::WireError;
use crate::storage::frame::{self, FrameError, FRAME_HEADER_BYTES};
use crate::types::Entry;

/// Bytes of the fixed header in front of every entry's payload.
pub const ENTRY_HEADER_BYTES: usize = FRAME_HEADER_BYTES;
/// Where a frame's entry index sits (after the CRC and the length).
const INDEX_OFFSET: usize = 8;
/// Most entries one block can hold: bounded by the frame size, since every
/// entry takes at least its header.
pub const ENTRIES_PER_BLOCK_MAX: usize = super::FRAME_BYTES_MAX / ENTRY_HEADER_BYTES;

/// Bytes `entry` takes in a block.
pub fn entry_encoded_bytes(entry: &Entry) -> usize {
    ENTRY_HEADER_BYTES + entry.payload.len()
}

/// Appends the frames of `entries` to `out`, in order: exactly the stored
/// frame layout (storage-format.md), so a follower verifies the leader's
/// checksums and the bytes on the wire are the bytes on disk.
pub fn encode_entries(entries: &[Entry], out: &mut BytesMut) {
    crate::storage::frame::encode_entries(entries, out);
}

/// Decodes every frame of `block`, consuming it entirely; checksums are
/// verified and indexes must be consecutive.
pub fn decode_entries(block: &mut Bytes) -> Result<Vec<Entry>, WireError> {
    let entries = frame::decode_frames(block).map_err(|error| wire_error(block, error))?;
    debug_assert!(entries.len() <= ENTRIES_PER_BLOCK_MAX);
    block.clear();
    Ok(entries)
}

/// The wire's view of a storage frame error.
fn wire_error(block: &Bytes, error: FrameError) -> WireError {
    match error {
        FrameError::BadChecksum {
            offset,
            stored,
            computed,
        } => WireError::EntryChecksum {
            index: block
                .get(offset + INDEX_OFFSET..offset + INDEX_OFFSET + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_le_bytes),
            stored,
            computed,
        },
        FrameError::Truncated { .. } => WireError::Truncated {
            what: "entry frame",
        },
        FrameError::NotContiguous { .. } => WireError::Invalid {
            what: "entry indexes (not consecutive)",
        },
        FrameError::BadLength { .. } => WireError::Invalid {
            what: "entry frame_bytes",
        },
        FrameError::UnknownKind { .. } => WireError::Invalid { what: "entry kind" },
        FrameError::ReservedBits { .. } => WireError::Invalid {
            what: "entry reserved bits",
        },
    }
}
