//! The `portico` command-line tool.

fn main() {}
