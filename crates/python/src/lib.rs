//! `safeformers._native`, the extension module of the `safeformers` Python package
//! (`pip install safeformers`; built by maturin from `pyproject.toml` beside this crate).
//!
//! The Python package (`python/safeformers/`) is the API; this module is what it stands on,
//! one Rust module per area, each with its Python counterpart:
//!
//! - [`checkpoint`]: `Checkpoint`, opened by the weights crate's readers under a `LoadPolicy`
//!   (`safeformers.load_checkpoint`, `safeformers.torch.load`, `safeformers.safetensors`);
//! - [`arrays`]: its tensors as numpy arrays, zero-copy where the layout allows;
//! - [`scan`]: `safeformers scan --json` as a function (`safeformers.scan`);
//! - [`pipeline`]: the task pipelines of the `safeformers` crate (`safeformers.pipeline`);
//! - [`errors`]: `Error` ⊃ `PolicyError`, `FormatError`, and the panic boundary;
//! - [`release`]: work done with the GIL released;
//! - [`testing`]: hooks for the package's tests.
//!
//! A new area is one more module here and one more in the Python package.

mod arrays;
mod checkpoint;
mod errors;
mod pipeline;
mod release;
mod scan;
mod testing;

use pyo3::prelude::*;

/// Native part of the safeformers package; use `safeformers` itself.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("Error", py.get_type::<errors::Error>())?;
    module.add("PolicyError", py.get_type::<errors::PolicyError>())?;
    module.add("FormatError", py.get_type::<errors::FormatError>())?;
    module.add_class::<checkpoint::PyCheckpoint>()?;
    module.add_function(wrap_pyfunction!(scan::scan_json, module)?)?;
    module.add_class::<pipeline::NativePipeline>()?;
    module.add_function(wrap_pyfunction!(pipeline::load_pipeline, module)?)?;
    module.add_function(wrap_pyfunction!(
        pipeline::_serve_chat_template_renderer,
        module
    )?)?;
    module.add_submodule(&testing::module(py)?)?;
    Ok(())
}
