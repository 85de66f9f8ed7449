//! Benchmarks. Criterion benches under `benches/` measure the decoders on
//! one core; the binaries under `src/bin/` drive the real services end to
//! end and print rates.
