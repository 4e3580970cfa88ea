//! dump: reads stored entries offline (read-only, under a shared lock) for
//! `raftlog dump DATA_DIR [--from N] [--output json]`, and formats them as
//! the JSON lines of the CLI contract.

use std::path::Path;

use base64::Engine;

use super::{Log, StorageError};
use crate::types::{Entry, LogIndex};

/// Bytes read per batch while dumping; bounds memory held at once.
pub const DUMP_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Iterator over the stored entries from some index on, in order.
pub struct DumpIter {
    log: Log,
    next_index: LogIndex,
    batch: std::vec::IntoIter<Entry>,
    failed: bool,
}

/// Opens `dir` read-only and iterates its entries from `from` (default: the
/// first stored index; an index below the log start starts at the log start).
pub fn dump_entries(
    dir: impl AsRef<Path>,
    from: Option<LogIndex>,
) -> Result<DumpIter, StorageError> {
    let log = Log::open_read_only(dir)?.log;
    let next_index = from.unwrap_or(0).max(log.first_index());
    Ok(DumpIter {
        log,
        next_index,
        batch: Vec::new().into_iter(),
        failed: false,
    })
}

impl DumpIter {
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
}

impl Iterator for DumpIter {
    type Item = Result<Entry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.batch.next() {
            return Some(Ok(entry));
        }
        if self.failed || self.next_index > self.log.last_index() {
            return None;
        }
        match self
            .log
            .entries(self.next_index, self.log.last_index(), DUMP_BATCH_BYTES_MAX)
        {
            Ok(entries) => {
                self.next_index += entries.len() as u64;
                self.batch = entries.into_iter();
                self.batch.next().map(Ok)
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// One line of `raftlog dump --output json` (without the newline):
/// `{"index":N,"term":T,"kind":"data|config|noop","data":"..."}` with `data`
/// when the payload is UTF-8, else `data_b64` (standard base64, padded);
/// entries with a producer tag add `"producer_id":P,"sequence":S`.
pub fn dump_json_line(entry: &Entry) -> String {
    let data = match std::str::from_utf8(&entry.payload) {
        Ok(text) => format!("\"data\":{}", serde_json::Value::from(text)),
        Err(_) => format!(
            "\"data_b64\":\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(&entry.payload)
        ),
    };
    let producer = entry.producer.map_or(String::new(), |p| {
        format!(
            ",\"producer_id\":{},\"sequence\":{}",
            p.producer_id, p.sequence
        )
    });
    format!(
        "{{\"index\":{},\"term\":{},\"kind\":\"{}\"{producer},{data}}}",
        entry.index,
        entry.term,
        entry.kind.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn dump_json_line_uses_data_for_utf8_and_data_b64_otherwise() {
        let text = Entry::data(3, 2, Bytes::from_static(b"he said \"hi\""));
        assert_eq!(
            dump_json_line(&text),
            r#"{"index":3,"term":2,"kind":"data","data":"he said \"hi\""}"#
        );
        let binary = Entry::data(4, 2, Bytes::from_static(b"\xff\x00"));
        assert_eq!(
            dump_json_line(&binary),
            r#"{"index":4,"term":2,"kind":"data","data_b64":"/wA="}"#
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&dump_json_line(&Entry::noop(5, 3))).unwrap();
        assert_eq!(parsed["kind"], "noop");
    }
}
