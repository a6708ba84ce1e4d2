//! The exact `module.name` globals the restricted unpickler resolves, and to what.
