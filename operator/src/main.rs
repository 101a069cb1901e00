//! fastagentic-operator entry point.

fn main() {}
