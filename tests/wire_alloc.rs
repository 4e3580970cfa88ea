//! The decoders never allocate more than the body length justifies: a
//! counting global allocator records the largest single allocation made
//! while decoding, and it must stay within a constant factor of the body.
//!
//! This binary holds one test so that no other test allocates while a
//! decode is measured. Random bodies derive from one printed seed; replay
//! with `PROPTEST_RNG_SEED=<seed> cargo test --profile ci --test wire_alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use raftlog::wire::client::{ClientRequest, ClientResponse};
use raftlog::wire::peer;
use raftlog::wire::PROTOCOL_VERSION;

struct Counting;

static MEASURING: AtomicBool = AtomicBool::new(false);
static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);

fn note(bytes: usize) {
    if MEASURING.load(Ordering::Relaxed) {
        LARGEST_BYTES.fetch_max(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds the GlobalAlloc contract; the counters only read the layout.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout the caller gave us, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr`/`layout` came from this allocator, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes of the largest single allocation the three decoders make on `body`.
fn largest_allocation_decoding(body: &Bytes) -> usize {
    LARGEST_BYTES.store(0, Ordering::Relaxed);
    MEASURING.store(true, Ordering::Relaxed);
    let peer = peer::decode_message(body.clone()).is_ok();
    let request = ClientRequest::decode(body.clone()).is_ok();
    let response = ClientResponse::decode(body.clone()).is_ok();
    MEASURING.store(false, Ordering::Relaxed);
    std::hint::black_box((peer, request, response));
    LARGEST_BYTES.load(Ordering::Relaxed)
}

/// What a body of `len` bytes justifies: the largest in-memory element per
/// smallest wire element is a record handle (32 bytes per 4-byte length).
fn justified_bytes(len: usize) -> usize {
    8 * len + 1024
}

fn body(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

#[test]
fn decoders_allocate_in_proportion_to_the_body_never_to_a_declared_count() {
    let v = PROTOCOL_VERSION;
    let max32 = u32::MAX.to_le_bytes();
    let zero8 = [0u8; 8];
    let one8 = 1u64.to_le_bytes();
    let huge: Vec<Bytes> = vec![
        // Append: no producer, u32::MAX records (23 bytes).
        body(&[&[v, 0x01, 0], &zero8, &zero8, &max32]),
        // Counts under their limits but far beyond what the body holds.
        body(&[&[v, 0x01, 0], &zero8, &zero8, &16_384u32.to_le_bytes()]),
        body(&[
            &[v, 0x82],
            &one8,
            &one8,
            &zero8,
            &1_000_000u32.to_le_bytes(),
        ]),
        body(&[
            &[v, 0x84],
            &zero8,
            &zero8,
            &zero8,
            &zero8,
            &zero8,
            &1024u32.to_le_bytes(),
        ]),
        body(&[
            &[v, 0x85],
            &5u32.to_le_bytes(),
            &[1],
            &1024u32.to_le_bytes(),
        ]),
        // Append: one record of 4 GiB.
        body(&[&[v, 0x01, 0], &zero8, &zero8, &1u32.to_le_bytes(), &max32]),
        // Records: u32::MAX records.
        body(&[&[v, 0x82], &one8, &one8, &zero8, &max32]),
        // Status: u32::MAX nodes.
        body(&[&[v, 0x84], &zero8, &zero8, &zero8, &zero8, &zero8, &max32]),
        // Admin response: a membership of 4 GiB, then of u32::MAX members.
        body(&[&[v, 0x85], &max32]),
        body(&[&[v, 0x85], &5u32.to_le_bytes(), &[1], &max32]),
        // AppendEntries: an entry block of 4 GiB.
        body(&[&[v, 0x12], &one8, &zero8, &zero8, &zero8, &max32]),
        // AppendEntries: an entry claiming 4 GiB inside a 48-byte block.
        body(&[
            &[v, 0x12],
            &one8,
            &zero8,
            &zero8,
            &zero8,
            &48u32.to_le_bytes(),
            &[0; 4],
            &max32,
            &[0; 40],
        ]),
        // InstallLogStart: a membership of u32::MAX members.
        body(&[
            &[v, 0x15],
            &one8,
            &one8,
            &zero8,
            &5u32.to_le_bytes(),
            &[1],
            &max32,
        ]),
        // Error: a message of 65535 bytes.
        body(&[&[v, 0xFF], &1u16.to_le_bytes(), &u16::MAX.to_le_bytes()]),
    ];
    for (case, body) in huge.iter().enumerate() {
        let largest = largest_allocation_decoding(body);
        assert!(
            largest <= justified_bytes(body.len()),
            "case {case}: a {}-byte body made an allocation of {largest} bytes",
            body.len()
        );
    }

    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("wire_alloc seed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    let mut runner = TestRunner::new(Config {
        cases: 5_000,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let kinds: &[u8] = &[
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x81, 0x82,
        0x83, 0x84, 0x85, 0xFF,
    ];
    let strategy = (
        proptest::sample::select(kinds),
        proptest::collection::vec(any::<u8>(), 0..128),
    );
    let result = runner.run(&strategy, |(kind, rest)| {
        let body = body(&[&[v, kind], &rest]);
        let largest = largest_allocation_decoding(&body);
        prop_assert!(
            largest <= justified_bytes(body.len()),
            "a {}-byte body made an allocation of {largest} bytes",
            body.len()
        );
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}\nseed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    }
}
