//! `ClientError` as Python exceptions (the classes live in
//! `raftlog/_errors.py`, so they can have two bases, e.g. `ValueError`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use raftlog::client::ClientError;
use raftlog::wire::client::ErrorResponse;

/// Which exception class a failure raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No node answered, or no leader within the retry budget.
    Unavailable,
    RecordTooLarge,
    PermissionDenied,
    /// Cannot load the TLS files.
    Tls,
    /// A bad address, a missing setting.
    Config,
    /// An argument the client refuses before sending anything.
    InvalidInput,
    /// Exactly-once refused a sequence (gap, or reused for another payload).
    Sequence,
    /// The publisher or consumer is closed (or stopped after an error).
    Closed,
    /// Not sent because an earlier append of the publisher failed.
    Abandoned,
    /// A node sent something this client does not understand.
    Protocol,
    /// Anything else the cluster refused.
    Other,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Unavailable => "UnavailableError",
            Kind::RecordTooLarge => "RecordTooLargeError",
            Kind::PermissionDenied => "PermissionDeniedError",
            Kind::Tls => "TlsError",
            Kind::Config => "ConfigError",
            Kind::InvalidInput => "InvalidInputError",
            Kind::Sequence => "SequenceError",
            Kind::Closed => "ClosedError",
            Kind::Abandoned => "AbandonedError",
            Kind::Protocol => "ProtocolError",
            Kind::Other => "RaftlogError",
        }
    }
}

/// A client failure, cloneable (one failure may fail many waiting appends)
/// and free of Python objects (it is made on runtime threads).
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    /// The node's error code (docs/protocol.md), when a node refused.
    pub code: Option<u16>,
    /// True when the same request may succeed later.
    pub retryable: bool,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            code: None,
            retryable: false,
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Other, message)
    }

    pub fn closed(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Closed, message)
    }

    /// The exception to raise.
    pub fn to_py(&self, py: Python<'_>) -> PyErr {
        match self.instance(py) {
            Ok(error) => error,
            Err(error) => error,
        }
    }

    /// The exception object, for `Future.set_exception`.
    pub fn to_py_object(&self, py: Python<'_>) -> Py<PyAny> {
        self.to_py(py).into_value(py).into_any()
    }

    fn instance(&self, py: Python<'_>) -> PyResult<PyErr> {
        let class = errors_module(py)?.getattr(self.kind.class_name())?;
        let value = class.call1((self.message.as_str(), self.code, self.retryable))?;
        Ok(PyErr::from_value(value))
    }
}

impl From<&ClientError> for Failure {
    fn from(error: &ClientError) -> Failure {
        let kind = match error {
            ClientError::Unreachable { .. } | ClientError::Timeout(_) => Kind::Unavailable,
            ClientError::Refused(response) => refused_kind(response),
            ClientError::Tls(_) => Kind::Tls,
            ClientError::BadAddress { .. } => Kind::Config,
            ClientError::Protocol { .. } => Kind::Protocol,
            ClientError::Closed => Kind::Closed,
            ClientError::InvalidInput(_) => Kind::InvalidInput,
            ClientError::Abandoned(_) => Kind::Abandoned,
        };
        let code = match error {
            ClientError::Refused(response) => Some(response.code()),
            _ => None,
        };
        Failure {
            kind,
            message: error.to_string(),
            code,
            retryable: error.is_transient(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::from(&error)
    }
}

fn refused_kind(response: &ErrorResponse) -> Kind {
    match response {
        ErrorResponse::RecordTooLarge { .. } | ErrorResponse::TooManyRecords { .. } => {
            Kind::RecordTooLarge
        }
        ErrorResponse::PermissionDenied { .. } => Kind::PermissionDenied,
        ErrorResponse::SequenceGap { .. } | ErrorResponse::PayloadMismatch { .. } => Kind::Sequence,
        ErrorResponse::InvalidRequest { .. } | ErrorResponse::UnsupportedVersion { .. } => {
            Kind::Protocol
        }
        response if response.is_retryable() => Kind::Unavailable,
        _ => Kind::Other,
    }
}

/// `raftlog._errors`, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            PyModule::import(py, "raftlog._errors").map(Bound::unbind)
        })
        .map(|module| module.bind(py))
        .map_err(|error| PyRuntimeError::new_err(format!("cannot import raftlog._errors: {error}")))
}

/// Shorthand for raising a failure of `kind` from Python-facing code.
pub fn raise(py: Python<'_>, kind: Kind, message: impl Into<String>) -> PyErr {
    Failure::new(kind, message).to_py(py)
}
