//! What `publish` reads: one stdin line becomes one record, either as the
//! line itself or through the JSON shape `consume --output json` prints, so
//! a log can be copied record for record, binary and multi-line ones too.

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::args::InputFormat;

/// Why a stdin line is not a record; the line number is 1-based, as an
/// editor shows it, so the user can find it.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read stdin")]
    Read(#[source] std::io::Error),
    #[error("stdin line {line}: {reason}")]
    Line { line: u64, reason: String },
}

/// Turns stdin lines (without their newline) into record payloads.
pub struct LineParser {
    format: InputFormat,
    line: u64,
}

impl LineParser {
    pub fn new(format: InputFormat) -> LineParser {
        LineParser { format, line: 0 }
    }

    /// The record for the next line of input.
    pub fn parse(&mut self, line: Vec<u8>) -> Result<Bytes, InputError> {
        self.line = self.line.saturating_add(1);
        match self.format {
            InputFormat::Lines => Ok(Bytes::from(line)),
            InputFormat::Json => json_record(&line).map_err(|reason| InputError::Line {
                line: self.line,
                reason,
            }),
        }
    }
}

/// `{"data":"..."}` or `{"data_b64":"..."}`; other keys (such as the
/// `index` that `consume` prints) are ignored.
fn json_record(line: &[u8]) -> Result<Bytes, String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|error| format!("not a JSON object: {error}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object with `data` or `data_b64`".to_string());
    };
    match (object.get("data"), object.get("data_b64")) {
        (Some(_), Some(_)) => Err("has both `data` and `data_b64`; give one".to_string()),
        (Some(Value::String(text)), None) => Ok(Bytes::from(text.clone().into_bytes())),
        (Some(_), None) => Err("`data` must be a string".to_string()),
        (None, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|error| format!("`data_b64` is not standard base64: {error}")),
        (None, Some(_)) => Err("`data_b64` must be a string".to_string()),
        (None, None) => Err("has neither `data` nor `data_b64`".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::record_json;

    fn parse_json(line: &str) -> Result<Bytes, InputError> {
        LineParser::new(InputFormat::Json).parse(line.as_bytes().to_vec())
    }

    #[test]
    fn json_input_reads_back_what_consume_prints() {
        for record in [
            b"plain".as_slice(),
            b"two\nlines\r\n",
            &[0xff, 0x00, 0x80],
            b"",
        ] {
            let line = record_json(7, record);
            assert_eq!(parse_json(&line).unwrap().as_ref(), record, "{line}");
        }
    }

    #[test]
    fn json_input_ignores_other_keys() {
        let record = parse_json(r#"{"index":3,"data":"x","note":[1]}"#).unwrap();
        assert_eq!(record.as_ref(), b"x");
    }

    #[test]
    fn json_input_errors_name_the_line_and_the_problem() {
        let mut parser = LineParser::new(InputFormat::Json);
        assert!(parser.parse(br#"{"data":"ok"}"#.to_vec()).is_ok());
        for (line, expected) in [
            ("not json", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            (r#"{"data":1}"#, "`data` must be a string"),
            (r#"{"data_b64":"***"}"#, "not standard base64"),
            (r#"{"data":"a","data_b64":"YQ=="}"#, "both"),
            (r#"{"index":1}"#, "neither"),
        ] {
            let error = parser.parse(line.as_bytes().to_vec()).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with("stdin line "), "{text}");
            assert!(text.contains(expected), "{line}: {text}");
        }
        let error = parser.parse(b"".to_vec()).unwrap_err().to_string();
        assert!(error.starts_with("stdin line 8:"), "{error}");
    }

    #[test]
    fn lines_input_is_the_line_itself() {
        let mut parser = LineParser::new(InputFormat::Lines);
        assert_eq!(
            parser.parse(b"{not json".to_vec()).unwrap().as_ref(),
            b"{not json"
        );
    }
}
