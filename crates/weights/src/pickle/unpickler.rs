//! The restricted pickle virtual machine.

use super::{PickleError, UnpickleOptions, Unpickled};

/// Runs the restricted unpickler over one pickle stream at the start of `bytes`.
pub fn unpickle(bytes: &[u8], options: &UnpickleOptions) -> Result<Unpickled, PickleError> {
    let _ = (bytes, options);
    Err(PickleError::NotBuilt)
}
