//! Any bytes given to the client decoders give a request/response or a typed
//! error, never a panic; whatever decodes re-encodes and decodes the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use raftlog::wire::client::{ClientRequest, ClientResponse};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(request) = ClientRequest::decode(body.clone()) {
        if let Ok(encoded) = request.encode() {
            assert_eq!(ClientRequest::decode(encoded).as_ref(), Ok(&request));
        }
    }
    if let Ok(response) = ClientResponse::decode(body) {
        assert_eq!(ClientResponse::decode(response.encode()).as_ref(), Ok(&response));
    }
});
