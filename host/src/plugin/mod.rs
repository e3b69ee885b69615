//! WebAssembly plugin runtime (wasmtime).
