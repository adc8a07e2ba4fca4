//! What cowsnap's own tests, benches, fuzz targets and tools share: the replayer of the shared
//! operation scripts ([`replay`], also behind `cowsnap replay`), the fuzz entry points
//! ([`fuzzing`]) and instrumented devices ([`device`]).
//!
//! Behind the `testkit` feature and **not part of the stable API**: it changes with the tests that
//! use it. Applications use the crate root.

pub mod device;
pub mod fuzzing;
pub mod replay;
