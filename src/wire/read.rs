//! Bounds-checked readers over a body: every read names the field it wanted,
//! so a short body says exactly where it ran out, and nothing panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;

fn need(buf: &Bytes, bytes: usize, what: &'static str) -> Result<(), WireError> {
    if buf.remaining() < bytes {
        Err(WireError::Truncated { what })
    } else {
        Ok(())
    }
}

pub(super) fn u8(buf: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

pub(super) fn u16(buf: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    need(buf, 2, what)?;
    Ok(buf.get_u16_le())
}

pub(super) fn u32(buf: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32_le())
}

pub(super) fn u64(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    need(buf, 8, what)?;
    Ok(buf.get_u64_le())
}

/// Flag bits: any bit outside `known` is invalid (reserved for later versions).
pub(super) fn flags(buf: &mut Bytes, known: u8, what: &'static str) -> Result<u8, WireError> {
    let flags = u8(buf, what)?;
    if flags & !known != 0 {
        return Err(WireError::Invalid { what });
    }
    Ok(flags)
}

/// `len` bytes as a zero-copy slice of the body.
pub(super) fn bytes(buf: &mut Bytes, len: usize, what: &'static str) -> Result<Bytes, WireError> {
    need(buf, len, what)?;
    Ok(buf.split_to(len))
}

/// A `u32`-length-prefixed byte string, zero-copy.
pub(super) fn bytes_u32(buf: &mut Bytes, what: &'static str) -> Result<Bytes, WireError> {
    let len = u32(buf, what)? as usize;
    bytes(buf, len, what)
}

/// A `u16`-length-prefixed UTF-8 string of at most `limit` bytes.
pub(super) fn string(
    buf: &mut Bytes,
    limit: usize,
    what: &'static str,
) -> Result<String, WireError> {
    let len = u16(buf, what)? as usize;
    if len > limit {
        return Err(WireError::TooLarge {
            what,
            got: len as u64,
            limit: limit as u64,
        });
    }
    let raw = bytes(buf, len, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| WireError::Invalid { what })
}

/// A declared element count, refused unless `count * min_element_bytes`
/// could fit in what remains (so a caller may reserve `count` elements) and
/// `count <= limit`.
pub(super) fn count(
    buf: &mut Bytes,
    min_element_bytes: usize,
    limit: usize,
    what: &'static str,
) -> Result<usize, WireError> {
    debug_assert!(min_element_bytes > 0);
    let count = u32(buf, what)? as usize;
    if count > limit {
        return Err(WireError::TooLarge {
            what,
            got: count as u64,
            limit: limit as u64,
        });
    }
    if count.saturating_mul(min_element_bytes) > buf.remaining() {
        return Err(WireError::Truncated { what });
    }
    Ok(count)
}

/// Writes a `u16`-length-prefixed string cut to at most `limit` bytes, on a
/// character boundary (used for human-readable text, where a cut is fine).
pub(super) fn put_string_truncated(out: &mut BytesMut, text: &str, limit: usize) {
    debug_assert!(limit <= u16::MAX as usize);
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.get(..end).unwrap_or_default();
    out.put_u16_le(cut.len() as u16);
    out.put_slice(cut.as_bytes());
}
