//! Ferry's browser migrator, compiled to WebAssembly.
