//! The byte layout of log entries inside an AppendEntries.
//!
//! Each entry travels as one self-checking frame with the same layout as the
//! storage engine's frame, version 1 (storage-format.md, "Frame"), so the
//! lead may replace these two functions by the storage codec without changing
//! a byte on the wire:
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

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;
use crate::types::{Entry, EntryKind, ProducerSeq};

/// Bytes of the fixed header in front of every entry's payload.
pub const ENTRY_HEADER_BYTES: usize = 48;
/// Most entries one block can hold: bounded by the frame size, since every
/// entry takes at least its header.
pub const ENTRIES_PER_BLOCK_MAX: usize = super::FRAME_BYTES_MAX / ENTRY_HEADER_BYTES;

const FLAG_HAS_PRODUCER: u8 = 1;
const RESERVED_BYTES: usize = 6;

/// Bytes `entry` takes in a block.
pub fn entry_encoded_bytes(entry: &Entry) -> usize {
    ENTRY_HEADER_BYTES + entry.payload.len()
}

/// Appends the frames of `entries` to `out`, in order.
pub fn encode_entries(entries: &[Entry], out: &mut BytesMut) {
    out.reserve(entries.iter().map(entry_encoded_bytes).sum());
    for entry in entries {
        let frame_bytes = entry_encoded_bytes(entry);
        debug_assert!(
            frame_bytes <= super::FRAME_BYTES_MAX,
            "entry over the frame limit"
        );
        let start = out.len();
        out.put_u32_le(0); // crc, patched below once the rest is written
        out.put_u32_le(frame_bytes as u32);
        out.put_u64_le(entry.index);
        out.put_u64_le(entry.term);
        out.put_u8(entry.kind as u8);
        let producer = entry.producer.unwrap_or(ProducerSeq {
            producer_id: 0,
            sequence: 0,
        });
        out.put_u8(if entry.producer.is_some() {
            FLAG_HAS_PRODUCER
        } else {
            0
        });
        out.put_bytes(0, RESERVED_BYTES);
        out.put_u64_le(producer.producer_id);
        out.put_u64_le(producer.sequence);
        out.put_slice(&entry.payload);
        let frame = out.get_mut(start..).unwrap_or_default();
        debug_assert_eq!(frame.len(), frame_bytes);
        let crc = crc32fast::hash(frame.get(4..).unwrap_or_default());
        if let Some(slot) = frame.get_mut(..4) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Decodes every frame of `block`, consuming it entirely; checksums are
/// verified and indexes must be consecutive.
pub fn decode_entries(block: &mut Bytes) -> Result<Vec<Entry>, WireError> {
    // Justified by the input: every entry takes at least a header.
    let mut entries = Vec::with_capacity(block.len() / ENTRY_HEADER_BYTES);
    while !block.is_empty() {
        let entry = decode_entry(block)?;
        if let Some(previous) = entries.last().map(|e: &Entry| e.index) {
            if entry.index != previous.wrapping_add(1) {
                return Err(WireError::Invalid {
                    what: "entry indexes (not consecutive)",
                });
            }
        }
        entries.push(entry);
    }
    debug_assert!(entries.len() <= ENTRIES_PER_BLOCK_MAX);
    Ok(entries)
}

fn decode_entry(block: &mut Bytes) -> Result<Entry, WireError> {
    if block.len() < ENTRY_HEADER_BYTES {
        return Err(WireError::Truncated {
            what: "entry header",
        });
    }
    let mut header = block.clone();
    let stored_crc = header.get_u32_le();
    let frame_bytes = header.get_u32_le() as usize;
    if frame_bytes < ENTRY_HEADER_BYTES {
        return Err(WireError::Invalid {
            what: "entry frame_bytes (below the header size)",
        });
    }
    if frame_bytes > block.len() {
        return Err(WireError::Truncated {
            what: "entry payload",
        });
    }
    let mut frame = block.split_to(frame_bytes);
    let computed_crc = crc32fast::hash(frame.get(4..).unwrap_or_default());
    frame.advance(8);
    let index = frame.get_u64_le();
    let term = frame.get_u64_le();
    if stored_crc != computed_crc {
        return Err(WireError::EntryChecksum {
            index,
            stored: stored_crc,
            computed: computed_crc,
        });
    }
    let kind =
        EntryKind::from_u8(frame.get_u8()).ok_or(WireError::Invalid { what: "entry kind" })?;
    let flags = frame.get_u8();
    if flags & !FLAG_HAS_PRODUCER != 0 {
        return Err(WireError::Invalid {
            what: "entry flags (reserved bits set)",
        });
    }
    let reserved = frame.split_to(RESERVED_BYTES);
    if reserved.iter().any(|b| *b != 0) {
        return Err(WireError::Invalid {
            what: "entry reserved bytes (not zero)",
        });
    }
    let producer = ProducerSeq {
        producer_id: frame.get_u64_le(),
        sequence: frame.get_u64_le(),
    };
    let producer = if flags & FLAG_HAS_PRODUCER != 0 {
        Some(producer)
    } else if producer.producer_id != 0 || producer.sequence != 0 {
        return Err(WireError::Invalid {
            what: "entry producer fields (set without the flag)",
        });
    } else {
        None
    };
    // What is left of the frame is the payload, still a slice of the body.
    Ok(Entry {
        index,
        term,
        kind,
        producer,
        payload: frame,
    })
}
