//! Observe-mode pickle analysis: what Python would import and call.
