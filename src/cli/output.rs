//! What the CLI prints on stdout: the exact line formats of the contract.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::types::LogIndex;

/// Adds `"data": "..."` when the bytes are UTF-8, else `"data_b64": "..."`.
pub fn insert_data(object: &mut Map<String, Value>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert("data".to_string(), Value::String(text.to_string())),
        Err(_) => object.insert(
            "data_b64".to_string(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

/// `{"index":N,"data":"..."}` (or `data_b64`), as `consume --output json` prints.
pub fn record_json(index: LogIndex, bytes: &[u8]) -> String {
    let mut object = Map::new();
    object.insert("index".to_string(), json!(index));
    insert_data(&mut object, bytes);
    Value::Object(object).to_string()
}

/// `{"index":N}`, as `publish --output json` prints.
pub fn index_json(index: LogIndex) -> String {
    json!({ "index": index }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_uses_data_for_utf8_and_data_b64_otherwise() {
        assert_eq!(
            record_json(3, b"hi \"x\""),
            r#"{"index":3,"data":"hi \"x\""}"#
        );
        assert_eq!(
            record_json(4, &[0xff, 0x00]),
            r#"{"index":4,"data_b64":"/wA="}"#
        );
    }

    #[test]
    fn index_json_is_one_object() {
        assert_eq!(index_json(17), r#"{"index":17}"#);
    }
}
