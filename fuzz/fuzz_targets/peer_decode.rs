//! Any bytes given to the peer decoder give a message or a typed error, never
//! a panic; whatever decodes re-encodes and decodes to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raftlog::wire::peer;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = peer::decode_message(Bytes::copy_from_slice(data)) {
        let again = peer::decode_message(peer::encode_message(&message));
        assert_eq!(again.as_ref(), Ok(&message));
    }
});
