//! Tensors as numpy arrays, in one of three kinds of memory ([`Memory`]):
//!
//! - **views** of the checkpoint's own memory (the read-only map, or bytes the loader
//!   assembled). A view's base object is the Python `Checkpoint`, so the array stays valid for
//!   as long as it is referenced, whatever happens to the object it was loaded through. Views
//!   are never writable.
//! - **copies**: ordinary writable arrays that own their memory, filled with the GIL released.
//! - **copy-on-write views**, for PyTorch, whose tensors are written in place: views of a
//!   second, private, writable map of the same open file (`MAP_PRIVATE`: a page written to is
//!   copied into this process, the file never changes), as `torch.load(mmap=True)` gives. Each
//!   call makes its own map, so two loads never share writes. Tensors not served from the map
//!   are copied.
//!
//! Whatever the kind asked for, a tensor whose bytes are not aligned for its dtype, an empty
//! tensor, and packed 4- and 6-bit floats (unpacked one value per byte for numpy) are copies.
//!
//! Dtypes numpy lacks (bfloat16, the float8 family, float4/float6) come from `ml_dtypes` when
//! it is installed; else the error names the tensor. For PyTorch ([`Target::Torch`]) those
//! tensors are handed over as unsigned integers of the same width (float4 as its packed byte
//! pairs, torch's `float4_e2m1fn_x2`), and `safeformers.torch` views them as the torch dtype.

use std::ffi::{c_int, c_void};

use std::ops::Range;

use memmap2::MmapMut;
use numpy::npyffi::{
    self, NPY_ARRAY_ALIGNED, NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_WRITEABLE, NpyTypes, PY_ARRAY_API,
};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use safeformers_weights::mapped::MappedFile;
use safeformers_weights::{Checkpoint, Dtype, TensorView};

use crate::errors::Error;
use crate::release::without_gil;

/// Who the arrays are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// numpy users: every dtype as numpy (or `ml_dtypes`) shows it.
    Numpy,
    /// `safeformers.torch`: dtypes numpy lacks as same-width unsigned integers, float4 packed.
    Torch,
}

/// The memory arrays are handed out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Memory {
    /// Read-only views of the checkpoint's memory.
    View,
    /// Writable copies.
    Copy,
    /// Writable copy-on-write views of a private map of the file.
    CopyOnWrite,
}

/// How a dtype is shown to the target.
#[derive(Debug, Clone, Copy)]
enum Representation {
    /// A numpy dtype, by its numpy name (little-endian, as the bytes are).
    Numpy(&'static str),
    /// A dtype of the `ml_dtypes` package, by attribute name.
    MlDtypes(&'static str),
    /// Packed sub-byte floats, unpacked one value per byte into an `ml_dtypes` dtype.
    Unpacked(&'static str, Packing),
    /// float4 pairs, one byte each, as torch's `float4_e2m1fn_x2` holds them: `uint8`, the last
    /// dimension halved.
    PackedPairs,
    /// No representation for this target.
    Unsupported(&'static str),
}

/// How sub-byte values are packed (crates/weights/src/convert.rs documents the layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// Two 4-bit values per byte, the first in the low nibble.
    F4,
    /// Four 6-bit values in three bytes, read as a little-endian 24-bit word, least significant
    /// bits first.
    F6,
}

fn representation(dtype: Dtype, target: Target) -> Representation {
    use Representation::{MlDtypes, Numpy, PackedPairs, Unpacked, Unsupported};
    let numpy_lacks = |ml_dtypes: &'static str, raw: &'static str| match target {
        Target::Numpy => MlDtypes(ml_dtypes),
        Target::Torch => Numpy(raw),
    };
    match dtype {
        Dtype::Bool => Numpy("bool"),
        Dtype::U8 => Numpy("uint8"),
        Dtype::I8 => Numpy("int8"),
        Dtype::I16 => Numpy("<i2"),
        Dtype::U16 => Numpy("<u2"),
        Dtype::F16 => Numpy("<f2"),
        Dtype::I32 => Numpy("<i4"),
        Dtype::U32 => Numpy("<u4"),
        Dtype::F32 => Numpy("<f4"),
        Dtype::C64 => Numpy("<c8"),
        Dtype::F64 => Numpy("<f8"),
        Dtype::I64 => Numpy("<i8"),
        Dtype::U64 => Numpy("<u8"),
        Dtype::BF16 => numpy_lacks("bfloat16", "<u2"),
        Dtype::F8E5M2 => numpy_lacks("float8_e5m2", "uint8"),
        Dtype::F8E4M3 => numpy_lacks("float8_e4m3fn", "uint8"),
        Dtype::F8E8M0 => numpy_lacks("float8_e8m0fnu", "uint8"),
        Dtype::F8E4M3Fnuz => numpy_lacks("float8_e4m3fnuz", "uint8"),
        Dtype::F8E5M2Fnuz => numpy_lacks("float8_e5m2fnuz", "uint8"),
        Dtype::F4 => match target {
            Target::Numpy => Unpacked("float4_e2m1fn", Packing::F4),
            Target::Torch => PackedPairs,
        },
        Dtype::F6E2M3 | Dtype::F6E3M2 => match target {
            Target::Numpy => Unpacked(
                if dtype == Dtype::F6E2M3 {
                    "float6_e2m3fn"
                } else {
                    "float6_e3m2fn"
                },
                Packing::F6,
            ),
            Target::Torch => Unsupported("PyTorch has no 6-bit float dtype"),
        },
    }
}

/// One tensor, planned: its numpy dtype and shape, and whether it is borrowed or copied.
struct Planned<'py, 'a> {
    name: &'a str,
    descr: Bound<'py, PyArrayDescr>,
    shape: Vec<usize>,
    bytes: &'a [u8],
    how: How,
}

/// How a planned tensor's memory is provided.
#[derive(Debug, Clone)]
enum How {
    /// A read-only view of the checkpoint's memory.
    Borrow,
    /// A view of the private map of the `file`-th file met, at the file's bytes `range`.
    CopyOnWrite { file: usize, range: Range<usize> },
    /// A copy, as elements of this many bytes (so that the copy is aligned for them).
    Copy(usize),
    /// Unpacked into one byte per value.
    Unpack(Packing),
}

/// The arrays of `views` (tensors of `checkpoint`), in order. `owner` is the Python object
/// that owns `checkpoint`; it becomes the base object of every view of the checkpoint.
pub(crate) fn to_arrays<'py>(
    owner: &Bound<'py, PyAny>,
    checkpoint: &Checkpoint,
    views: &[TensorView<'_>],
    target: Target,
    memory: Memory,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = owner.py();
    let mut ml_dtypes: Option<Bound<'py, PyModule>> = None;
    let mut files: Vec<&MappedFile> = Vec::new();
    let mut planned = Vec::with_capacity(views.len());
    for view in views {
        let mut plan = plan(py, view, target, memory, &mut ml_dtypes)?;
        if matches!(plan.how, How::CopyOnWrite { .. }) {
            plan.how = match checkpoint.mapped_range(view.name) {
                Some((mapped, range)) if range.len() == view.data.len() => {
                    let known = files.iter().position(|file| std::ptr::eq(*file, mapped));
                    let file = known.unwrap_or_else(|| {
                        files.push(mapped);
                        files.len() - 1
                    });
                    How::CopyOnWrite { file, range }
                }
                // Bytes the loader assembled are not in the file: copied.
                _ => How::Copy(plan.descr.itemsize()),
            };
        }
        planned.push(plan);
    }
    // Each file is mapped privately over the span of the tensors viewed in it.
    let mut spans: Vec<Option<Range<usize>>> = vec![None; files.len()];
    for plan in &planned {
        if let How::CopyOnWrite { file, range } = &plan.how
            && let Some(span) = spans.get_mut(*file)
        {
            *span = Some(match span.take() {
                Some(span) => span.start.min(range.start)..span.end.max(range.end),
                None => range.clone(),
            });
        }
    }
    let spans: Vec<Range<usize>> = spans.into_iter().map(Option::unwrap_or_default).collect();
    let span_starts: Vec<usize> = spans.iter().map(|span| span.start).collect();
    // Every copy, unpacking and private map at once, with the GIL released.
    let jobs: Vec<(&[u8], How)> = planned
        .iter()
        .map(|plan| (plan.bytes, plan.how.clone()))
        .collect();
    let (copies, maps) = without_gil(py, move || {
        let copies = jobs
            .into_iter()
            .map(|(bytes, how)| copy_bytes(bytes, &how))
            .collect::<Vec<_>>();
        let maps = files
            .iter()
            .zip(&spans)
            .map(|(file, span)| file.map_copy_on_write(span.clone()))
            .collect::<Vec<_>>();
        (copies, maps)
    })?;
    let mut private_maps = Vec::with_capacity(maps.len());
    for (map, start) in maps.into_iter().zip(span_starts) {
        let map = map
            .map_err(|error| crate::errors::weights_error(&error))?
            .ok_or_else(|| Error::new_err("internal error in safeformers: an empty span mapped"))?;
        private_maps.push(PrivateMap::wrap(py, map, start)?);
    }
    planned
        .iter()
        .zip(copies)
        .map(|(plan, copied)| match (copied, &plan.how) {
            (Some(copied), _) => owned_array(py, plan, copied),
            (None, How::CopyOnWrite { file, range }) => {
                let map = private_maps.get(*file).ok_or_else(|| {
                    Error::new_err("internal error in safeformers: a private map is missing")
                })?;
                map.view(plan, range.clone())
            }
            (None, _) => {
                let data = plan.bytes.as_ptr().cast_mut();
                array_over(owner, plan, data, plan.bytes.len(), false)
            }
        })
        .collect()
}

/// A private, writable map of a weights file: the base object of the copy-on-write views.
#[pyclass(frozen, module = "safeformers._native", name = "PrivateMap")]
pub(crate) struct PrivateMap {
    /// Held so that the mapping lives as long as this object; never read or written from Rust
    /// once made (only through the arrays' pointers).
    map: MmapMut,
}

#[pymethods]
impl PrivateMap {
    fn __len__(&self) -> usize {
        self.map.len()
    }
}

/// A [`PrivateMap`] object, the address of its first byte and the file offset of that byte.
struct WrappedMap<'py> {
    object: Bound<'py, PyAny>,
    start: *mut u8,
    len: usize,
    file_offset: usize,
}

impl PrivateMap {
    fn wrap(py: Python<'_>, mut map: MmapMut, file_offset: usize) -> PyResult<WrappedMap<'_>> {
        // The pointer of the mapping itself: moving the handle into the Python object does not
        // move the pages it points to.
        let start = map.as_mut_ptr();
        let len = map.len();
        let object = Bound::new(py, PrivateMap { map })?.into_any();
        Ok(WrappedMap {
            object,
            start,
            len,
            file_offset,
        })
    }
}

impl<'py> WrappedMap<'py> {
    /// A writable view of the file's bytes `range`, which the map holds.
    fn view(&self, plan: &Planned<'py, '_>, range: Range<usize>) -> PyResult<Bound<'py, PyAny>> {
        let range =
            range.start.wrapping_sub(self.file_offset)..range.end.wrapping_sub(self.file_offset);
        if range.end > self.len || range.start > range.end {
            return Err(Error::new_err(format!(
                "internal error in safeformers (a bug; please report it): tensor `{}` lies \
                 outside its file's map",
                plan.name
            )));
        }
        let data = self.start.wrapping_add(range.start);
        array_over(&self.object, plan, data, range.len(), true)
    }
}

fn plan<'py, 'a>(
    py: Python<'py>,
    view: &TensorView<'a>,
    target: Target,
    memory: Memory,
    ml_dtypes: &mut Option<Bound<'py, PyModule>>,
) -> PyResult<Planned<'py, 'a>> {
    let unsupported = |why: String| {
        Error::new_err(format!(
            "tensor `{}` has dtype {}, {why}",
            view.name, view.dtype
        ))
    };
    let mut ml_dtype = |attribute: &str| -> PyResult<Bound<'py, PyArrayDescr>> {
        let module = match ml_dtypes {
            Some(module) => module.clone(),
            None => {
                let module = py.import("ml_dtypes").map_err(|_| {
                    unsupported(
                        "which numpy has no dtype for: install ml_dtypes (pip install \
                         ml_dtypes) to read it as numpy, or load it with safeformers.torch"
                            .to_string(),
                    )
                })?;
                *ml_dtypes = Some(module.clone());
                module
            }
        };
        let scalar_type = module.getattr(attribute).map_err(|_| {
            unsupported(format!(
                "which the installed ml_dtypes has no `{attribute}` for: upgrade it (pip \
                 install -U ml_dtypes)"
            ))
        })?;
        PyArrayDescr::new(py, scalar_type)
    };
    let mut shape = view.shape.to_vec();
    let (descr, unpack) = match representation(view.dtype, target) {
        Representation::Numpy(name) => (PyArrayDescr::new(py, name)?, None),
        Representation::MlDtypes(attribute) => (ml_dtype(attribute)?, None),
        Representation::Unpacked(attribute, packing) => (ml_dtype(attribute)?, Some(packing)),
        Representation::PackedPairs => {
            match shape.last_mut() {
                Some(last) if *last % 2 == 0 => *last /= 2,
                _ => {
                    return Err(unsupported(
                        "whose last dimension must be even to be held as float4 pairs \
                         (torch.float4_e2m1fn_x2)"
                            .to_string(),
                    ));
                }
            }
            (PyArrayDescr::new(py, "uint8")?, None)
        }
        Representation::Unsupported(why) => return Err(unsupported(why.to_string())),
    };
    let element_size = descr.itemsize();
    let aligned = view
        .data
        .as_ptr()
        .addr()
        .is_multiple_of(descr.alignment().max(1));
    let how = match (unpack, memory) {
        (Some(packing), _) => How::Unpack(packing),
        (None, _) if !aligned || view.data.is_empty() => How::Copy(element_size),
        (None, Memory::Copy) => How::Copy(element_size),
        (None, Memory::View) => How::Borrow,
        // The file (found by the caller) is mapped page-aligned: offsets aligned in the map are
        // aligned in the private map too.
        (None, Memory::CopyOnWrite) => How::CopyOnWrite {
            file: 0,
            range: 0..0,
        },
    };
    Ok(Planned {
        name: view.name,
        descr,
        shape,
        bytes: view.data,
        how,
    })
}

/// Bytes copied out of the checkpoint, as elements of their size (so that they are aligned).
enum Copied {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// The copy `how` asks for, or `None` for a view. Runs without the GIL.
fn copy_bytes(bytes: &[u8], how: &How) -> Option<Copied> {
    match *how {
        How::Borrow | How::CopyOnWrite { .. } => None,
        How::Copy(2) => Some(Copied::U16(elements(bytes))),
        How::Copy(4) => Some(Copied::U32(elements(bytes))),
        How::Copy(8) => Some(Copied::U64(elements(bytes))),
        How::Copy(_) => Some(Copied::U8(bytes.to_vec())),
        How::Unpack(Packing::F4) => Some(Copied::U8(unpack_f4(bytes))),
        How::Unpack(Packing::F6) => Some(Copied::U8(unpack_f6(bytes))),
    }
}

/// `bytes` as elements of `T`, one copy whatever their alignment.
fn elements<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(aligned) => aligned.to_vec(),
        Err(_) => {
            let mut elements = vec![T::zeroed(); bytes.len() / size_of::<T>()];
            let destination: &mut [u8] = bytemuck::cast_slice_mut(&mut elements);
            // The planner only copies whole elements: the lengths match.
            destination.copy_from_slice(bytes);
            elements
        }
    }
}

/// Two float4 values per byte, the first in the low nibble, as one value per byte (the layout
/// of `ml_dtypes.float4_e2m1fn`: the value in the low four bits).
fn unpack_f4(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|&byte| [byte & 0x0f, byte >> 4])
        .collect()
}

/// Four float6 values per three bytes (a little-endian 24-bit word, least significant bits
/// first) as one value per byte, in its low six bits.
fn unpack_f6(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(3)
        .flat_map(|chunk| {
            let word = chunk
                .iter()
                .rev()
                .fold(0u32, |word, &byte| (word << 8) | u32::from(byte));
            [0, 6, 12, 18].map(|shift| ((word >> shift) & 0x3f) as u8)
        })
        .collect()
}

/// A writable array owning `copied`, with the planned dtype and shape.
fn owned_array<'py>(
    py: Python<'py>,
    plan: &Planned<'py, '_>,
    copied: Copied,
) -> PyResult<Bound<'py, PyAny>> {
    let flat = match copied {
        Copied::U8(data) => PyArray1::from_vec(py, data).into_any(),
        Copied::U16(data) => PyArray1::from_vec(py, data).into_any(),
        Copied::U32(data) => PyArray1::from_vec(py, data).into_any(),
        Copied::U64(data) => PyArray1::from_vec(py, data).into_any(),
    };
    flat.call_method1("view", (&plan.descr,))?
        .call_method1("reshape", (PyTuple::new(py, &plan.shape)?,))
}

/// An array of the planned dtype and shape over `len` bytes at `data`, whose base object is
/// `owner`, writable or not.
#[allow(unsafe_code)]
fn array_over<'py>(
    owner: &Bound<'py, PyAny>,
    plan: &Planned<'py, '_>,
    data: *mut u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let element_count = plan
        .shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim));
    let fits =
        element_count.and_then(|count| count.checked_mul(plan.descr.itemsize())) == Some(len);
    let aligned = data.addr().is_multiple_of(plan.descr.alignment().max(1));
    if !fits || !aligned || len == 0 {
        return Err(Error::new_err(format!(
            "internal error in safeformers (a bug; please report it): tensor `{}` cannot be \
             viewed in place",
            plan.name
        )));
    }
    let mut dims = plan
        .shape
        .iter()
        .map(|&dim| npyffi::npy_intp::try_from(dim))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::new_err(format!("tensor `{}`: dimension too large", plan.name)))?;
    let rank = c_int::try_from(dims.len())
        .map_err(|_| Error::new_err(format!("tensor `{}`: too many dimensions", plan.name)))?;
    let flags = if writable {
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE
    } else {
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED
    };
    // SAFETY: `data..data + len` is memory owned by `owner`, which becomes the array's base
    // object, so the memory outlives the array: either a frozen `Checkpoint` (its read-only map
    // and owned buffers never change or move while it lives; such arrays are never writable, and
    // numpy refuses to make them writable later, since the base exposes no writable buffer) or
    // a `PrivateMap` (a private writable mapping that Rust never reads or writes once made, so
    // numpy's writes alias nothing Rust holds). The length and alignment were checked above
    // against the dtype and shape. `PyArray_NewFromDescr` steals the descriptor reference,
    // `PyArray_SetBaseObject` the owner reference (also on failure).
    unsafe {
        let array = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            plan.descr.clone().into_dtype_ptr(),
            rank,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data.cast::<c_void>(),
            flags,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, array)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast(), owner.clone().into_ptr())
            < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float4_pairs_unpack_low_nibble_first() {
        assert_eq!(unpack_f4(&[0x21, 0xf0]), [1, 2, 0, 15]);
    }

    #[test]
    fn float6_quads_unpack_least_significant_bits_first() {
        // Values 1, 2, 3, 63: word = 1 | 2 << 6 | 3 << 12 | 63 << 18.
        let word: u32 = 1 | (2 << 6) | (3 << 12) | (63 << 18);
        let bytes = &word.to_le_bytes()[..3];
        assert_eq!(unpack_f6(bytes), [1, 2, 3, 63]);
    }

    #[test]
    fn copies_are_aligned_whatever_the_source() {
        let source: Vec<u8> = (0..17).collect();
        let copy: Vec<u32> = elements(&source[1..17]);
        assert_eq!(bytemuck::cast_slice::<u32, u8>(&copy), &source[1..17]);
    }
}
