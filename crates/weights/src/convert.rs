//! Conversion of any stored dtype to a compute dtype, in one place.
