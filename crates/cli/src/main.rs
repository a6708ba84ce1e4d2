//! The `safeformers` command line.

fn main() {}
