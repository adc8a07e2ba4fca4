//! C ABI for cowsnap (work in progress: see issue 5).
