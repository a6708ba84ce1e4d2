//! `safeformers._native.Checkpoint`: an opened checkpoint, its tensors handed out as arrays.
//!
//! Opening goes through the weights crate's readers (`open_checkpoint` under a `LoadPolicy`, or
//! the safetensors reader alone for `safeformers.safetensors`), with the GIL released. The
//! object owns the memory map; arrays viewing it keep it alive (see [`crate::arrays`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use safeformers_weights::{Checkpoint, LoadPolicy, TensorView, open_checkpoint};

use crate::arrays::{Memory, Target, to_arrays};
use crate::errors::{guard, weights_error};
use crate::release::without_gil;

/// Named tensors read from a weights file, a model folder or a shard index, by safeformers'
/// own readers (no Python pickle is ever involved).
///
/// Arrays it hands out either view its memory map (read-only) or are copies; a view keeps this
/// object, and so the map, alive for as long as the view is referenced.
#[pyclass(frozen, module = "safeformers._native", name = "Checkpoint")]
pub struct PyCheckpoint {
    checkpoint: Checkpoint,
}

#[pymethods]
impl PyCheckpoint {
    /// Opens a weights file (format decided by content), a model folder (its weights chosen as
    /// Transformers does) or a `*.index.json`. Pickle-based checkpoints raise `PolicyError`
    /// unless `allow_pickle`, and are then read by the restricted, non-executing unpickler.
    #[staticmethod]
    #[pyo3(signature = (path, *, allow_pickle))]
    fn open(py: Python<'_>, path: PathBuf, allow_pickle: bool) -> PyResult<PyCheckpoint> {
        guard(|| {
            let policy = if allow_pickle {
                LoadPolicy::allowing_pickle()
            } else {
                LoadPolicy::default()
            };
            let opened = without_gil(py, move || open_checkpoint(&path, &policy))?;
            let checkpoint = opened.map_err(|error| weights_error(&error))?;
            Ok(PyCheckpoint { checkpoint })
        })
    }

    /// Opens one safetensors file, whatever its name; anything else is a `FormatError`.
    #[staticmethod]
    fn open_safetensors(py: Python<'_>, path: PathBuf) -> PyResult<PyCheckpoint> {
        guard(|| {
            let opened = without_gil(py, move || safeformers_weights::safetensors::open(&path))?;
            let checkpoint = opened.map_err(|error| weights_error(&error))?;
            Ok(PyCheckpoint { checkpoint })
        })
    }

    /// The format read, as `safeformers scan --json` names it (`"safetensors"`,
    /// `"pytorch-zip"`, `"pickle"`).
    #[getter]
    fn format(&self) -> &'static str {
        self.checkpoint.format().json_name()
    }

    /// The files the tensors were read from, in the order they were opened.
    #[getter]
    fn files(&self) -> Vec<PathBuf> {
        self.checkpoint.files().map(PathBuf::from).collect()
    }

    /// The `__metadata__` of the safetensors header(s); empty for other formats.
    #[getter]
    fn metadata(&self) -> BTreeMap<String, String> {
        self.checkpoint.metadata().clone()
    }

    /// Every tensor name, sorted.
    fn names(&self) -> Vec<&str> {
        self.checkpoint.names().collect()
    }

    fn __len__(&self) -> usize {
        self.checkpoint.len()
    }

    fn __contains__(&self, name: &str) -> bool {
        self.checkpoint.tensor(name).is_some()
    }

    /// The tensor's dtype as safetensors names it (`"F32"`, `"BF16"`, ...).
    fn dtype(&self, name: &str) -> PyResult<&'static str> {
        Ok(self.view(name)?.dtype.name())
    }

    /// The tensor's shape (for `F4`, in 4-bit values, as the safetensors header has it).
    fn shape<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.view(name)?.shape)
    }

    /// One tensor as an array. `memory`: `"view"`, a read-only view of this checkpoint where
    /// the layout allows (else a copy); `"copy"`, a writable copy; `"copy_on_write"`, a
    /// writable view of a private map of the file (else a copy), for tensors written in place.
    /// `target="torch"` hands dtypes numpy lacks over as same-width unsigned integers (float4
    /// as byte pairs) for `safeformers.torch` to view as the torch dtype.
    #[pyo3(signature = (name, *, memory = "view", target = "numpy"))]
    fn array<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        memory: &str,
        target: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let target = parse_target(target)?;
            let memory = parse_memory(memory)?;
            let this = slf.get();
            let view = this.view(name)?;
            let mut arrays = to_arrays(slf.as_any(), &this.checkpoint, &[view], target, memory)?;
            arrays
                .pop()
                .ok_or_else(|| PyKeyError::new_err(name.to_string()))
        })
    }

    /// Every tensor as `{name: array}`, sorted by name; copies (and the private map) are made
    /// together, with the GIL released. Arguments as for `array`.
    #[pyo3(signature = (*, memory = "view", target = "numpy"))]
    fn arrays<'py>(
        slf: &Bound<'py, Self>,
        memory: &str,
        target: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let target = parse_target(target)?;
            let memory = parse_memory(memory)?;
            let checkpoint = &slf.get().checkpoint;
            let views: Vec<TensorView<'_>> = checkpoint.tensors().collect();
            let arrays = to_arrays(slf.as_any(), checkpoint, &views, target, memory)?;
            let dict = PyDict::new(slf.py());
            for (view, array) in views.iter().zip(arrays) {
                dict.set_item(view.name, array)?;
            }
            Ok(dict)
        })
    }

    fn __repr__(&self) -> String {
        let files: Vec<String> = self
            .checkpoint
            .files()
            .map(|path| path.display().to_string())
            .collect();
        format!(
            "<safeformers Checkpoint: {} tensors, {} from {}>",
            self.checkpoint.len(),
            self.checkpoint.format().json_name(),
            files.join(", ")
        )
    }
}

impl PyCheckpoint {
    fn view(&self, name: &str) -> PyResult<TensorView<'_>> {
        self.checkpoint
            .tensor(name)
            .ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }
}

fn parse_memory(memory: &str) -> PyResult<Memory> {
    match memory {
        "view" => Ok(Memory::View),
        "copy" => Ok(Memory::Copy),
        "copy_on_write" => Ok(Memory::CopyOnWrite),
        other => Err(PyValueError::new_err(format!(
            "memory must be \"view\", \"copy\" or \"copy_on_write\", not {other:?}"
        ))),
    }
}

fn parse_target(target: &str) -> PyResult<Target> {
    match target {
        "numpy" => Ok(Target::Numpy),
        "torch" => Ok(Target::Torch),
        other => Err(PyValueError::new_err(format!(
            "target must be \"numpy\" or \"torch\", not {other:?}"
        ))),
    }
}
