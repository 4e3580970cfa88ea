//! The peer and client codecs against docs/protocol.md: every message
//! round-trips, every truncation and any random input is refused with a typed
//! error (never a panic), and payloads are zero-copy slices of the body.
//!
//! One u64 seed drives every randomized test and is printed; replay a failure
//! with `PROPTEST_RNG_SEED=<seed> cargo test --profile ci --test wire_codec`.
//! `WIRE_FUZZ_CASES=<n>` sets the number of random bodies per decoder
//! (default 10,000).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use raftlog::raft::message::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, InstallLogStart, InstallLogStartResponse,
    Message, RejectHint, RequestVote, RequestVoteResponse, TermProbe, TermProbeResponse,
    TimeoutNow,
};
use raftlog::types::{AppendedIndexes, Entry, EntryKind, LogStart, Membership, ProducerSeq};
use raftlog::wire::client::{
    error_codes, AdminRequest, AppendRequest, ClientRequest, ClientResponse, ClusterStatus,
    ConsumeEnd, ConsumeEndReason, ConsumeFrom, ConsumeRequest, ErrorResponse, NodeRole, NodeStatus,
    RecordBatch, RECORDS_PER_APPEND_MAX,
};
use raftlog::wire::entries::{decode_entries, encode_entries};
use raftlog::wire::peer::{self, PeerLane};
use raftlog::wire::{WireError, PROTOCOL_VERSION};

// ------------------------------------------------------------ seeded runner

fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let seed = seed();
    eprintln!("{name} seed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(error) = runner.run(&strategy, test) {
        panic!("{name}: {error}\nseed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("WIRE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

// --------------------------------------------------------------- strategies

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn producer() -> impl Strategy<Value = Option<ProducerSeq>> {
    proptest::option::of(
        (any::<u64>(), any::<u64>()).prop_map(|(producer_id, sequence)| ProducerSeq {
            producer_id,
            sequence,
        }),
    )
}

fn kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::Data),
        Just(EntryKind::Config),
        Just(EntryKind::Noop)
    ]
}

fn entries_after(prev_log_index: u64) -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec((any::<u64>(), kind(), producer(), payload()), 0..6).prop_map(
        move |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (term, kind, producer, payload))| Entry {
                    index: prev_log_index + 1 + i as u64,
                    term,
                    kind,
                    producer,
                    payload,
                })
                .collect()
        },
    )
}

fn addr() -> impl Strategy<Value = String> {
    "[a-z0-9.:-]{0,24}|\\PC{0,8}"
}

fn membership() -> impl Strategy<Value = Membership> {
    proptest::collection::btree_map(1..64u64, (addr(), 0..8u8), 0..6).prop_map(|members| {
        let mut membership = Membership::default();
        for (id, (addr, roles)) in members {
            membership.addrs.insert(id, addr);
            if roles & 1 != 0 {
                membership.voters.insert(id);
            }
            if roles & 2 != 0 {
                membership.voters_outgoing.insert(id);
            }
            if roles & 4 != 0 {
                membership.learners.insert(id);
            }
        }
        membership
    })
}

fn message() -> impl Strategy<Value = Message> {
    let u = any::<u64>;
    prop_oneof![
        (u(), u(), u(), any::<bool>(), any::<bool>()).prop_map(
            |(term, last_log_index, last_log_term, pre_vote, leadership_transfer)| {
                Message::RequestVote(RequestVote {
                    term,
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    leadership_transfer,
                })
            }
        ),
        (u(), any::<bool>(), any::<bool>()).prop_map(|(term, pre_vote, granted)| {
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                pre_vote,
                granted,
            })
        }),
        (u(), 0..(1u64 << 40), u(), u()).prop_flat_map(
            |(term, prev_log_index, prev_log_term, leader_commit)| {
                entries_after(prev_log_index).prop_map(move |entries| {
                    Message::AppendEntries(AppendEntries {
                        term,
                        prev_log_index,
                        prev_log_term,
                        entries,
                        leader_commit,
                    })
                })
            }
        ),
        (u(), u(), any::<bool>()).prop_map(|(term, match_index, repairing)| {
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                outcome: AppendOutcome::Accepted { match_index },
                repairing,
            })
        }),
        (u(), u(), u(), any::<bool>()).prop_map(
            |(term, rejected_prev_index, last_index, repairing)| {
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    outcome: AppendOutcome::Rejected {
                        rejected_prev_index,
                        hint: RejectHint::LogTooShort { last_index },
                    },
                    repairing,
                })
            }
        ),
        (u(), u(), u(), u()).prop_map(|(term, rejected_prev_index, conflict, first_index)| {
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                outcome: AppendOutcome::Rejected {
                    rejected_prev_index,
                    hint: RejectHint::ConflictingTerm {
                        term: conflict,
                        first_index,
                    },
                },
                repairing: false,
            })
        }),
        u().prop_map(|term| Message::TimeoutNow(TimeoutNow { term })),
        (u(), 1..u64::MAX, u(), membership(), payload()).prop_map(
            |(term, first_index, prev_term, membership, producers)| {
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
        ),
        (u(), u()).prop_map(|(term, match_index)| {
            Message::InstallLogStartResponse(InstallLogStartResponse { term, match_index })
        }),
        u().prop_map(|nonce| Message::TermProbe(TermProbe { nonce })),
        (u(), u()).prop_map(|(term, nonce)| {
            Message::TermProbeResponse(TermProbeResponse { term, nonce })
        }),
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    let from = prop_oneof![
        Just(ConsumeFrom::Start),
        Just(ConsumeFrom::End),
        any::<u64>().prop_map(ConsumeFrom::Index),
    ];
    prop_oneof![
        (producer(), proptest::collection::vec(payload(), 1..8)).prop_map(|(producer, records)| {
            ClientRequest::Append(AppendRequest { producer, records })
        }),
        (from, any::<bool>(), proptest::option::of(any::<u64>())).prop_map(
            |(from, follow, limit)| ClientRequest::Consume(ConsumeRequest {
                from,
                follow,
                limit
            })
        ),
        Just(ClientRequest::Status),
        (1..u64::MAX, addr())
            .prop_map(|(id, addr)| ClientRequest::Admin(AdminRequest::AddNode { id, addr })),
        (1..u64::MAX).prop_map(|id| ClientRequest::Admin(AdminRequest::RemoveNode { id })),
        (1..u64::MAX).prop_map(|id| ClientRequest::Admin(AdminRequest::TransferLeader { id })),
    ]
}

fn reason() -> impl Strategy<Value = String> {
    "[ -~]{0,40}|\\PC{0,12}"
}

fn error_response() -> impl Strategy<Value = ErrorResponse> {
    let u = any::<u64>;
    prop_oneof![
        (
            proptest::option::of(1..u64::MAX),
            proptest::option::of(addr())
        )
            .prop_map(|(leader_id, leader_addr)| ErrorResponse::NotLeader {
                leader_id,
                leader_addr
            }),
        Just(ErrorResponse::Unavailable),
        (u(), u()).prop_map(
            |(record_bytes, limit_bytes)| ErrorResponse::RecordTooLarge {
                record_bytes,
                limit_bytes
            }
        ),
        (u(), u()).prop_map(|(count, limit)| ErrorResponse::TooManyRecords { count, limit }),
        (u(), u(), u()).prop_map(|(producer_id, expected, got)| ErrorResponse::SequenceGap {
            producer_id,
            expected,
            got
        }),
        Just(ErrorResponse::Timeout),
        reason().prop_map(|reason| ErrorResponse::InvalidRequest { reason }),
        Just(ErrorResponse::ChangeInProgress),
        reason().prop_map(|reason| ErrorResponse::ChangeRefused { reason }),
        reason().prop_map(|reason| ErrorResponse::PermissionDenied { reason }),
        Just(ErrorResponse::Busy),
        (u(), u(), u()).prop_map(|(producer_id, sequence, index)| {
            ErrorResponse::PayloadMismatch {
                producer_id,
                sequence,
                index,
            }
        }),
        u().prop_map(|id| ErrorResponse::UnknownNode { id }),
        u().prop_map(|id| ErrorResponse::AlreadyMember { id }),
        Just(ErrorResponse::ShuttingDown),
        reason().prop_map(|reason| ErrorResponse::Internal { reason }),
        (any::<u8>(), any::<u8>()).prop_map(|(requested, supported)| {
            ErrorResponse::UnsupportedVersion {
                requested,
                supported,
            }
        }),
        (u(), u()).prop_map(|(requested, log_start)| ErrorResponse::BelowLogStart {
            requested,
            log_start
        }),
        (error_codes::KNOWN_END..=u16::MAX, reason())
            .prop_map(|(code, message)| ErrorResponse::Unrecognized { code, message }),
    ]
}

fn record_batch() -> impl Strategy<Value = RecordBatch> {
    (
        1..(1u64 << 40),
        proptest::collection::vec((1..4u64, payload()), 0..8),
        0..3u64,
        0..3u64,
    )
        .prop_map(|(start_index, specs, tail, commit_ahead)| {
            let mut index = start_index;
            let mut records = Vec::new();
            for (gap, record) in specs {
                index += gap - 1; // gaps are non-record entries
                records.push((index, record));
                index += 1;
            }
            let next_index = index + tail;
            RecordBatch {
                start_index,
                next_index,
                commit_index: next_index - 1 + commit_ahead,
                records,
            }
        })
}

fn cluster_status() -> impl Strategy<Value = ClusterStatus> {
    let role = prop_oneof![
        Just(NodeRole::Leader),
        Just(NodeRole::Follower),
        Just(NodeRole::Candidate),
        Just(NodeRole::Learner),
    ];
    let node = (
        1..u64::MAX,
        addr(),
        role,
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, addr, role, match_index, reachable, repairing)| NodeStatus {
                id,
                addr,
                role,
                match_index,
                reachable,
                repairing,
            },
        );
    (
        proptest::option::of(1..u64::MAX),
        any::<(u64, u64, u64, u64)>(),
        proptest::collection::vec(node, 0..6),
    )
        .prop_map(
            |(leader, (term, commit_index, log_start, last_index), nodes)| ClusterStatus {
                leader,
                term,
                commit_index,
                log_start,
                last_index,
                nodes,
            },
        )
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    prop_oneof![
        (1..u64::MAX / 2, 0..1000u64).prop_map(|(first_index, extra)| {
            ClientResponse::Appended {
                first_index,
                last_index: first_index + extra,
            }
        }),
        proptest::collection::vec((1..1u64 << 61, 1..100u64), 1..8).prop_map(|runs| {
            let mut indexes = AppendedIndexes::default();
            for (first_index, count) in runs {
                indexes.push_run(first_index, count).unwrap();
            }
            ClientResponse::AppendedRuns(indexes)
        }),
        record_batch().prop_map(ClientResponse::Records),
        (any::<bool>(), any::<u64>()).prop_map(|(limit, next_index)| {
            ClientResponse::ConsumeEnd(ConsumeEnd {
                reason: if limit {
                    ConsumeEndReason::LimitReached
                } else {
                    ConsumeEndReason::CommitIndexReached
                },
                next_index,
            })
        }),
        cluster_status().prop_map(ClientResponse::Status),
        membership().prop_map(ClientResponse::Admin),
        error_response().prop_map(ClientResponse::Error),
    ]
}

// ----------------------------------------------------------------- helpers

/// True when `inner` lies inside `outer`'s memory: a zero-copy slice.
fn is_slice_of(inner: &Bytes, outer: &Bytes) -> bool {
    let outer_range = outer.as_ptr() as usize..outer.as_ptr() as usize + outer.len();
    inner.is_empty()
        || (outer_range.contains(&(inner.as_ptr() as usize))
            && inner.as_ptr() as usize + inner.len() <= outer_range.end)
}

fn every_prefix_is_refused<T: std::fmt::Debug>(
    body: &Bytes,
    decode: impl Fn(Bytes) -> Result<T, WireError>,
) -> Result<(), TestCaseError> {
    for len in 0..body.len() {
        let decoded = decode(body.slice(..len));
        prop_assert!(
            decoded.is_err(),
            "prefix of {len} of {} bytes decoded as {decoded:?}",
            body.len()
        );
    }
    Ok(())
}

// -------------------------------------------------------------- round trips

#[test]
fn every_peer_message_round_trips_and_payloads_are_slices_of_the_body() {
    run("peer round trip", 2_000, message(), |message| {
        let body = peer::encode_message(&message);
        let decoded = peer::decode_message(body.clone());
        prop_assert_eq!(decoded.as_ref(), Ok(&message));
        if let Ok(Message::AppendEntries(append)) = &decoded {
            for entry in &append.entries {
                prop_assert!(is_slice_of(&entry.payload, &body));
            }
        }
        let mut into = BytesMut::from(&b"prefix"[..]);
        peer::encode_message_into(&message, &mut into);
        prop_assert_eq!(&into[6..], &body[..]);
        Ok(())
    });
}

#[test]
fn only_append_entries_with_entries_and_install_log_start_take_the_replication_lane() {
    run("lanes", 500, message(), |message| {
        let replication = match &message {
            Message::AppendEntries(append) => !append.entries.is_empty(),
            Message::InstallLogStart(_) => true,
            _ => false,
        };
        prop_assert_eq!(PeerLane::of(&message) == PeerLane::Replication, replication);
        Ok(())
    });
}

#[test]
fn every_client_request_round_trips_and_records_are_slices_of_the_body() {
    run(
        "client request round trip",
        2_000,
        client_request(),
        |request| {
            let body = request
                .encode()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded = ClientRequest::decode(body.clone());
            prop_assert_eq!(decoded.as_ref(), Ok(&request));
            if let Ok(ClientRequest::Append(append)) = &decoded {
                for record in &append.records {
                    prop_assert!(is_slice_of(record, &body));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn every_client_response_round_trips_and_records_are_slices_of_the_body() {
    run(
        "client response round trip",
        2_000,
        client_response(),
        |response| {
            let body = response.encode();
            let decoded = ClientResponse::decode(body.clone());
            prop_assert_eq!(decoded.as_ref(), Ok(&response));
            if let Ok(ClientResponse::Records(batch)) = &decoded {
                for (_, record) in &batch.records {
                    prop_assert!(is_slice_of(record, &body));
                }
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------- truncations

#[test]
fn every_truncation_of_a_peer_message_is_an_error() {
    run("peer truncation", 300, message(), |frame| {
        every_prefix_is_refused(&peer::encode_message(&frame), peer::decode_message)
    });
}

#[test]
fn every_truncation_of_a_client_request_is_an_error() {
    run("request truncation", 300, client_request(), |request| {
        let body = request
            .encode()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        every_prefix_is_refused(&body, ClientRequest::decode)
    });
}

#[test]
fn every_truncation_of_a_client_response_is_an_error() {
    run("response truncation", 300, client_response(), |response| {
        let body = response.encode();
        // An error of an unknown code ends after its message: its fields are
        // unknown to this build, so only cuts inside code or message show.
        if let ClientResponse::Error(ErrorResponse::Unrecognized { .. }) = response {
            return Ok(());
        }
        every_prefix_is_refused(&body, ClientResponse::decode)
    });
}

#[test]
fn every_byte_appended_to_a_valid_body_is_refused_as_trailing() {
    run(
        "trailing bytes",
        500,
        (message(), client_request()),
        |(frame, request)| {
            let mut body = BytesMut::from(&peer::encode_message(&frame)[..]);
            body.put_u8(0);
            prop_assert!(peer::decode_message(body.freeze()).is_err());
            let mut body = BytesMut::new();
            request
                .encode_into(&mut body)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            body.put_u8(0);
            prop_assert_eq!(
                ClientRequest::decode(body.freeze()),
                Err(WireError::TrailingBytes(1))
            );
            Ok(())
        },
    );
}

// ----------------------------------------------------------------- fuzzing

/// Random bodies, half of them starting with a valid version and a known
/// type so the decoders get past the header.
fn random_body(types: &'static [u8]) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..96).prop_map(Bytes::from),
        (
            proptest::sample::select(types),
            proptest::collection::vec(any::<u8>(), 0..96)
        )
            .prop_map(|(kind, rest)| {
                let mut body = vec![PROTOCOL_VERSION, kind];
                body.extend(rest);
                Bytes::from(body)
            }),
    ]
}

const PEER_TYPES: &[u8] = &[0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16];
const CLIENT_TYPES: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0xFF,
];

#[test]
fn random_bytes_never_panic_either_decoder() {
    run(
        "random bodies",
        fuzz_cases(),
        (random_body(PEER_TYPES), random_body(CLIENT_TYPES)),
        |(peer_body, client_body)| {
            let _ = peer::decode_message(peer_body.clone());
            let _ = ClientRequest::decode(client_body.clone());
            let _ = ClientResponse::decode(client_body);
            let _ = ClientRequest::decode(peer_body.clone());
            let _ = ClientResponse::decode(peer_body);
            Ok(())
        },
    );
}

#[test]
fn mutated_valid_bodies_never_panic_and_never_decode_to_a_different_length() {
    let mutation = (any::<prop::sample::Index>(), any::<u8>());
    run(
        "mutated bodies",
        fuzz_cases() / 4,
        (message(), client_response(), mutation.clone(), mutation),
        |(frame, response, (at_peer, byte_peer), (at_client, byte_client))| {
            let mut body = peer::encode_message(&frame).to_vec();
            let at = at_peer.index(body.len());
            body[at] = byte_peer;
            match peer::decode_message(Bytes::from(body.clone())) {
                // The membership encoding is not canonical (member order).
                Ok(Message::InstallLogStart(_)) | Err(_) => {}
                // Otherwise whatever decodes re-encodes to the same bytes.
                Ok(decoded) => prop_assert_eq!(&peer::encode_message(&decoded)[..], &body[..]),
            }
            let mut body = response.encode().to_vec();
            let at = at_client.index(body.len());
            body[at] = byte_client;
            let _ = ClientResponse::decode(Bytes::from(body));
            Ok(())
        },
    );
}

// ------------------------------------------------------- specific refusals

#[test]
fn a_huge_declared_record_count_is_refused_before_allocating() {
    // Append with no producer and a count of u32::MAX, in a 23-byte body.
    let mut body = vec![PROTOCOL_VERSION, 0x01, 0];
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(body.len(), 23);
    assert_eq!(
        ClientRequest::decode(Bytes::from(body.clone())),
        Err(WireError::TooLarge {
            what: "Append.record_count",
            got: u64::from(u32::MAX),
            limit: RECORDS_PER_APPEND_MAX as u64,
        })
    );
    // A count within the limit but more than the body can hold is truncated.
    let at = body.len() - 4;
    body[at..].copy_from_slice(&(RECORDS_PER_APPEND_MAX as u32).to_le_bytes());
    assert!(matches!(
        ClientRequest::decode(Bytes::from(body)),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn a_huge_declared_batch_count_or_record_length_is_refused() {
    let mut body = vec![PROTOCOL_VERSION, 0x82];
    for field in [1u64, 1, 0] {
        body.extend_from_slice(&field.to_le_bytes());
    }
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(ClientResponse::decode(Bytes::from(body)).is_err());

    // One record claiming 4 GiB in a tiny body.
    let mut body = vec![PROTOCOL_VERSION, 0x01, 0];
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ClientRequest::decode(Bytes::from(body)),
        Err(WireError::Truncated {
            what: "Append.record"
        })
    );
}

#[test]
fn a_flipped_bit_in_an_entry_fails_its_checksum() {
    let entries = vec![
        Entry::data(5, 2, Bytes::from_static(b"hello")),
        Entry::noop(6, 3),
    ];
    let mut block = BytesMut::new();
    encode_entries(&entries, &mut block);
    assert_eq!(decode_entries(&mut block.clone().freeze()), Ok(entries));
    let payload_at = 48; // first entry's payload
    block[payload_at] ^= 1;
    assert!(matches!(
        decode_entries(&mut block.freeze()),
        Err(WireError::EntryChecksum { index: 5, .. })
    ));
}

#[test]
fn append_entries_whose_first_index_does_not_follow_prev_log_index_is_refused() {
    let message = Message::AppendEntries(AppendEntries {
        term: 1,
        prev_log_index: 7,
        prev_log_term: 1,
        entries: vec![Entry::noop(8, 1)],
        leader_commit: 0,
    });
    let mut body = peer::encode_message(&message).to_vec();
    body[10] = 8; // prev_log_index := 8, the entry is still 8
    assert!(matches!(
        peer::decode_message(Bytes::from(body)),
        Err(WireError::Invalid { .. })
    ));
}

/// Issue 11, finding 7: indexes do not wrap. A block whose entries run
/// from u64::MAX to 0 is not consecutive, and an AppendEntries after
/// prev_log_index u64::MAX has no room for an entry.
#[test]
fn entry_indexes_at_the_top_of_u64_do_not_wrap() {
    let mut block = BytesMut::new();
    encode_entries(&[Entry::noop(u64::MAX, 1), Entry::noop(0, 1)], &mut block);
    assert_eq!(
        decode_entries(&mut block.freeze()),
        Err(WireError::Invalid {
            what: "entry indexes (not consecutive)"
        })
    );
    let wrapped = Message::AppendEntries(AppendEntries {
        term: 1,
        prev_log_index: u64::MAX - 1,
        prev_log_term: 1,
        entries: vec![Entry::noop(u64::MAX, 1), Entry::noop(0, 1)],
        leader_commit: 0,
    });
    assert!(matches!(
        peer::decode_message(peer::encode_message(&wrapped)),
        Err(WireError::Invalid { .. })
    ));
    let past_the_end = Message::AppendEntries(AppendEntries {
        term: 1,
        prev_log_index: u64::MAX,
        prev_log_term: 1,
        entries: vec![Entry::noop(0, 1)],
        leader_commit: 0,
    });
    assert!(matches!(
        peer::decode_message(peer::encode_message(&past_the_end)),
        Err(WireError::Invalid { .. })
    ));
    // The last index itself still decodes (the core judges it, not the codec).
    let last = Message::AppendEntries(AppendEntries {
        term: 1,
        prev_log_index: u64::MAX - 1,
        prev_log_term: 1,
        entries: vec![Entry::noop(u64::MAX, 1)],
        leader_commit: 0,
    });
    assert_eq!(
        peer::decode_message(peer::encode_message(&last)),
        Ok(last.clone())
    );
}

/// Issue 11, finding 7: the client codec carries any u64 a client sends
/// (sequence, consume index, limit); the node, not the codec, refuses what
/// would overflow (tests/cluster_bad_clients.rs). The codec itself does no
/// arithmetic on them.
#[test]
fn client_values_at_the_top_of_u64_round_trip_for_the_node_to_judge() {
    let requests = [
        ClientRequest::Append(AppendRequest {
            producer: Some(ProducerSeq {
                producer_id: u64::MAX,
                sequence: u64::MAX,
            }),
            records: vec![Bytes::new(), Bytes::new()],
        }),
        ClientRequest::Consume(ConsumeRequest {
            from: ConsumeFrom::Index(u64::MAX),
            follow: true,
            limit: Some(u64::MAX),
        }),
    ];
    for request in requests {
        let body = request.encode().expect("encodable");
        assert_eq!(ClientRequest::decode(body), Ok(request));
    }
    // A batch ending just below the last index decodes.
    let batch = RecordBatch {
        start_index: u64::MAX - 1,
        next_index: u64::MAX,
        commit_index: u64::MAX,
        records: vec![(u64::MAX - 1, Bytes::from_static(b"r"))],
    };
    let response = ClientResponse::Records(batch);
    assert_eq!(ClientResponse::decode(response.encode()), Ok(response));
    // A record at index u64::MAX cannot be sent at all: it would need
    // next_index = u64::MAX + 1. `lowest_allowed = index + 1` cannot wrap.
}

#[test]
fn unknown_versions_and_types_are_refused_by_name() {
    assert_eq!(
        peer::decode_message(Bytes::from_static(&[2, 0x10])),
        Err(WireError::UnsupportedVersion(2))
    );
    assert_eq!(
        peer::decode_message(Bytes::from_static(&[1, 0x7E])),
        Err(WireError::UnknownType(0x7E))
    );
    assert_eq!(
        peer::decode_message(Bytes::from_static(&[1, 0x01, 0, 0])),
        Err(WireError::UnknownType(0x01)),
        "0x01 is reserved"
    );
    assert_eq!(
        ClientRequest::decode(Bytes::from_static(&[1, 0x81])),
        Err(WireError::UnknownType(0x81)),
        "a response type is not a request"
    );
    assert_eq!(
        ClientResponse::decode(Bytes::from_static(&[1, 0x01])),
        Err(WireError::UnknownType(0x01)),
        "a request type is not a response"
    );
    assert!(matches!(
        ClientRequest::decode(Bytes::new()),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn requests_the_protocol_cannot_carry_are_refused_when_encoding() {
    let too_many = ClientRequest::Append(AppendRequest {
        producer: None,
        records: vec![Bytes::new(); RECORDS_PER_APPEND_MAX + 1],
    });
    assert!(matches!(too_many.encode(), Err(WireError::TooLarge { .. })));
    let empty = ClientRequest::Append(AppendRequest {
        producer: None,
        records: vec![],
    });
    assert!(matches!(empty.encode(), Err(WireError::Invalid { .. })));
    let zero = ClientRequest::Admin(AdminRequest::RemoveNode { id: 0 });
    assert!(matches!(zero.encode(), Err(WireError::Invalid { .. })));
    let long_addr = ClientRequest::Admin(AdminRequest::AddNode {
        id: 1,
        addr: "x".repeat(5000),
    });
    assert!(matches!(
        long_addr.encode(),
        Err(WireError::TooLarge { .. })
    ));
}

// -------------------------------------------------------------- errors

#[test]
fn decode_errors_map_to_the_client_errors_a_node_answers() {
    let mut body = vec![PROTOCOL_VERSION, 0x01, 0];
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    let error = ClientRequest::decode(Bytes::from(body)).unwrap_err();
    assert_eq!(
        ErrorResponse::from_decode_error(&error),
        ErrorResponse::TooManyRecords {
            count: u64::from(u32::MAX),
            limit: RECORDS_PER_APPEND_MAX as u64
        }
    );
    let error = ClientRequest::decode(Bytes::from_static(&[9, 1])).unwrap_err();
    assert_eq!(
        ErrorResponse::from_decode_error(&error),
        ErrorResponse::UnsupportedVersion {
            requested: 9,
            supported: PROTOCOL_VERSION
        }
    );
    let error = ClientRequest::decode(Bytes::from_static(&[1, 0x33])).unwrap_err();
    assert!(matches!(
        ErrorResponse::from_decode_error(&error),
        ErrorResponse::InvalidRequest { .. }
    ));
}

#[test]
fn every_error_has_a_distinct_stable_code_and_a_one_line_message() {
    run("error codes", 2_000, error_response(), |error| {
        let message = error.to_string();
        prop_assert!(!message.contains('\n'), "{message:?}");
        prop_assert!(error.code() != 0);
        Ok(())
    });
    let mut seen = std::collections::BTreeMap::new();
    for error in [
        ErrorResponse::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("10.0.0.2:7001".into()),
        },
        ErrorResponse::Unavailable,
        ErrorResponse::RecordTooLarge {
            record_bytes: 2,
            limit_bytes: 1,
        },
        ErrorResponse::TooManyRecords { count: 2, limit: 1 },
        ErrorResponse::SequenceGap {
            producer_id: 1,
            expected: 2,
            got: 3,
        },
        ErrorResponse::Timeout,
        ErrorResponse::InvalidRequest { reason: "r".into() },
        ErrorResponse::ChangeInProgress,
        ErrorResponse::UnknownNode { id: 4 },
        ErrorResponse::AlreadyMember { id: 4 },
        ErrorResponse::ShuttingDown,
        ErrorResponse::Internal { reason: "r".into() },
        ErrorResponse::UnsupportedVersion {
            requested: 2,
            supported: 1,
        },
        ErrorResponse::BelowLogStart {
            requested: 1,
            log_start: 5,
        },
        ErrorResponse::ChangeRefused { reason: "r".into() },
        ErrorResponse::PermissionDenied { reason: "r".into() },
        ErrorResponse::Busy,
        ErrorResponse::PayloadMismatch {
            producer_id: 1,
            sequence: 2,
            index: 3,
        },
    ] {
        assert!(error.code() < error_codes::KNOWN_END, "{error:?}");
        if let Some(other) = seen.insert(error.code(), format!("{error:?}")) {
            panic!("code {} used by {other} and {error:?}", error.code());
        }
    }
    assert_eq!(seen.len() as u16, error_codes::KNOWN_END - 1);
    assert_eq!(
        ErrorResponse::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("10.0.0.2:7001".into()),
        }
        .to_string(),
        "this node is not the leader; the leader is node 2 at 10.0.0.2:7001"
    );
}

#[test]
fn an_error_code_from_a_newer_node_decodes_with_its_message() {
    // code 999, message "new", then fields this build does not know.
    let mut body = vec![PROTOCOL_VERSION, 0xFF];
    body.extend_from_slice(&999u16.to_le_bytes());
    body.extend_from_slice(&3u16.to_le_bytes());
    body.extend_from_slice(b"new");
    body.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        ClientResponse::decode(Bytes::from(body)),
        Ok(ClientResponse::Error(ErrorResponse::Unrecognized {
            code: 999,
            message: "new".into()
        }))
    );
}

// --------------------------------------------------- golden bytes (the doc)

#[test]
fn a_request_vote_has_the_layout_of_docs_protocol_md() {
    let body = peer::encode_message(&Message::RequestVote(RequestVote {
        term: 7,
        last_log_index: 0x0102,
        last_log_term: 6,
        pre_vote: true,
        leadership_transfer: false,
    }));
    let expected: &[u8] = &[
        0x01, 0x10, // version 1, RequestVote
        7, 0, 0, 0, 0, 0, 0, 0, // term
        0x02, 0x01, 0, 0, 0, 0, 0, 0, // last_log_index
        6, 0, 0, 0, 0, 0, 0, 0,    // last_log_term
        0x01, // flags: pre_vote
    ];
    assert_eq!(&body[..], expected);
}

#[test]
fn an_append_request_has_the_layout_of_docs_protocol_md() {
    let body = ClientRequest::Append(AppendRequest {
        producer: Some(ProducerSeq {
            producer_id: 9,
            sequence: 40,
        }),
        records: vec![Bytes::from_static(b"hi"), Bytes::new()],
    })
    .encode()
    .unwrap();
    let expected: &[u8] = &[
        0x01, 0x01, // version 1, Append
        0x01, // flags: producer
        9, 0, 0, 0, 0, 0, 0, 0, // producer_id
        40, 0, 0, 0, 0, 0, 0, 0, // sequence
        2, 0, 0, 0, // record count
        2, 0, 0, 0, b'h', b'i', // record 0
        0, 0, 0, 0, // record 1 (empty)
    ];
    assert_eq!(&body[..], expected);
}

/// Issue 13: a re-sent batch partly in the log is answered with the
/// original indexes of its first records and the new ones of the rest.
#[test]
fn an_appended_runs_answer_has_the_layout_of_docs_protocol_md() {
    let mut indexes = AppendedIndexes::default();
    indexes.push_run(0x0100, 3).unwrap();
    indexes.push_run(0x0200, 2).unwrap();
    let response = ClientResponse::appended(indexes.clone());
    let body = response.encode();
    let expected: &[u8] = &[
        0x01, 0x86, // version 1, AppendedRuns
        2, 0, 0, 0, // run_count
        0x00, 0x01, 0, 0, 0, 0, 0, 0, // run 0: first_index = 0x0100
        3, 0, 0, 0, // count
        0x00, 0x02, 0, 0, 0, 0, 0, 0, // run 1: first_index = 0x0200
        2, 0, 0, 0, // count
    ];
    assert_eq!(&body[..], expected);
    assert_eq!(
        indexes.iter().collect::<Vec<_>>(),
        [0x100, 0x101, 0x102, 0x200, 0x201]
    );
    assert_eq!(
        ClientResponse::decode(body),
        Ok(ClientResponse::AppendedRuns(indexes))
    );
    // One range is answered in the plain form older clients know.
    assert_eq!(
        ClientResponse::appended(AppendedIndexes::contiguous(5, 9).unwrap()),
        ClientResponse::Appended {
            first_index: 5,
            last_index: 9
        }
    );
}

#[test]
fn appended_runs_that_no_append_could_get_are_refused() {
    let body = |runs: &[(u64, u32)]| {
        let mut body = vec![PROTOCOL_VERSION, 0x86];
        body.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for &(first_index, count) in runs {
            body.extend_from_slice(&first_index.to_le_bytes());
            body.extend_from_slice(&count.to_le_bytes());
        }
        Bytes::from(body)
    };
    for runs in [
        &[][..],
        &[(0, 1)],
        &[(5, 0)],
        &[((1 << 62) - 1, 3)],
        &[(1, RECORDS_PER_APPEND_MAX as u32), (100_000, 1)],
        &[(1, u32::MAX)],
    ] {
        assert!(
            matches!(
                ClientResponse::decode(body(runs)),
                Err(WireError::Invalid { .. })
            ),
            "{runs:?}"
        );
    }
    assert!(ClientResponse::decode(body(&[(1, RECORDS_PER_APPEND_MAX as u32)])).is_ok());
}

#[test]
fn an_entry_has_the_storage_frame_layout() {
    let mut block = BytesMut::new();
    encode_entries(
        &[Entry {
            index: 3,
            term: 2,
            kind: EntryKind::Data,
            producer: Some(ProducerSeq {
                producer_id: 5,
                sequence: 6,
            }),
            payload: Bytes::from_static(b"ab"),
        }],
        &mut block,
    );
    assert_eq!(block.len(), 50);
    assert_eq!(&block[4..8], &50u32.to_le_bytes());
    assert_eq!(&block[8..16], &3u64.to_le_bytes());
    assert_eq!(&block[16..24], &2u64.to_le_bytes());
    assert_eq!(block[24], 1);
    assert_eq!(block[25], 1);
    assert_eq!(&block[26..32], &[0; 6]);
    assert_eq!(&block[32..40], &5u64.to_le_bytes());
    assert_eq!(&block[40..48], &6u64.to_le_bytes());
    assert_eq!(&block[48..], b"ab");
    assert_eq!(&block[0..4], &crc32fast::hash(&block[4..]).to_le_bytes());
}

/// docs/protocol.md section 6.1: every line of the `raftlog-test-vectors`
/// block (a name and a whole frame in hex) decodes to the message its name
/// says, and everything but an error (whose message text is free) encodes
/// back to the same bytes. The interop client checks the same block.
#[test]
fn protocol_md_test_vectors() {
    let doc = include_str!("../docs/protocol.md");
    let block = doc
        .split("```raftlog-test-vectors\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/protocol.md has a raftlog-test-vectors block");
    let mut runs = AppendedIndexes::default();
    runs.push_run(256, 3).unwrap();
    runs.push_run(512, 2).unwrap();
    let requests: Vec<(&str, ClientRequest)> = vec![
        (
            "append_hi_empty_producer9_seq40",
            ClientRequest::Append(AppendRequest {
                producer: Some(ProducerSeq {
                    producer_id: 9,
                    sequence: 40,
                }),
                records: vec![Bytes::from_static(b"hi"), Bytes::new()],
            }),
        ),
        (
            "append_one_record_no_producer",
            ClientRequest::Append(AppendRequest {
                producer: None,
                records: vec![Bytes::from_static(b"abc")],
            }),
        ),
        (
            "consume_index258_follow_limit10",
            ClientRequest::Consume(ConsumeRequest {
                from: ConsumeFrom::Index(258),
                follow: true,
                limit: Some(10),
            }),
        ),
        (
            "consume_start_no_follow",
            ClientRequest::Consume(ConsumeRequest {
                from: ConsumeFrom::Start,
                follow: false,
                limit: None,
            }),
        ),
        ("status_request", ClientRequest::Status),
    ];
    let responses: Vec<(&str, ClientResponse)> = vec![
        (
            "appended_256_258",
            ClientResponse::Appended {
                first_index: 256,
                last_index: 258,
            },
        ),
        (
            "appended_runs_256x3_512x2",
            ClientResponse::AppendedRuns(runs),
        ),
        (
            "records_5_7_commit9",
            ClientResponse::Records(RecordBatch {
                start_index: 5,
                next_index: 7,
                commit_index: 9,
                records: vec![(5, Bytes::from_static(b"a")), (6, Bytes::new())],
            }),
        ),
        (
            "consume_end_commit_reached_next7",
            ClientResponse::ConsumeEnd(ConsumeEnd {
                reason: ConsumeEndReason::CommitIndexReached,
                next_index: 7,
            }),
        ),
    ];
    let errors: Vec<(&str, ErrorResponse)> = vec![
        (
            "error_not_leader_2",
            ErrorResponse::NotLeader {
                leader_id: Some(2),
                leader_addr: Some("127.0.0.1:7002".to_string()),
            },
        ),
        (
            "error_sequence_gap_p9_expected42_got48",
            ErrorResponse::SequenceGap {
                producer_id: 9,
                expected: 42,
                got: 48,
            },
        ),
        (
            "error_unsupported_version_2_1",
            ErrorResponse::UnsupportedVersion {
                requested: 2,
                supported: 1,
            },
        ),
    ];
    let mut checked = 0;
    for line in block.lines().filter(|line| !line.trim().is_empty()) {
        let (name, hex) = line.split_once(' ').expect("`name hex`");
        let frame: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
            .collect();
        let length = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4, "{name}: length prefix");
        let body = Bytes::copy_from_slice(&frame[4..]);
        if let Some((_, request)) = requests.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                ClientRequest::decode(body.clone()).as_ref(),
                Ok(request),
                "{name}"
            );
            assert_eq!(request.encode().unwrap(), body, "{name}");
        } else if let Some((_, response)) = responses.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                ClientResponse::decode(body.clone()).as_ref(),
                Ok(response),
                "{name}"
            );
            assert_eq!(response.encode(), body, "{name}");
        } else if let Some((_, error)) = errors.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                ClientResponse::decode(body),
                Ok(ClientResponse::Error(error.clone())),
                "{name}"
            );
        } else {
            panic!("{name}: a vector this test does not know");
        }
        checked += 1;
    }
    assert_eq!(checked, requests.len() + responses.len() + errors.len());
}
