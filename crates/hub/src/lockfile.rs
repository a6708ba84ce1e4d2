//! `safeformers.lock`: Cargo.lock for models. (To be built.)
