//! The frame codec: one log entry as it is stored in a segment and carried on
//! the wire, byte for byte (see storage-format.md, "Frame").
//!
//! Invariants: a decoder never panics and never allocates more than its input
//! justifies (every frame is at least [`FRAME_HEADER_BYTES`] long, so the
//! number of entries is bounded by the input length); a frame is accepted only
//! if its length fits the input, its reserved bits are zero, its kind is known
//! and its CRC32 matches.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{Entry, EntryKind, LogIndex, ProducerSeq, Term};

/// Bytes of the fixed frame header in front of every payload.
pub const FRAME_HEADER_BYTES: usize = 48;
/// Largest frame the codec accepts (header + payload). A segment may be
/// smaller and then limits frames further.
pub const FRAME_BYTES_MAX: usize = 1 << 30;
const FLAG_HAS_PRODUCER: u8 = 1;

const OFFSET_CRC: usize = 0;
const OFFSET_LEN: usize = 4;
const OFFSET_INDEX: usize = 8;
const OFFSET_TERM: usize = 16;
const OFFSET_KIND: usize = 24;
const OFFSET_FLAGS: usize = 25;
const OFFSET_RESERVED: usize = 26;
const OFFSET_PRODUCER_ID: usize = 32;
const OFFSET_SEQUENCE: usize = 40;

/// Why bytes did not decode as frames. Offsets are relative to the start of
/// the buffer handed to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame at offset {offset} is truncated: {available} bytes available, {needed} needed")]
    Truncated {
        offset: usize,
        available: usize,
        needed: usize,
    },
    #[error("frame at offset {offset} declares length {frame_bytes}, outside {FRAME_HEADER_BYTES}..={FRAME_BYTES_MAX}")]
    BadLength { offset: usize, frame_bytes: u64 },
    #[error("frame at offset {offset} has checksum {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        offset: usize,
        stored: u32,
        computed: u32,
    },
    #[error("frame at offset {offset} has unknown entry kind {kind}")]
    UnknownKind { offset: usize, kind: u8 },
    #[error("frame at offset {offset} has non-zero reserved bits")]
    ReservedBits { offset: usize },
    #[error("frame at offset {offset} holds index {got}, expected {expected}")]
    NotContiguous {
        offset: usize,
        expected: LogIndex,
        got: LogIndex,
    },
}

/// The fields of one decoded frame header; the payload is
/// `buf[offset + FRAME_HEADER_BYTES .. offset + frame_bytes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_bytes: usize,
    pub index: LogIndex,
    pub term: Term,
    pub kind: EntryKind,
    pub producer: Option<ProducerSeq>,
}

/// Bytes the frame of `entry` takes.
pub fn frame_bytes(entry: &Entry) -> usize {
    FRAME_HEADER_BYTES + entry.payload.len()
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Writes the frame of `entry` into `dst`, which must be exactly
/// `frame_bytes(entry)` long (the caller sized it; checked in debug builds).
pub fn write_frame(entry: &Entry, dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), frame_bytes(entry));
    debug_assert!(dst.len() <= FRAME_BYTES_MAX);
    let (header, payload) = dst.split_at_mut(FRAME_HEADER_BYTES);
    header[OFFSET_LEN..OFFSET_LEN + 4].copy_from_slice(&(frame_bytes(entry) as u32).to_le_bytes());
    header[OFFSET_INDEX..OFFSET_INDEX + 8].copy_from_slice(&entry.index.to_le_bytes());
    header[OFFSET_TERM..OFFSET_TERM + 8].copy_from_slice(&entry.term.to_le_bytes());
    header[OFFSET_KIND] = entry.kind as u8;
    let (flags, producer) = match entry.producer {
        Some(p) => (FLAG_HAS_PRODUCER, p),
        None => (
            0,
            ProducerSeq {
                producer_id: 0,
                sequence: 0,
            },
        ),
    };
    header[OFFSET_FLAGS] = flags;
    header[OFFSET_RESERVED..OFFSET_PRODUCER_ID].fill(0);
    header[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]
        .copy_from_slice(&producer.producer_id.to_le_bytes());
    header[OFFSET_SEQUENCE..OFFSET_SEQUENCE + 8].copy_from_slice(&producer.sequence.to_le_bytes());
    payload.copy_from_slice(&entry.payload);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[OFFSET_LEN..]);
    hasher.update(payload);
    header[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Appends the frames of `entries` to `out`, in order.
pub fn encode_entries(entries: &[Entry], out: &mut BytesMut) {
    let total: usize = entries.iter().map(frame_bytes).sum();
    out.reserve(total);
    for entry in entries {
        let start = out.len();
        out.put_bytes(0, frame_bytes(entry));
        write_frame(entry, &mut out[start..]);
    }
}

/// True if the 8 bytes at `offset` (checksum and length) are zero: the
/// end-of-data mark of a segment. False if fewer than 8 bytes remain.
pub fn is_end_mark(buf: &[u8], offset: usize) -> bool {
    matches!(buf.get(offset..offset + 8), Some(word) if word.iter().all(|b| *b == 0))
}

/// Decodes the frame header at `offset` of `buf`. With `check_crc` the
/// checksum over the header and payload is verified too.
#[inline]
pub fn decode_header(
    buf: &[u8],
    offset: usize,
    check_crc: bool,
) -> Result<FrameHeader, FrameError> {
    let available = buf.len().saturating_sub(offset);
    if available < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            offset,
            available,
            needed: FRAME_HEADER_BYTES,
        });
    }
    let frame_bytes = read_u32(buf, offset + OFFSET_LEN) as usize;
    if !(FRAME_HEADER_BYTES..=FRAME_BYTES_MAX).contains(&frame_bytes) {
        return Err(FrameError::BadLength {
            offset,
            frame_bytes: frame_bytes as u64,
        });
    }
    if available < frame_bytes {
        return Err(FrameError::Truncated {
            offset,
            available,
            needed: frame_bytes,
        });
    }
    let frame = buf
        .get(offset..offset + frame_bytes)
        .ok_or(FrameError::Truncated {
            offset,
            available,
            needed: frame_bytes,
        })?;
    if check_crc {
        let stored = read_u32(frame, OFFSET_CRC);
        let computed = crc32fast::hash(frame.get(OFFSET_LEN..).unwrap_or_default());
        if stored != computed {
            return Err(FrameError::BadChecksum {
                offset,
                stored,
                computed,
            });
        }
    }
    let kind_byte = frame.get(OFFSET_KIND).copied().unwrap_or(0);
    let kind = EntryKind::from_u8(kind_byte).ok_or(FrameError::UnknownKind {
        offset,
        kind: kind_byte,
    })?;
    let flags = frame.get(OFFSET_FLAGS).copied().unwrap_or(0);
    let reserved = frame
        .get(OFFSET_RESERVED..OFFSET_PRODUCER_ID)
        .unwrap_or_default();
    if flags & !FLAG_HAS_PRODUCER != 0 || reserved.iter().any(|b| *b != 0) {
        return Err(FrameError::ReservedBits { offset });
    }
    let producer = if flags & FLAG_HAS_PRODUCER != 0 {
        Some(ProducerSeq {
            producer_id: read_u64(frame, OFFSET_PRODUCER_ID),
            sequence: read_u64(frame, OFFSET_SEQUENCE),
        })
    } else {
        if read_u64(frame, OFFSET_PRODUCER_ID) != 0 || read_u64(frame, OFFSET_SEQUENCE) != 0 {
            return Err(FrameError::ReservedBits { offset });
        }
        None
    };
    Ok(FrameHeader {
        frame_bytes,
        index: read_u64(frame, OFFSET_INDEX),
        term: read_u64(frame, OFFSET_TERM),
        kind,
        producer,
    })
}

/// Reads only the term of the frame at `offset` (no checks beyond bounds).
pub(crate) fn peek_term(buf: &[u8], offset: usize) -> Term {
    read_u64(buf, offset + OFFSET_TERM)
}

/// Decodes every frame of `bytes` (which must hold whole frames only), with
/// checksums verified; payloads are zero-copy slices of `bytes`. Entries must
/// carry consecutive indexes.
pub fn decode_frames(bytes: &Bytes) -> Result<Vec<Entry>, FrameError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let header = decode_header(bytes, offset, true)?;
        if let Some(prev) = entries.last().map(|e: &Entry| e.index) {
            // Indexes come from a peer or the disk: u64::MAX has no successor
            // (reported as expecting u64::MAX again, which no frame matches).
            let expected = prev.checked_add(1);
            if Some(header.index) != expected {
                return Err(FrameError::NotContiguous {
                    offset,
                    expected: expected.unwrap_or(prev),
                    got: header.index,
                });
            }
        }
        entries.push(Entry {
            index: header.index,
            term: header.term,
            kind: header.kind,
            producer: header.producer,
            payload: bytes.slice(offset + FRAME_HEADER_BYTES..offset + header.frame_bytes),
        });
        // In bounds: decode_header checked the frame fits in `bytes`.
        offset += header.frame_bytes;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::data(7, 2, Bytes::from_static(b"hello")),
            Entry::noop(8, 2),
            Entry {
                index: 9,
                term: 3,
                kind: EntryKind::Data,
                producer: Some(ProducerSeq {
                    producer_id: 42,
                    sequence: 5,
                }),
                payload: Bytes::from_static(b"\xff\x00binary"),
            },
        ]
    }

    /// storage-format.md 2.2: the frame layout, byte for byte.
    #[test]
    fn a_frame_is_laid_out_exactly_as_the_format_document_says() {
        let mut out = BytesMut::new();
        encode_entries(&[Entry::data(1, 2, Bytes::from_static(b"ab"))], &mut out);
        let mut expected = vec![0u8; 4];
        expected.extend_from_slice(&50u32.to_le_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(b"ab");
        let crc = crc32fast::hash(&expected[4..]);
        expected[0..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(&out[..], &expected[..]);
        assert_eq!(
            crc32fast::hash(b"123456789"),
            0xCBF4_3926,
            "CRC-32/IEEE as documented"
        );
    }

    #[test]
    fn frames_round_trip_through_the_codec() {
        let mut out = BytesMut::new();
        encode_entries(&sample(), &mut out);
        assert_eq!(decode_frames(&out.freeze()), Ok(sample()));
    }

    #[test]
    fn decoding_rejects_every_truncation_and_every_bit_flip_without_panicking() {
        let mut out = BytesMut::new();
        encode_entries(&sample(), &mut out);
        let bytes = out.freeze();
        for len in 0..bytes.len() {
            let prefix = bytes.slice(..len);
            let decoded = decode_frames(&prefix);
            // A prefix that ends on a frame boundary decodes to fewer entries.
            if let Ok(entries) = decoded {
                assert!(entries.len() < 3);
            }
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(
                decode_frames(&Bytes::from(flipped)),
                Ok(sample()),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn decoding_a_huge_declared_length_is_an_error_not_an_allocation() {
        let mut frame = vec![0u8; FRAME_HEADER_BYTES];
        frame[OFFSET_LEN..OFFSET_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frames(&Bytes::from(frame)),
            Err(FrameError::BadLength { offset: 0, .. })
        ));
    }
}
