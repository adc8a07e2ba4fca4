//! wasm-bindgen layer for cowsnap (work in progress: see issue 7).
