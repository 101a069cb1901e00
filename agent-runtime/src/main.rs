//! fastagentic entry point.

fn main() {}
