//! The asyncio bridge: futures made on the caller's running loop and
//! resolved from the runtime through the delivery thread with
//! `loop.call_soon_threadsafe`, so the loop is never blocked and never
//! touched from another thread.

use std::future::Future;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyModule};

use crate::errors::Failure;
use crate::runtime::{deliver, runtime};

/// What an asyncio future resolves to, built under the GIL.
pub enum Value {
    None,
    Int(u64),
    Ints(Vec<u64>),
    Json(serde_json::Value),
    Object(Py<PyAny>),
}

impl Value {
    pub fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Value::None => py.None(),
            Value::Int(value) => value.into_pyobject(py)?.into_any().unbind(),
            Value::Ints(values) => PyList::new(py, values)?.into_any().unbind(),
            Value::Json(value) => json_to_py(py, &value)?,
            Value::Object(object) => object,
        })
    }
}

/// A JSON value as Python objects (what `json.loads` would return).
pub fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => py.None(),
        J::Bool(flag) => flag.into_pyobject(py)?.to_owned().into_any().unbind(),
        J::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                unsigned.into_pyobject(py)?.into_any().unbind()
            } else if let Some(signed) = number.as_i64() {
                signed.into_pyobject(py)?.into_any().unbind()
            } else {
                number
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        }
        J::String(text) => text.into_pyobject(py)?.into_any().unbind(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
        J::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// `raftlog._aio`: the helpers that settle a future unless it was cancelled.
fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            PyModule::import(py, "raftlog._aio").map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// A new future on the running event loop (a `RuntimeError` without one),
/// and that loop.
pub fn new_future(py: Python<'_>) -> PyResult<(Py<PyAny>, Bound<'_, PyAny>)> {
    let event_loop = helpers(py)?.getattr("get_running_loop")?.call0()?;
    let future = event_loop.call_method0("create_future")?;
    Ok((event_loop.unbind(), future))
}

/// Settles `future` on its loop's thread; from any thread holding the GIL.
/// A cancelled future, or a closed loop, drops the result.
pub fn settle(
    py: Python<'_>,
    event_loop: &Py<PyAny>,
    future: &Py<PyAny>,
    result: Result<Value, Failure>,
) {
    let settled = (|| -> PyResult<()> {
        let helpers = helpers(py)?;
        let (helper, argument) = match result {
            Ok(value) => (helpers.getattr("set_result")?, value.into_py(py)?),
            Err(failure) => (helpers.getattr("set_exception")?, failure.to_py_object(py)),
        };
        event_loop.call_method1(py, "call_soon_threadsafe", (helper, future, argument))?;
        Ok(())
    })();
    // Only a closed loop refuses (nobody waits any more); nothing to tell.
    drop(settled);
}

/// Runs `work` on the runtime and settles `future` with its result.
pub fn spawn_settle<F>(event_loop: Py<PyAny>, future: Py<PyAny>, work: F) -> Result<(), Failure>
where
    F: Future<Output = Result<Value, Failure>> + Send + 'static,
{
    runtime()?.spawn(async move {
        let result = work.await;
        deliver(Box::new(move |py| settle(py, &event_loop, &future, result)));
    });
    Ok(())
}
