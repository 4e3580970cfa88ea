//! `raftlog._raftlog`: the Python client, built on the crate's Rust client
//! (leader discovery, retries, exactly-once publishing, resuming consumers).
//! The `raftlog` package (python/raftlog) re-exports it with the exception
//! classes; see clients/python/README.md for the API.

mod aio;
mod client;
mod consumer;
mod errors;
mod publisher;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _raftlog(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<client::Client>()?;
    module.add_class::<publisher::Publisher>()?;
    module.add_class::<publisher::AsyncPublisher>()?;
    module.add_class::<consumer::Consumer>()?;
    module.add_class::<consumer::AsyncStream>()?;
    module.add_class::<consumer::Record>()?;
    module.add_function(wrap_pyfunction!(runtime::_shutdown, module)?)?;
    module.add_function(wrap_pyfunction!(consumer::_live_consumers, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
