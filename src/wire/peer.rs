//! The peer protocol (ALPN `raftlog-peer/1`): the messages Raft cores
//! exchange.
//!
//! Body: `version: u8 = 1, type: u8, fields`, integers little-endian. The
//! sender's id is not in Raft messages: the transport knows it from the
//! authenticated connection and the stream header it checks against the
//! peer's certificate (`net::peers`). Entries inside AppendEntries use
//! [`super::entries`]. An AppendEntries body must stay within
//! [`super::FRAME_BYTES_MAX`]: see [`append_entries_bytes_worst_case`].

use bytes::{BufMut, Bytes, BytesMut};

use super::entries::{decode_entries, encode_entries};
use super::{decode_header, expect_end, read, WireError, PROTOCOL_VERSION};
use crate::raft::message::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, InstallLogStart, InstallLogStartResponse,
    Message, RejectHint, RequestVote, RequestVoteResponse, TimeoutNow,
};
use crate::raft::{TermProbe, TermProbeResponse};
use crate::types::{LogStart, Membership};

/// Message type bytes of the peer protocol (stable; see docs/protocol.md).
pub mod types {
    // 0x01 is reserved (an early draft's hello; the transport's stream header
    // took its job).
    pub const REQUEST_VOTE: u8 = 0x10;
    pub const REQUEST_VOTE_RESPONSE: u8 = 0x11;
    pub const APPEND_ENTRIES: u8 = 0x12;
    pub const APPEND_ENTRIES_RESPONSE: u8 = 0x13;
    pub const TIMEOUT_NOW: u8 = 0x14;
    pub const INSTALL_LOG_START: u8 = 0x15;
    pub const INSTALL_LOG_START_RESPONSE: u8 = 0x16;
    pub const TERM_PROBE: u8 = 0x17;
    pub const TERM_PROBE_RESPONSE: u8 = 0x18;
}

/// Bytes of an AppendEntries body before its entry block: header, four
/// u64 fields and the block's u32 length.
pub const APPEND_ENTRIES_HEADER_BYTES: usize = super::MESSAGE_HEADER_BYTES + 4 * 8 + 4;

/// The largest AppendEntries body a leader can build when it stops adding
/// entries once their payloads reach `payload_budget_bytes` (so it may
/// overshoot by one entry of up to `record_bytes_max`) and sends at most
/// `entries_max` entries. Configurations must keep this within
/// [`super::FRAME_BYTES_MAX`], or followers refuse the batch.
pub const fn append_entries_bytes_worst_case(
    payload_budget_bytes: u64,
    record_bytes_max: u64,
    entries_max: u64,
) -> u64 {
    APPEND_ENTRIES_HEADER_BYTES as u64
        + payload_budget_bytes
        + record_bytes_max
        + entries_max * super::entries::ENTRY_HEADER_BYTES as u64
}

// The defaults of the runtime (1 MiB budget, 4096 entries) with the largest
// configurable record fit a frame.
const _: () = assert!(
    append_entries_bytes_worst_case(1 << 20, super::RECORD_BYTES_MAX_LIMIT, 4096)
        <= super::FRAME_BYTES_MAX as u64
);

const VOTE_FLAG_PRE_VOTE: u8 = 1 << 0;
const VOTE_FLAG_LEADERSHIP_TRANSFER: u8 = 1 << 1;
const VOTE_RESPONSE_FLAG_PRE_VOTE: u8 = 1 << 0;
const VOTE_RESPONSE_FLAG_GRANTED: u8 = 1 << 1;
const OUTCOME_ACCEPTED: u8 = 1;
const OUTCOME_REJECTED: u8 = 2;
/// Set in the outcome byte when the follower is repairing a damaged log.
const OUTCOME_FLAG_REPAIRING: u8 = 0x80;
const HINT_LOG_TOO_SHORT: u8 = 1;
const HINT_CONFLICTING_TERM: u8 = 2;

/// Which of a peer connection's two streams a frame travels on, so votes and
/// heartbeats never wait behind a large replication batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PeerLane {
    /// Votes, heartbeats, responses, TimeoutNow.
    Control = 1,
    /// AppendEntries carrying entries, InstallLogStart.
    Replication = 2,
}

impl PeerLane {
    /// The lane `message` belongs on.
    pub fn of(message: &Message) -> PeerLane {
        match message {
            Message::AppendEntries(m) if !m.entries.is_empty() => PeerLane::Replication,
            Message::InstallLogStart(_) => PeerLane::Replication,
            _ => PeerLane::Control,
        }
    }
}

/// The body of `message` as one buffer (without the length prefix).
pub fn encode_message(message: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode_message_into(message, &mut out);
    out.freeze()
}

/// Decodes exactly one body; entry payloads are slices of `body`.
pub fn decode_message(mut body: Bytes) -> Result<Message, WireError> {
    let body = &mut body;
    let message = match decode_header(body)? {
        types::REQUEST_VOTE => {
            let term = read::u64(body, "RequestVote.term")?;
            let last_log_index = read::u64(body, "RequestVote.last_log_index")?;
            let last_log_term = read::u64(body, "RequestVote.last_log_term")?;
            let flags = read::flags(
                body,
                VOTE_FLAG_PRE_VOTE | VOTE_FLAG_LEADERSHIP_TRANSFER,
                "RequestVote.flags",
            )?;
            Message::RequestVote(RequestVote {
                term,
                last_log_index,
                last_log_term,
                pre_vote: flags & VOTE_FLAG_PRE_VOTE != 0,
                leadership_transfer: flags & VOTE_FLAG_LEADERSHIP_TRANSFER != 0,
            })
        }
        types::REQUEST_VOTE_RESPONSE => {
            let term = read::u64(body, "RequestVoteResponse.term")?;
            let flags = read::flags(
                body,
                VOTE_RESPONSE_FLAG_PRE_VOTE | VOTE_RESPONSE_FLAG_GRANTED,
                "RequestVoteResponse.flags",
            )?;
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                pre_vote: flags & VOTE_RESPONSE_FLAG_PRE_VOTE != 0,
                granted: flags & VOTE_RESPONSE_FLAG_GRANTED != 0,
            })
        }
        types::APPEND_ENTRIES => Message::AppendEntries(decode_append_entries(body)?),
        types::APPEND_ENTRIES_RESPONSE => {
            let term = read::u64(body, "AppendEntriesResponse.term")?;
            let (outcome, repairing) = decode_outcome(body)?;
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                outcome,
                repairing,
            })
        }
        types::TIMEOUT_NOW => Message::TimeoutNow(TimeoutNow {
            term: read::u64(body, "TimeoutNow.term")?,
        }),
        types::INSTALL_LOG_START => {
            let term = read::u64(body, "InstallLogStart.term")?;
            let first_index = read::u64(body, "InstallLogStart.first_index")?;
            let prev_term = read::u64(body, "InstallLogStart.prev_term")?;
            if first_index == 0 {
                return Err(WireError::Invalid {
                    what: "InstallLogStart.first_index (entries start at 1)",
                });
            }
            let membership = read::bytes_u32(body, "InstallLogStart.membership")?;
            let membership = Membership::decode(&membership)?;
            // Opaque here: the server decodes (and checks) it at the reset.
            let producers = read::bytes_u32(body, "InstallLogStart.producers")?;
            Message::InstallLogStart(InstallLogStart {
                term,
                log_start: LogStart {
                    first_index,
                    prev_term,
                    membership,
                    producers,
                },
            })
        }
        types::INSTALL_LOG_START_RESPONSE => {
            let term = read::u64(body, "InstallLogStartResponse.term")?;
            let match_index = read::u64(body, "InstallLogStartResponse.match_index")?;
            Message::InstallLogStartResponse(InstallLogStartResponse { term, match_index })
        }
        types::TERM_PROBE => {
            let nonce = read::u64(body, "TermProbe.nonce")?;
            Message::TermProbe(TermProbe { nonce })
        }
        types::TERM_PROBE_RESPONSE => {
            let term = read::u64(body, "TermProbeResponse.term")?;
            let nonce = read::u64(body, "TermProbeResponse.nonce")?;
            Message::TermProbeResponse(TermProbeResponse { term, nonce })
        }
        unknown => return Err(WireError::UnknownType(unknown)),
    };
    expect_end(body)?;
    Ok(message)
}

/// Appends the body of `message` to `out` (without the length prefix).
pub fn encode_message_into(message: &Message, out: &mut BytesMut) {
    out.put_u8(PROTOCOL_VERSION);
    match message {
        Message::RequestVote(m) => {
            out.put_u8(types::REQUEST_VOTE);
            out.put_u64_le(m.term);
            out.put_u64_le(m.last_log_index);
            out.put_u64_le(m.last_log_term);
            let mut flags = 0;
            if m.pre_vote {
                flags |= VOTE_FLAG_PRE_VOTE;
            }
            if m.leadership_transfer {
                flags |= VOTE_FLAG_LEADERSHIP_TRANSFER;
            }
            out.put_u8(flags);
        }
        Message::RequestVoteResponse(m) => {
            out.put_u8(types::REQUEST_VOTE_RESPONSE);
            out.put_u64_le(m.term);
            let mut flags = 0;
            if m.pre_vote {
                flags |= VOTE_RESPONSE_FLAG_PRE_VOTE;
            }
            if m.granted {
                flags |= VOTE_RESPONSE_FLAG_GRANTED;
            }
            out.put_u8(flags);
        }
        Message::AppendEntries(m) => {
            out.put_u8(types::APPEND_ENTRIES);
            out.put_u64_le(m.term);
            out.put_u64_le(m.prev_log_index);
            out.put_u64_le(m.prev_log_term);
            out.put_u64_le(m.leader_commit);
            let length_at = out.len();
            out.put_u32_le(0); // block length, patched once the block is written
            encode_entries(&m.entries, out);
            let block_bytes = out.len() - length_at - 4;
            debug_assert!(
                block_bytes <= super::FRAME_BYTES_MAX,
                "AppendEntries over the frame limit"
            );
            if let Some(slot) = out.get_mut(length_at..length_at + 4) {
                slot.copy_from_slice(&(block_bytes as u32).to_le_bytes());
            }
        }
        Message::AppendEntriesResponse(m) => {
            out.put_u8(types::APPEND_ENTRIES_RESPONSE);
            out.put_u64_le(m.term);
            let flags = if m.repairing {
                OUTCOME_FLAG_REPAIRING
            } else {
                0
            };
            match m.outcome {
                AppendOutcome::Accepted { match_index } => {
                    out.put_u8(OUTCOME_ACCEPTED | flags);
                    out.put_u64_le(match_index);
                }
                AppendOutcome::Rejected {
                    rejected_prev_index,
                    hint,
                } => {
                    out.put_u8(OUTCOME_REJECTED | flags);
                    out.put_u64_le(rejected_prev_index);
                    match hint {
                        RejectHint::LogTooShort { last_index } => {
                            out.put_u8(HINT_LOG_TOO_SHORT);
                            out.put_u64_le(last_index);
                        }
                        RejectHint::ConflictingTerm { term, first_index } => {
                            out.put_u8(HINT_CONFLICTING_TERM);
                            out.put_u64_le(term);
                            out.put_u64_le(first_index);
                        }
                    }
                }
            }
        }
        Message::TimeoutNow(m) => {
            out.put_u8(types::TIMEOUT_NOW);
            out.put_u64_le(m.term);
        }
        Message::InstallLogStart(m) => {
            out.put_u8(types::INSTALL_LOG_START);
            out.put_u64_le(m.term);
            out.put_u64_le(m.log_start.first_index);
            out.put_u64_le(m.log_start.prev_term);
            let membership = m.log_start.membership.to_bytes();
            out.put_u32_le(membership.len() as u32);
            out.put_slice(&membership);
            // The server keeps it at most SNAPSHOT_BYTES_MAX: fits a u32.
            out.put_u32_le(m.log_start.producers.len() as u32);
            out.put_slice(&m.log_start.producers);
        }
        Message::InstallLogStartResponse(m) => {
            out.put_u8(types::INSTALL_LOG_START_RESPONSE);
            out.put_u64_le(m.term);
            out.put_u64_le(m.match_index);
        }
        Message::TermProbe(m) => {
            out.put_u8(types::TERM_PROBE);
            out.put_u64_le(m.nonce);
        }
        Message::TermProbeResponse(m) => {
            out.put_u8(types::TERM_PROBE_RESPONSE);
            out.put_u64_le(m.term);
            out.put_u64_le(m.nonce);
        }
    }
}

fn decode_append_entries(body: &mut Bytes) -> Result<AppendEntries, WireError> {
    let term = read::u64(body, "AppendEntries.term")?;
    let prev_log_index = read::u64(body, "AppendEntries.prev_log_index")?;
    let prev_log_term = read::u64(body, "AppendEntries.prev_log_term")?;
    let leader_commit = read::u64(body, "AppendEntries.leader_commit")?;
    let mut block = read::bytes_u32(body, "AppendEntries.entries")?;
    let entries = decode_entries(&mut block)?;
    if let Some(first) = entries.first() {
        if Some(first.index) != prev_log_index.checked_add(1) {
            return Err(WireError::Invalid {
                what: "AppendEntries first entry index (not prev_log_index + 1)",
            });
        }
    }
    Ok(AppendEntries {
        term,
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
    })
}

fn decode_outcome(body: &mut Bytes) -> Result<(AppendOutcome, bool), WireError> {
    let byte = read::u8(body, "AppendEntriesResponse.outcome")?;
    let repairing = byte & OUTCOME_FLAG_REPAIRING != 0;
    let outcome = match byte & !OUTCOME_FLAG_REPAIRING {
        OUTCOME_ACCEPTED => Ok(AppendOutcome::Accepted {
            match_index: read::u64(body, "AppendEntriesResponse.match_index")?,
        }),
        OUTCOME_REJECTED => {
            let rejected_prev_index = read::u64(body, "AppendEntriesResponse.rejected_prev_index")?;
            let hint = match read::u8(body, "AppendEntriesResponse.hint")? {
                HINT_LOG_TOO_SHORT => RejectHint::LogTooShort {
                    last_index: read::u64(body, "AppendEntriesResponse.last_index")?,
                },
                HINT_CONFLICTING_TERM => RejectHint::ConflictingTerm {
                    term: read::u64(body, "AppendEntriesResponse.conflict_term")?,
                    first_index: read::u64(body, "AppendEntriesResponse.conflict_first_index")?,
                },
                _ => {
                    return Err(WireError::Invalid {
                        what: "AppendEntriesResponse.hint",
                    })
                }
            };
            Ok(AppendOutcome::Rejected {
                rejected_prev_index,
                hint,
            })
        }
        _ => Err(WireError::Invalid {
            what: "AppendEntriesResponse.outcome",
        }),
    }?;
    Ok((outcome, repairing))
}
