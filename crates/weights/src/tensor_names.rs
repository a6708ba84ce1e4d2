//! The rules every tensor name read from a file must pass, whatever the format (safetensors,
//! GGUF): names may later become paths or keys, so none may be empty, hold control characters or
//! escape with a leading slash or a `..` segment. Each format maps a fault to its own error.

/// Characters of a name (or other text) quoted in an error message at most.
pub(crate) const QUOTE_LIMIT: usize = 80;

/// What is wrong with a tensor name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameFault {
    /// The empty string.
    Empty,
    /// A control character somewhere.
    ControlCharacter,
    /// A leading slash or a `..` path segment.
    PathTraversal,
}

/// The first rule `name` breaks, if any. Names use `.` as their separator
/// (`bert.encoder.layer.0.weight`); only a `..` *path* segment, or a leading slash, could make
/// a name that is later used as a path escape.
pub(crate) fn name_fault(name: &str) -> Option<NameFault> {
    if name.is_empty() {
        Some(NameFault::Empty)
    } else if name.chars().any(char::is_control) {
        Some(NameFault::ControlCharacter)
    } else if name.starts_with(['/', '\\'])
        || name.split(['/', '\\']).any(|segment| segment == "..")
    {
        Some(NameFault::PathTraversal)
    } else {
        None
    }
}

/// At most [`QUOTE_LIMIT`] characters of `text`, for error messages.
pub(crate) fn quote(text: &str) -> String {
    text.chars().take(QUOTE_LIMIT).collect()
}
