//! wire: the byte layout of every message of the peer and client protocols.
//!
//! The transport (`net`) carries each message as one frame on a QUIC stream:
//! a `u32` little-endian length, then that many bytes of body. This module
//! defines the body: `version: u8, type: u8, fields...`, all integers
//! little-endian. `docs/protocol.md` is the full specification.
//!
//! Invariants every decoder here keeps:
//! - it never panics, whatever the bytes;
//! - it never allocates more than the body length justifies: every declared
//!   count or length is checked against the bytes that remain before
//!   anything is reserved;
//! - payloads and records are zero-copy slices of the received body;
//! - the whole body is consumed: trailing bytes are an error, so one
//!   encoding means one message.
//!
//! The codecs know the shape of messages, not Raft's or the server's rules:
//! limits that are runtime configuration (the record size limit) are checked
//! by the server, which answers with a typed [`client::ClientError`].

pub mod client;
pub mod entries;
pub mod peer;

mod read;

use bytes::Bytes;

use crate::types::MembershipDecodeError;

/// The protocol version this build speaks, first byte of every body.
pub const PROTOCOL_VERSION: u8 = 1;
/// ALPN of the peer protocol (node to node).
pub const ALPN_PEER: &[u8] = b"raftlog-peer/1";
/// ALPN of the client protocol (publishers, consumers, status, admin).
pub const ALPN_CLIENT: &[u8] = b"raftlog-client/1";

/// Bytes of the transport's length prefix in front of each body (a `u32`).
pub const FRAME_LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes of `version` and `type` at the start of every body.
pub const MESSAGE_HEADER_BYTES: usize = 2;
/// Largest body (after the length prefix) either side accepts. It bounds
/// what one stream makes a node buffer; an append request of one largest
/// record and an AppendEntries of a full batch fit (asserted below and in
/// `client` and `peer`).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024 + 64 * 1024;

pub use client::{RECORDS_PER_APPEND_MAX, RECORD_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX_LIMIT};

// One largest entry with its AppendEntries header fits a frame.
const _: () = assert!(
    RECORD_BYTES_MAX_LIMIT as usize
        + peer::APPEND_ENTRIES_HEADER_BYTES
        + entries::ENTRY_HEADER_BYTES
        <= FRAME_BYTES_MAX
);
// A body length always fits the transport's u32 prefix.
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// Why a body did not decode (or a message could not be encoded).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated: no room for {what}")]
    Truncated { what: &'static str },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    #[error("{what} is {got}, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        got: u64,
        limit: u64,
    },
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("entry at index {index}: checksum {stored:#010x}, computed {computed:#010x}")]
    EntryChecksum {
        index: u64,
        stored: u32,
        computed: u32,
    },
    #[error("membership: {0}")]
    Membership(#[from] MembershipDecodeError),
}

/// Checks the size, version and type of a body and returns its type byte,
/// leaving `body` at the first field.
fn decode_header(body: &mut Bytes) -> Result<u8, WireError> {
    if body.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            what: "frame body bytes",
            got: body.len() as u64,
            limit: FRAME_BYTES_MAX as u64,
        });
    }
    let version = read::u8(body, "protocol version")?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    read::u8(body, "message type")
}

fn expect_end(body: &Bytes) -> Result<(), WireError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(WireError::TrailingBytes(body.len()))
    }
}
