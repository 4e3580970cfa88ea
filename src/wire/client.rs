//! The client protocol (ALPN `raftlog-client/1`): append, consume, status and
//! admin requests, their responses, and the typed errors a node answers with.
//!
//! A client opens one bidirectional stream per request and sends one request
//! body; the node answers with one response body (append, status, admin), or
//! with a stream of `RecordBatch` bodies closed by `ConsumeEnd` or an error
//! (consume). Body: `version: u8 = 1, type: u8, fields`, integers
//! little-endian; optional fields are always present, zero when absent, with a
//! flag bit saying whether they are set. Records are zero-copy slices of the
//! received body.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::read::{self, put_string_truncated};
use super::{
    decode_header, expect_end, WireError, FRAME_BYTES_MAX, MESSAGE_HEADER_BYTES, PROTOCOL_VERSION,
};
use crate::types::{
    AppendedIndexes, LogIndex, Membership, NodeId, ProducerSeq, Term, ADDR_BYTES_MAX, MEMBERS_MAX,
};

/// Default largest record a node accepts (`--max-record-bytes`).
pub const RECORD_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// The highest value `--max-record-bytes` may be set to: one such record
/// fits in an append request, and in an AppendEntries on top of a full
/// batch (see [`super::peer::append_entries_bytes_worst_case`]).
pub const RECORD_BYTES_MAX_LIMIT: u64 = 8 * 1024 * 1024;
/// Most records one append request may carry.
pub const RECORDS_PER_APPEND_MAX: usize = 16 * 1024;
/// A producer's dedup memory on a node: the newest runs of consecutive
/// sequences at consecutive indexes (one per append at most) it remembers.
/// A re-sent record is answered with its original index only while its run
/// is among them; a publisher keeps at most this many appends in flight so
/// that everything it may resend after a failover is remembered.
pub const PRODUCER_WINDOW_BATCHES_MAX: usize = 1024;
/// ... and the newest records (with a digest of each) it remembers.
pub const PRODUCER_WINDOW_RECORDS_MAX: usize = 4 * RECORDS_PER_APPEND_MAX;
/// Longest free-text reason (`InvalidRequest`, `Internal`, `ChangeRefused`,
/// `PermissionDenied`), in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// Longest human-readable message in an error frame, in bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;

const _: () = assert!(RECORD_BYTES_MAX_DEFAULT <= RECORD_BYTES_MAX_LIMIT);
// One largest record fits an append request.
const _: () = assert!(
    RECORD_BYTES_MAX_LIMIT as usize + APPEND_HEADER_BYTES + APPEND_RECORD_HEADER_BYTES
        <= FRAME_BYTES_MAX
);
// ... and a record batch.
const _: () = assert!(
    RECORD_BYTES_MAX_LIMIT as usize + RECORD_BATCH_HEADER_BYTES + BATCH_RECORD_HEADER_BYTES
        <= FRAME_BYTES_MAX
);
// A full request of empty records fits a frame too.
const _: () = assert!(
    APPEND_HEADER_BYTES + RECORDS_PER_APPEND_MAX * APPEND_RECORD_HEADER_BYTES <= FRAME_BYTES_MAX
);
// A full append always fits the records window, so a publisher never waits forever.
const _: () = assert!(RECORDS_PER_APPEND_MAX <= PRODUCER_WINDOW_RECORDS_MAX);
// Strings are u16-length-prefixed.
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(REASON_BYTES_MAX < ERROR_MESSAGE_BYTES_MAX);
const _: () = assert!(ADDR_BYTES_MAX as usize <= u16::MAX as usize);

/// Message type bytes of the client protocol (stable; see docs/protocol.md).
/// Requests are below 0x80, responses at or above it.
pub mod types {
    pub const APPEND: u8 = 0x01;
    pub const CONSUME: u8 = 0x02;
    pub const STATUS: u8 = 0x03;
    pub const ADD_NODE: u8 = 0x04;
    pub const REMOVE_NODE: u8 = 0x05;
    pub const TRANSFER_LEADER: u8 = 0x06;

    pub const APPENDED: u8 = 0x81;
    pub const RECORDS: u8 = 0x82;
    pub const CONSUME_END: u8 = 0x83;
    pub const STATUS_RESPONSE: u8 = 0x84;
    pub const ADMIN_RESPONSE: u8 = 0x85;
    pub const APPENDED_RUNS: u8 = 0x86;
    pub const ERROR: u8 = 0xFF;
}

/// Bytes of an append request before its records: header, flags, producer
/// id, sequence, record count.
pub const APPEND_HEADER_BYTES: usize = MESSAGE_HEADER_BYTES + 1 + 8 + 8 + 4;
/// Bytes in front of each record of an append request (its u32 length).
pub const APPEND_RECORD_HEADER_BYTES: usize = 4;
/// Bytes of a record batch before its records: header, start index, next
/// index, commit index, count.
pub const RECORD_BATCH_HEADER_BYTES: usize = MESSAGE_HEADER_BYTES + 3 * 8 + 4;
/// Bytes in front of each record of a record batch (index u64, length u32).
pub const BATCH_RECORD_HEADER_BYTES: usize = 8 + 4;
/// Fewest bytes one node takes in a status response (id, role, flags,
/// match index, empty address).
const STATUS_NODE_BYTES_MIN: usize = 8 + 1 + 1 + 8 + 2;

/// What the decoder names the record count of an append request, so a
/// count over [`RECORDS_PER_APPEND_MAX`] maps to [`ErrorResponse::TooManyRecords`].
const WHAT_APPEND_RECORD_COUNT: &str = "Append.record_count";

const APPEND_FLAG_PRODUCER: u8 = 1 << 0;
const CONSUME_FROM_START: u8 = 1;
const CONSUME_FROM_END: u8 = 2;
const CONSUME_FROM_INDEX: u8 = 3;
const CONSUME_FLAG_FOLLOW: u8 = 1 << 0;
const CONSUME_FLAG_LIMIT: u8 = 1 << 1;
const NODE_FLAG_REACHABLE: u8 = 1 << 0;
const NODE_FLAG_REPAIRING: u8 = 1 << 1;
const NODE_FLAG_MATCH_INDEX: u8 = 1 << 2;
const NOT_LEADER_FLAG_ID: u8 = 1 << 0;
const NOT_LEADER_FLAG_ADDR: u8 = 1 << 1;

// ---------------------------------------------------------------- requests

/// Append `records` in order. With `producer`, the first record has
/// `producer.sequence` and the next ones the following sequences, so a
/// retried request is recognised and answered with its original indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    pub producer: Option<ProducerSeq>,
    pub records: Vec<Bytes>,
}

impl AppendRequest {
    /// The error a node answers when this request breaks its limits:
    /// `record_bytes_max` is the node's configured record size limit.
    pub fn check_limits(&self, record_bytes_max: u64) -> Result<(), ErrorResponse> {
        if self.records.len() > RECORDS_PER_APPEND_MAX {
            return Err(ErrorResponse::TooManyRecords {
                count: self.records.len() as u64,
                limit: RECORDS_PER_APPEND_MAX as u64,
            });
        }
        match self
            .records
            .iter()
            .find(|r| r.len() as u64 > record_bytes_max)
        {
            Some(record) => Err(ErrorResponse::RecordTooLarge {
                record_bytes: record.len() as u64,
                limit_bytes: record_bytes_max,
            }),
            None => Ok(()),
        }
    }

    /// Bytes of this request's body.
    pub fn encoded_bytes(&self) -> usize {
        APPEND_HEADER_BYTES
            + self
                .records
                .iter()
                .map(|r| APPEND_RECORD_HEADER_BYTES + r.len())
                .sum::<usize>()
    }
}

/// Where a consumer's cursor begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The node's log start (the oldest record it still has).
    Start,
    /// Just after the commit index the node has when the request arrives.
    End,
    /// This index (records below it are skipped).
    Index(LogIndex),
}

/// Stream committed records from `from`. Without `follow` the stream ends at
/// the commit index the node had when the request arrived; `limit` caps the
/// number of records sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumeRequest {
    pub from: ConsumeFrom,
    pub follow: bool,
    pub limit: Option<u64>,
}

/// A membership change or leadership transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    AddNode { id: NodeId, addr: String },
    RemoveNode { id: NodeId },
    TransferLeader { id: NodeId },
}

/// One request body, the first and only frame a client sends on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    Append(AppendRequest),
    Consume(ConsumeRequest),
    Status,
    Admin(AdminRequest),
}

impl ClientRequest {
    /// Appends the body of this request to `out`. A request the protocol
    /// cannot carry (no records, too many, a record over
    /// [`RECORD_BYTES_MAX_LIMIT`], node id 0, an address over
    /// [`ADDR_BYTES_MAX`]) is refused and `out` is left unchanged.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), WireError> {
        self.check_encodable()?;
        out.put_u8(PROTOCOL_VERSION);
        match self {
            ClientRequest::Append(append) => {
                out.reserve(append.encoded_bytes());
                out.put_u8(types::APPEND);
                let (flags, producer) = match append.producer {
                    Some(producer) => (APPEND_FLAG_PRODUCER, producer),
                    None => (
                        0,
                        ProducerSeq {
                            producer_id: 0,
                            sequence: 0,
                        },
                    ),
                };
                out.put_u8(flags);
                out.put_u64_le(producer.producer_id);
                out.put_u64_le(producer.sequence);
                out.put_u32_le(append.records.len() as u32);
                for record in &append.records {
                    out.put_u32_le(record.len() as u32);
                    out.put_slice(record);
                }
            }
            ClientRequest::Consume(consume) => {
                out.put_u8(types::CONSUME);
                let (from_kind, from_index) = match consume.from {
                    ConsumeFrom::Start => (CONSUME_FROM_START, 0),
                    ConsumeFrom::End => (CONSUME_FROM_END, 0),
                    ConsumeFrom::Index(index) => (CONSUME_FROM_INDEX, index),
                };
                out.put_u8(from_kind);
                out.put_u64_le(from_index);
                let mut flags = 0;
                if consume.follow {
                    flags |= CONSUME_FLAG_FOLLOW;
                }
                if consume.limit.is_some() {
                    flags |= CONSUME_FLAG_LIMIT;
                }
                out.put_u8(flags);
                out.put_u64_le(consume.limit.unwrap_or(0));
            }
            ClientRequest::Status => out.put_u8(types::STATUS),
            ClientRequest::Admin(AdminRequest::AddNode { id, addr }) => {
                out.put_u8(types::ADD_NODE);
                out.put_u64_le(*id);
                put_string_truncated(out, addr, ADDR_BYTES_MAX as usize);
            }
            ClientRequest::Admin(AdminRequest::RemoveNode { id }) => {
                out.put_u8(types::REMOVE_NODE);
                out.put_u64_le(*id);
            }
            ClientRequest::Admin(AdminRequest::TransferLeader { id }) => {
                out.put_u8(types::TRANSFER_LEADER);
                out.put_u64_le(*id);
            }
        }
        Ok(())
    }

    /// The body of this request as one buffer; see [`Self::encode_into`].
    pub fn encode(&self) -> Result<Bytes, WireError> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }

    fn check_encodable(&self) -> Result<(), WireError> {
        match self {
            ClientRequest::Append(append) => {
                if append.records.is_empty() {
                    return Err(WireError::Invalid {
                        what: "Append.records (empty)",
                    });
                }
                if append.records.len() > RECORDS_PER_APPEND_MAX {
                    return Err(WireError::TooLarge {
                        what: WHAT_APPEND_RECORD_COUNT,
                        got: append.records.len() as u64,
                        limit: RECORDS_PER_APPEND_MAX as u64,
                    });
                }
                if let Some(record) = append
                    .records
                    .iter()
                    .find(|r| r.len() as u64 > RECORD_BYTES_MAX_LIMIT)
                {
                    return Err(WireError::TooLarge {
                        what: "Append.record bytes",
                        got: record.len() as u64,
                        limit: RECORD_BYTES_MAX_LIMIT,
                    });
                }
                let body_bytes = append.encoded_bytes();
                if body_bytes > FRAME_BYTES_MAX {
                    return Err(WireError::TooLarge {
                        what: "Append body bytes",
                        got: body_bytes as u64,
                        limit: FRAME_BYTES_MAX as u64,
                    });
                }
            }
            ClientRequest::Consume(_) | ClientRequest::Status => {}
            ClientRequest::Admin(admin) => {
                let (id, addr) = match admin {
                    AdminRequest::AddNode { id, addr } => (*id, Some(addr)),
                    AdminRequest::RemoveNode { id } | AdminRequest::TransferLeader { id } => {
                        (*id, None)
                    }
                };
                if id == 0 {
                    return Err(WireError::Invalid {
                        what: "admin node id (0 is reserved)",
                    });
                }
                if let Some(addr) = addr {
                    if addr.len() > ADDR_BYTES_MAX as usize {
                        return Err(WireError::TooLarge {
                            what: "AddNode.addr bytes",
                            got: addr.len() as u64,
                            limit: u64::from(ADDR_BYTES_MAX),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes exactly one request body; records are slices of `body`.
    pub fn decode(mut body: Bytes) -> Result<ClientRequest, WireError> {
        let body = &mut body;
        let request = match decode_header(body)? {
            types::APPEND => ClientRequest::Append(decode_append(body)?),
            types::CONSUME => ClientRequest::Consume(decode_consume(body)?),
            types::STATUS => ClientRequest::Status,
            types::ADD_NODE => {
                let id = read_node_id(body, "AddNode.id")?;
                let addr = read::string(body, ADDR_BYTES_MAX as usize, "AddNode.addr")?;
                ClientRequest::Admin(AdminRequest::AddNode { id, addr })
            }
            types::REMOVE_NODE => ClientRequest::Admin(AdminRequest::RemoveNode {
                id: read_node_id(body, "RemoveNode.id")?,
            }),
            types::TRANSFER_LEADER => ClientRequest::Admin(AdminRequest::TransferLeader {
                id: read_node_id(body, "TransferLeader.id")?,
            }),
            unknown => return Err(WireError::UnknownType(unknown)),
        };
        expect_end(body)?;
        Ok(request)
    }
}

fn read_node_id(body: &mut Bytes, what: &'static str) -> Result<NodeId, WireError> {
    match read::u64(body, what)? {
        0 => Err(WireError::Invalid { what }),
        id => Ok(id),
    }
}

fn decode_append(body: &mut Bytes) -> Result<AppendRequest, WireError> {
    let flags = read::flags(body, APPEND_FLAG_PRODUCER, "Append.flags")?;
    let producer_id = read::u64(body, "Append.producer_id")?;
    let sequence = read::u64(body, "Append.sequence")?;
    let producer = if flags & APPEND_FLAG_PRODUCER != 0 {
        Some(ProducerSeq {
            producer_id,
            sequence,
        })
    } else if producer_id != 0 || sequence != 0 {
        return Err(WireError::Invalid {
            what: "Append producer fields (set without the flag)",
        });
    } else {
        None
    };
    let count = read::count(
        body,
        APPEND_RECORD_HEADER_BYTES,
        RECORDS_PER_APPEND_MAX,
        WHAT_APPEND_RECORD_COUNT,
    )?;
    if count == 0 {
        return Err(WireError::Invalid {
            what: "Append.records (empty)",
        });
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(read::bytes_u32(body, "Append.record")?);
    }
    Ok(AppendRequest { producer, records })
}

fn decode_consume(body: &mut Bytes) -> Result<ConsumeRequest, WireError> {
    let from_kind = read::u8(body, "Consume.from_kind")?;
    let from_index = read::u64(body, "Consume.from_index")?;
    let from = match from_kind {
        CONSUME_FROM_START | CONSUME_FROM_END if from_index != 0 => {
            return Err(WireError::Invalid {
                what: "Consume.from_index (set without from_kind = index)",
            })
        }
        CONSUME_FROM_START => ConsumeFrom::Start,
        CONSUME_FROM_END => ConsumeFrom::End,
        CONSUME_FROM_INDEX => ConsumeFrom::Index(from_index),
        _ => {
            return Err(WireError::Invalid {
                what: "Consume.from_kind",
            })
        }
    };
    let flags = read::flags(
        body,
        CONSUME_FLAG_FOLLOW | CONSUME_FLAG_LIMIT,
        "Consume.flags",
    )?;
    let limit = read::u64(body, "Consume.limit")?;
    let limit = if flags & CONSUME_FLAG_LIMIT != 0 {
        Some(limit)
    } else if limit != 0 {
        return Err(WireError::Invalid {
            what: "Consume.limit (set without the flag)",
        });
    } else {
        None
    };
    Ok(ConsumeRequest {
        from,
        follow: flags & CONSUME_FLAG_FOLLOW != 0,
        limit,
    })
}

// --------------------------------------------------------------- responses

/// Committed records of the log range `start_index..next_index`, in
/// increasing index order. Indexes may skip: entries that are not records
/// (noop, config) occupy indexes but are not sent, which is why the batch
/// says where it ends. `next_index <= commit_index + 1`: a consumer cursor
/// never passes the commit index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    /// The first index this batch covers; above the requested index when
    /// retention dropped the records before it.
    pub start_index: LogIndex,
    /// Where the next batch starts: one past the last index covered.
    pub next_index: LogIndex,
    /// The sending node's commit index when it sent the batch.
    pub commit_index: LogIndex,
    pub records: Vec<(LogIndex, Bytes)>,
}

impl RecordBatch {
    /// Bytes of this batch's body; a node keeps it under [`FRAME_BYTES_MAX`].
    pub fn encoded_bytes(&self) -> usize {
        RECORD_BATCH_HEADER_BYTES
            + self
                .records
                .iter()
                .map(|(_, r)| BATCH_RECORD_HEADER_BYTES + r.len())
                .sum::<usize>()
    }
}

/// Why a consume stream ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConsumeEndReason {
    /// `limit` records were sent.
    LimitReached = 1,
    /// Without `follow`: every record up to the commit index the node had
    /// when the request arrived was sent.
    CommitIndexReached = 2,
}

/// The last frame of a consume stream that ended normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumeEnd {
    pub reason: ConsumeEndReason,
    /// Where a consumer continuing this stream would start.
    pub next_index: LogIndex,
}

/// A node's role as the status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeRole {
    Leader = 1,
    Follower = 2,
    Candidate = 3,
    Learner = 4,
}

impl NodeRole {
    pub fn from_u8(value: u8) -> Option<NodeRole> {
        match value {
            1 => Some(NodeRole::Leader),
            2 => Some(NodeRole::Follower),
            3 => Some(NodeRole::Candidate),
            4 => Some(NodeRole::Learner),
            _ => None,
        }
    }

    /// The name the status JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Leader => "leader",
            NodeRole::Follower => "follower",
            NodeRole::Candidate => "candidate",
            NodeRole::Learner => "learner",
        }
    }
}

/// One node of the cluster as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub role: NodeRole,
    /// The highest index known replicated on that node (known to a leader only).
    pub match_index: Option<LogIndex>,
    pub reachable: bool,
    /// The node is refetching a damaged range of its log and does not vote.
    pub repairing: bool,
}

/// The answer to a status request: the fields of `raftlog status --output json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub leader: Option<NodeId>,
    pub term: Term,
    pub commit_index: LogIndex,
    pub log_start: LogIndex,
    pub last_index: LogIndex,
    pub nodes: Vec<NodeStatus>,
}

/// One response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    /// The answer to an append: the records got the indexes
    /// `first_index..=last_index`, one each, in order, and are committed.
    Appended {
        first_index: LogIndex,
        last_index: LogIndex,
    },
    /// The answer to an append whose records are not at one range of
    /// indexes (a re-sent batch first appended in pieces, or partly in the
    /// log and partly new): record `i` has the `i`-th index of the runs.
    /// Committed, like `Appended`.
    AppendedRuns(AppendedIndexes),
    Records(RecordBatch),
    ConsumeEnd(ConsumeEnd),
    Status(ClusterStatus),
    /// The answer to an admin request: the membership after the change.
    Admin(Membership),
    Error(ErrorResponse),
}

impl ClientResponse {
    /// The answer for records at `indexes`: the plain `Appended` when they
    /// are one range (what older clients understand), else `AppendedRuns`.
    pub fn appended(indexes: AppendedIndexes) -> ClientResponse {
        match indexes.as_range() {
            Some((first_index, last_index)) => ClientResponse::Appended {
                first_index,
                last_index,
            },
            None => ClientResponse::AppendedRuns(indexes),
        }
    }

    /// Appends the body of this response to `out`. The node keeps a batch
    /// under [`FRAME_BYTES_MAX`] (checked in debug builds); strings over
    /// their limits are cut.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(PROTOCOL_VERSION);
        match self {
            ClientResponse::Appended {
                first_index,
                last_index,
            } => {
                debug_assert!(1 <= *first_index && first_index <= last_index);
                out.put_u8(types::APPENDED);
                out.put_u64_le(*first_index);
                out.put_u64_le(*last_index);
            }
            ClientResponse::AppendedRuns(indexes) => {
                debug_assert!(indexes.count() as usize <= RECORDS_PER_APPEND_MAX);
                out.put_u8(types::APPENDED_RUNS);
                out.put_u32_le(indexes.runs().len() as u32);
                for &(first_index, count) in indexes.runs() {
                    out.put_u64_le(first_index);
                    // At most RECORDS_PER_APPEND_MAX: fits a u32.
                    out.put_u32_le(count as u32);
                }
            }
            ClientResponse::Records(batch) => {
                debug_assert!(batch.records.windows(2).all(|w| w[0].0 < w[1].0));
                debug_assert!(batch.start_index >= 1 && batch.start_index <= batch.next_index);
                debug_assert!(batch.next_index <= batch.commit_index.saturating_add(1));
                out.reserve(batch.encoded_bytes());
                out.put_u8(types::RECORDS);
                out.put_u64_le(batch.start_index);
                out.put_u64_le(batch.next_index);
                out.put_u64_le(batch.commit_index);
                out.put_u32_le(batch.records.len() as u32);
                for (index, record) in &batch.records {
                    out.put_u64_le(*index);
                    out.put_u32_le(record.len() as u32);
                    out.put_slice(record);
                }
            }
            ClientResponse::ConsumeEnd(end) => {
                out.put_u8(types::CONSUME_END);
                out.put_u8(end.reason as u8);
                out.put_u64_le(end.next_index);
            }
            ClientResponse::Status(status) => encode_status(status, out),
            ClientResponse::Admin(membership) => {
                out.put_u8(types::ADMIN_RESPONSE);
                let encoded = membership.to_bytes();
                out.put_u32_le(encoded.len() as u32);
                out.put_slice(&encoded);
            }
            ClientResponse::Error(error) => {
                out.put_u8(types::ERROR);
                error.encode_fields(out);
            }
        }
        debug_assert!(
            out.len() - start <= FRAME_BYTES_MAX,
            "response over the frame limit"
        );
    }

    /// The body of this response as one buffer.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes exactly one response body; records are slices of `body`.
    pub fn decode(mut body: Bytes) -> Result<ClientResponse, WireError> {
        let body = &mut body;
        let response = match decode_header(body)? {
            types::APPENDED => {
                let first_index = read::u64(body, "Appended.first_index")?;
                let last_index = read::u64(body, "Appended.last_index")?;
                if first_index == 0 || last_index < first_index {
                    return Err(WireError::Invalid {
                        what: "Appended index range",
                    });
                }
                ClientResponse::Appended {
                    first_index,
                    last_index,
                }
            }
            types::APPENDED_RUNS => ClientResponse::AppendedRuns(decode_appended_runs(body)?),
            types::RECORDS => ClientResponse::Records(decode_record_batch(body)?),
            types::CONSUME_END => {
                let reason = match read::u8(body, "ConsumeEnd.reason")? {
                    1 => ConsumeEndReason::LimitReached,
                    2 => ConsumeEndReason::CommitIndexReached,
                    _ => {
                        return Err(WireError::Invalid {
                            what: "ConsumeEnd.reason",
                        })
                    }
                };
                let next_index = read::u64(body, "ConsumeEnd.next_index")?;
                ClientResponse::ConsumeEnd(ConsumeEnd { reason, next_index })
            }
            types::STATUS_RESPONSE => ClientResponse::Status(decode_status(body)?),
            types::ADMIN_RESPONSE => {
                let encoded = read::bytes_u32(body, "Membership")?;
                ClientResponse::Admin(Membership::decode(&encoded)?)
            }
            types::ERROR => ClientResponse::Error(ErrorResponse::decode_fields(body)?),
            unknown => return Err(WireError::UnknownType(unknown)),
        };
        expect_end(body)?;
        Ok(response)
    }
}

/// Bytes of one run of an AppendedRuns: first_index u64, count u32.
const APPENDED_RUN_BYTES: usize = 8 + 4;

fn decode_appended_runs(body: &mut Bytes) -> Result<AppendedIndexes, WireError> {
    let run_count = read::count(
        body,
        APPENDED_RUN_BYTES,
        RECORDS_PER_APPEND_MAX,
        "AppendedRuns.run_count",
    )?;
    if run_count == 0 {
        return Err(WireError::Invalid {
            what: "AppendedRuns.run_count (0)",
        });
    }
    let mut indexes = AppendedIndexes::default();
    let mut records = 0u64;
    for _ in 0..run_count {
        let first_index = read::u64(body, "AppendedRuns.first_index")?;
        let count = u64::from(read::u32(body, "AppendedRuns.count")?);
        records = records.saturating_add(count);
        if records > RECORDS_PER_APPEND_MAX as u64 {
            return Err(WireError::Invalid {
                what: "AppendedRuns (more records than an append carries)",
            });
        }
        indexes
            .push_run(first_index, count)
            .ok_or(WireError::Invalid {
                what: "AppendedRuns run (count 0, or an index 0 or over 2^62)",
            })?;
    }
    Ok(indexes)
}

fn decode_record_batch(body: &mut Bytes) -> Result<RecordBatch, WireError> {
    let start_index = read::u64(body, "Records.start_index")?;
    let next_index = read::u64(body, "Records.next_index")?;
    let commit_index = read::u64(body, "Records.commit_index")?;
    if start_index == 0 || next_index < start_index || next_index > commit_index.saturating_add(1) {
        return Err(WireError::Invalid {
            what: "Records range (start_index..next_index not within 1..=commit_index + 1)",
        });
    }
    let count = read::count(
        body,
        BATCH_RECORD_HEADER_BYTES,
        FRAME_BYTES_MAX / BATCH_RECORD_HEADER_BYTES,
        "Records.record_count",
    )?;
    let mut records: Vec<(LogIndex, Bytes)> = Vec::with_capacity(count);
    let mut lowest_allowed = start_index;
    for _ in 0..count {
        let index = read::u64(body, "Records.index")?;
        if index < lowest_allowed || index >= next_index {
            return Err(WireError::Invalid {
                what: "Records.index (not increasing, or outside start_index..next_index)",
            });
        }
        lowest_allowed = index + 1; // no overflow: index < next_index
        records.push((index, read::bytes_u32(body, "Records.record")?));
    }
    Ok(RecordBatch {
        start_index,
        next_index,
        commit_index,
        records,
    })
}

fn encode_status(status: &ClusterStatus, out: &mut BytesMut) {
    debug_assert!(status.nodes.len() <= MEMBERS_MAX as usize);
    out.put_u8(types::STATUS_RESPONSE);
    out.put_u64_le(status.leader.unwrap_or(0));
    out.put_u64_le(status.term);
    out.put_u64_le(status.commit_index);
    out.put_u64_le(status.log_start);
    out.put_u64_le(status.last_index);
    out.put_u32_le(status.nodes.len() as u32);
    for node in &status.nodes {
        out.put_u64_le(node.id);
        out.put_u8(node.role as u8);
        let mut flags = 0;
        if node.reachable {
            flags |= NODE_FLAG_REACHABLE;
        }
        if node.repairing {
            flags |= NODE_FLAG_REPAIRING;
        }
        if node.match_index.is_some() {
            flags |= NODE_FLAG_MATCH_INDEX;
        }
        out.put_u8(flags);
        out.put_u64_le(node.match_index.unwrap_or(0));
        debug_assert!(node.addr.len() <= ADDR_BYTES_MAX as usize);
        put_string_truncated(out, &node.addr, ADDR_BYTES_MAX as usize);
    }
}

fn decode_status(body: &mut Bytes) -> Result<ClusterStatus, WireError> {
    let leader = match read::u64(body, "Status.leader")? {
        0 => None,
        id => Some(id),
    };
    let term = read::u64(body, "Status.term")?;
    let commit_index = read::u64(body, "Status.commit_index")?;
    let log_start = read::u64(body, "Status.log_start")?;
    let last_index = read::u64(body, "Status.last_index")?;
    let count = read::count(
        body,
        STATUS_NODE_BYTES_MIN,
        MEMBERS_MAX as usize,
        "Status.node_count",
    )?;
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        let id = read_node_id(body, "Status.node.id")?;
        let role =
            NodeRole::from_u8(read::u8(body, "Status.node.role")?).ok_or(WireError::Invalid {
                what: "Status.node.role",
            })?;
        let flags = read::flags(
            body,
            NODE_FLAG_REACHABLE | NODE_FLAG_REPAIRING | NODE_FLAG_MATCH_INDEX,
            "Status.node.flags",
        )?;
        let match_index = read::u64(body, "Status.node.match_index")?;
        let match_index = if flags & NODE_FLAG_MATCH_INDEX != 0 {
            Some(match_index)
        } else if match_index != 0 {
            return Err(WireError::Invalid {
                what: "Status.node.match_index (set without the flag)",
            });
        } else {
            None
        };
        let addr = read::string(body, ADDR_BYTES_MAX as usize, "Status.node.addr")?;
        nodes.push(NodeStatus {
            id,
            addr,
            role,
            match_index,
            reachable: flags & NODE_FLAG_REACHABLE != 0,
            repairing: flags & NODE_FLAG_REPAIRING != 0,
        });
    }
    Ok(ClusterStatus {
        leader,
        term,
        commit_index,
        log_start,
        last_index,
        nodes,
    })
}

// ------------------------------------------------------------------ errors

/// Every error a node answers a client with. Each has a stable numeric code
/// ([`ErrorResponse::code`]) and a one-line message (`Display`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorResponse {
    /// This node is not the leader; retry at the leader when it is known.
    #[error("{}", not_leader_message(*leader_id, leader_addr.as_deref()))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("no leader is known right now (election in progress); retry shortly")]
    Unavailable,
    #[error("a record of {record_bytes} bytes is over the limit of {limit_bytes} bytes")]
    RecordTooLarge { record_bytes: u64, limit_bytes: u64 },
    #[error("an append of {count} records is over the limit of {limit} records per request")]
    TooManyRecords { count: u64, limit: u64 },
    #[error("producer {producer_id}: sequence gap, expected sequence {expected}, got {got}")]
    SequenceGap {
        producer_id: u64,
        expected: u64,
        got: u64,
    },
    #[error("the request timed out before it was committed; retrying with the same producer id and sequence is safe")]
    Timeout,
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error(
        "another membership change or leadership transfer is in progress; retry when it is done"
    )]
    ChangeInProgress,
    #[error("membership change refused: {reason}")]
    ChangeRefused { reason: String },
    #[error("node {id} is not a member of the cluster")]
    UnknownNode { id: NodeId },
    #[error("node {id} is already a member of the cluster")]
    AlreadyMember { id: NodeId },
    #[error("the node is shutting down; retry on another node")]
    ShuttingDown,
    #[error("internal error on the node: {reason}")]
    Internal { reason: String },
    #[error("the node does not speak protocol version {requested}; it speaks version {supported}")]
    UnsupportedVersion { requested: u8, supported: u8 },
    #[error("index {requested} is below the log start {log_start}: those records were dropped by retention")]
    BelowLogStart {
        requested: LogIndex,
        log_start: LogIndex,
    },
    /// The caller's certificate does not allow this request: admin requests
    /// need the admin role, and without `--allow-anonymous-clients` every
    /// request needs a client certificate of the cluster CA. Not retryable.
    #[error("permission denied: {reason}")]
    PermissionDenied { reason: String },
    /// The leader's storage is behind (its unsynced bytes are at their
    /// limit): the append was not taken; send it again shortly.
    #[error("the node is busy (its disk is behind); retry shortly")]
    Busy,
    /// The Append re-sends a sequence that is in the log with another
    /// payload: a sequence numbers one record only. Not retryable: the
    /// publisher reused sequences (or a producer id) for new records.
    #[error("producer {producer_id}: sequence {sequence} is already in the log at index {index} with a different payload; a sequence numbers one record only (use new sequences or another producer id for new records)")]
    PayloadMismatch {
        producer_id: u64,
        sequence: u64,
        index: LogIndex,
    },
    /// An error code this build does not know (sent by a newer node); its
    /// message is still the node's one-line explanation.
    #[error("error {code} from the node: {message}")]
    Unrecognized { code: u16, message: String },
}

fn not_leader_message(leader_id: Option<NodeId>, leader_addr: Option<&str>) -> String {
    match (leader_id, leader_addr) {
        (Some(id), Some(addr)) => {
            format!("this node is not the leader; the leader is node {id} at {addr}")
        }
        (Some(id), None) => format!("this node is not the leader; the leader is node {id}"),
        (None, Some(addr)) => format!("this node is not the leader; the leader is at {addr}"),
        (None, None) => "this node is not the leader, and no leader is known".to_string(),
    }
}

/// Stable error codes (see docs/protocol.md); never reused for another meaning.
pub mod error_codes {
    pub const NOT_LEADER: u16 = 1;
    pub const UNAVAILABLE: u16 = 2;
    pub const RECORD_TOO_LARGE: u16 = 3;
    pub const TOO_MANY_RECORDS: u16 = 4;
    pub const SEQUENCE_GAP: u16 = 5;
    pub const TIMEOUT: u16 = 6;
    pub const INVALID_REQUEST: u16 = 7;
    pub const CHANGE_IN_PROGRESS: u16 = 8;
    pub const UNKNOWN_NODE: u16 = 9;
    pub const ALREADY_MEMBER: u16 = 10;
    pub const SHUTTING_DOWN: u16 = 11;
    pub const INTERNAL: u16 = 12;
    pub const UNSUPPORTED_VERSION: u16 = 13;
    pub const BELOW_LOG_START: u16 = 14;
    pub const CHANGE_REFUSED: u16 = 15;
    pub const PERMISSION_DENIED: u16 = 16;
    pub const BUSY: u16 = 17;
    pub const PAYLOAD_MISMATCH: u16 = 18;
    /// Codes below this are known to this build.
    pub const KNOWN_END: u16 = 19;
}

impl ErrorResponse {
    /// The stable numeric code of this error.
    pub fn code(&self) -> u16 {
        use error_codes as c;
        match self {
            ErrorResponse::NotLeader { .. } => c::NOT_LEADER,
            ErrorResponse::Unavailable => c::UNAVAILABLE,
            ErrorResponse::RecordTooLarge { .. } => c::RECORD_TOO_LARGE,
            ErrorResponse::TooManyRecords { .. } => c::TOO_MANY_RECORDS,
            ErrorResponse::SequenceGap { .. } => c::SEQUENCE_GAP,
            ErrorResponse::Timeout => c::TIMEOUT,
            ErrorResponse::InvalidRequest { .. } => c::INVALID_REQUEST,
            ErrorResponse::ChangeInProgress => c::CHANGE_IN_PROGRESS,
            ErrorResponse::UnknownNode { .. } => c::UNKNOWN_NODE,
            ErrorResponse::AlreadyMember { .. } => c::ALREADY_MEMBER,
            ErrorResponse::ShuttingDown => c::SHUTTING_DOWN,
            ErrorResponse::Internal { .. } => c::INTERNAL,
            ErrorResponse::UnsupportedVersion { .. } => c::UNSUPPORTED_VERSION,
            ErrorResponse::BelowLogStart { .. } => c::BELOW_LOG_START,
            ErrorResponse::ChangeRefused { .. } => c::CHANGE_REFUSED,
            ErrorResponse::PermissionDenied { .. } => c::PERMISSION_DENIED,
            ErrorResponse::Busy => c::BUSY,
            ErrorResponse::PayloadMismatch { .. } => c::PAYLOAD_MISMATCH,
            ErrorResponse::Unrecognized { code, .. } => *code,
        }
    }

    /// The error code's name in snake case (`not_leader` for code 1, ...,
    /// `unrecognized` for a code this build does not know): the `outcome`
    /// label of the node's `raftlog_client_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ErrorResponse::NotLeader { .. } => "not_leader",
            ErrorResponse::Unavailable => "unavailable",
            ErrorResponse::RecordTooLarge { .. } => "record_too_large",
            ErrorResponse::TooManyRecords { .. } => "too_many_records",
            ErrorResponse::SequenceGap { .. } => "sequence_gap",
            ErrorResponse::Timeout => "timeout",
            ErrorResponse::InvalidRequest { .. } => "invalid_request",
            ErrorResponse::ChangeInProgress => "change_in_progress",
            ErrorResponse::UnknownNode { .. } => "unknown_node",
            ErrorResponse::AlreadyMember { .. } => "already_member",
            ErrorResponse::ShuttingDown => "shutting_down",
            ErrorResponse::Internal { .. } => "internal",
            ErrorResponse::UnsupportedVersion { .. } => "unsupported_version",
            ErrorResponse::BelowLogStart { .. } => "below_log_start",
            ErrorResponse::ChangeRefused { .. } => "change_refused",
            ErrorResponse::PermissionDenied { .. } => "permission_denied",
            ErrorResponse::Busy => "busy",
            ErrorResponse::PayloadMismatch { .. } => "payload_mismatch",
            ErrorResponse::Unrecognized { .. } => "unrecognized",
        }
    }

    /// True when the same request may succeed if sent again (to the leader,
    /// or after a pause); appends retried with the same producer id and
    /// sequence are never duplicated.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorResponse::NotLeader { .. }
                | ErrorResponse::Unavailable
                | ErrorResponse::Timeout
                | ErrorResponse::ShuttingDown
                | ErrorResponse::ChangeInProgress
                | ErrorResponse::Busy
        )
    }

    /// The error a node answers when a request body did not decode.
    pub fn from_decode_error(error: &WireError) -> ErrorResponse {
        match error {
            WireError::UnsupportedVersion(requested) => ErrorResponse::UnsupportedVersion {
                requested: *requested,
                supported: PROTOCOL_VERSION,
            },
            WireError::TooLarge { what, got, limit } if *what == WHAT_APPEND_RECORD_COUNT => {
                ErrorResponse::TooManyRecords {
                    count: *got,
                    limit: *limit,
                }
            }
            other => ErrorResponse::InvalidRequest {
                reason: other.to_string(),
            },
        }
    }

    /// `code: u16, message: string, fields...` (after the type byte).
    fn encode_fields(&self, out: &mut BytesMut) {
        debug_assert!(
            !matches!(self, ErrorResponse::Unrecognized { code, .. } if *code < error_codes::KNOWN_END),
            "Unrecognized must carry an unknown code"
        );
        out.put_u16_le(self.code());
        let message = match self {
            // Relay a newer node's message as it came, not wrapped again.
            ErrorResponse::Unrecognized { message, .. } => message.clone(),
            known => known.to_string(),
        };
        put_string_truncated(out, &message, ERROR_MESSAGE_BYTES_MAX);
        match self {
            ErrorResponse::NotLeader {
                leader_id,
                leader_addr,
            } => {
                let mut flags = 0;
                if leader_id.is_some() {
                    flags |= NOT_LEADER_FLAG_ID;
                }
                if leader_addr.is_some() {
                    flags |= NOT_LEADER_FLAG_ADDR;
                }
                out.put_u8(flags);
                out.put_u64_le(leader_id.unwrap_or(0));
                put_string_truncated(
                    out,
                    leader_addr.as_deref().unwrap_or_default(),
                    ADDR_BYTES_MAX as usize,
                );
            }
            ErrorResponse::RecordTooLarge {
                record_bytes,
                limit_bytes,
            } => {
                out.put_u64_le(*record_bytes);
                out.put_u64_le(*limit_bytes);
            }
            ErrorResponse::TooManyRecords { count, limit } => {
                out.put_u64_le(*count);
                out.put_u64_le(*limit);
            }
            ErrorResponse::SequenceGap {
                producer_id,
                expected,
                got,
            } => {
                out.put_u64_le(*producer_id);
                out.put_u64_le(*expected);
                out.put_u64_le(*got);
            }
            ErrorResponse::PayloadMismatch {
                producer_id,
                sequence,
                index,
            } => {
                out.put_u64_le(*producer_id);
                out.put_u64_le(*sequence);
                out.put_u64_le(*index);
            }
            ErrorResponse::InvalidRequest { reason }
            | ErrorResponse::Internal { reason }
            | ErrorResponse::ChangeRefused { reason }
            | ErrorResponse::PermissionDenied { reason } => {
                put_string_truncated(out, reason, REASON_BYTES_MAX);
            }
            ErrorResponse::UnknownNode { id } | ErrorResponse::AlreadyMember { id } => {
                out.put_u64_le(*id);
            }
            ErrorResponse::UnsupportedVersion {
                requested,
                supported,
            } => {
                out.put_u8(*requested);
                out.put_u8(*supported);
            }
            ErrorResponse::BelowLogStart {
                requested,
                log_start,
            } => {
                out.put_u64_le(*requested);
                out.put_u64_le(*log_start);
            }
            ErrorResponse::Unavailable
            | ErrorResponse::Timeout
            | ErrorResponse::ChangeInProgress
            | ErrorResponse::ShuttingDown
            | ErrorResponse::Busy
            | ErrorResponse::Unrecognized { .. } => {}
        }
    }

    fn decode_fields(body: &mut Bytes) -> Result<ErrorResponse, WireError> {
        use error_codes as c;
        let code = read::u16(body, "Error.code")?;
        let message = read::string(body, ERROR_MESSAGE_BYTES_MAX, "Error.message")?;
        let error = match code {
            c::NOT_LEADER => {
                let flags = read::flags(
                    body,
                    NOT_LEADER_FLAG_ID | NOT_LEADER_FLAG_ADDR,
                    "NotLeader.flags",
                )?;
                let leader_id = read::u64(body, "NotLeader.leader_id")?;
                let leader_addr =
                    read::string(body, ADDR_BYTES_MAX as usize, "NotLeader.leader_addr")?;
                let leader_id = match (flags & NOT_LEADER_FLAG_ID != 0, leader_id) {
                    (true, 0) => {
                        return Err(WireError::Invalid {
                            what: "NotLeader.leader_id (0 is reserved)",
                        })
                    }
                    (true, id) => Some(id),
                    (false, 0) => None,
                    (false, _) => {
                        return Err(WireError::Invalid {
                            what: "NotLeader.leader_id (set without the flag)",
                        })
                    }
                };
                let leader_addr = if flags & NOT_LEADER_FLAG_ADDR != 0 {
                    Some(leader_addr)
                } else if !leader_addr.is_empty() {
                    return Err(WireError::Invalid {
                        what: "NotLeader.leader_addr (set without the flag)",
                    });
                } else {
                    None
                };
                ErrorResponse::NotLeader {
                    leader_id,
                    leader_addr,
                }
            }
            c::UNAVAILABLE => ErrorResponse::Unavailable,
            c::BUSY => ErrorResponse::Busy,
            c::RECORD_TOO_LARGE => ErrorResponse::RecordTooLarge {
                record_bytes: read::u64(body, "RecordTooLarge.record_bytes")?,
                limit_bytes: read::u64(body, "RecordTooLarge.limit_bytes")?,
            },
            c::TOO_MANY_RECORDS => ErrorResponse::TooManyRecords {
                count: read::u64(body, "TooManyRecords.count")?,
                limit: read::u64(body, "TooManyRecords.limit")?,
            },
            c::SEQUENCE_GAP => ErrorResponse::SequenceGap {
                producer_id: read::u64(body, "SequenceGap.producer_id")?,
                expected: read::u64(body, "SequenceGap.expected")?,
                got: read::u64(body, "SequenceGap.got")?,
            },
            c::PAYLOAD_MISMATCH => ErrorResponse::PayloadMismatch {
                producer_id: read::u64(body, "PayloadMismatch.producer_id")?,
                sequence: read::u64(body, "PayloadMismatch.sequence")?,
                index: read::u64(body, "PayloadMismatch.index")?,
            },
            c::TIMEOUT => ErrorResponse::Timeout,
            c::INVALID_REQUEST => ErrorResponse::InvalidRequest {
                reason: read::string(body, REASON_BYTES_MAX, "InvalidRequest.reason")?,
            },
            c::CHANGE_IN_PROGRESS => ErrorResponse::ChangeInProgress,
            c::UNKNOWN_NODE => ErrorResponse::UnknownNode {
                id: read::u64(body, "UnknownNode.id")?,
            },
            c::ALREADY_MEMBER => ErrorResponse::AlreadyMember {
                id: read::u64(body, "AlreadyMember.id")?,
            },
            c::SHUTTING_DOWN => ErrorResponse::ShuttingDown,
            c::INTERNAL => ErrorResponse::Internal {
                reason: read::string(body, REASON_BYTES_MAX, "Internal.reason")?,
            },
            c::UNSUPPORTED_VERSION => ErrorResponse::UnsupportedVersion {
                requested: read::u8(body, "UnsupportedVersion.requested")?,
                supported: read::u8(body, "UnsupportedVersion.supported")?,
            },
            c::CHANGE_REFUSED => ErrorResponse::ChangeRefused {
                reason: read::string(body, REASON_BYTES_MAX, "ChangeRefused.reason")?,
            },
            c::PERMISSION_DENIED => ErrorResponse::PermissionDenied {
                reason: read::string(body, REASON_BYTES_MAX, "PermissionDenied.reason")?,
            },
            c::BELOW_LOG_START => ErrorResponse::BelowLogStart {
                requested: read::u64(body, "BelowLogStart.requested")?,
                log_start: read::u64(body, "BelowLogStart.log_start")?,
            },
            0 => {
                return Err(WireError::Invalid {
                    what: "Error.code (0)",
                })
            }
            code => {
                // Fields of an unknown code are skipped: its message says it all.
                body.clear();
                ErrorResponse::Unrecognized { code, message }
            }
        };
        Ok(error)
    }
}

impl fmt::Display for ConsumeFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumeFrom::Start => f.write_str("start"),
            ConsumeFrom::End => f.write_str("end"),
            ConsumeFrom::Index(index) => write!(f, "{index}"),
        }
    }
}
