//! Switchyard's benchmarks: the shared event corpus (used by the criterion stage benches in
//! `benches/stages.rs` and by the `switchyard-loadgen` load generator).

pub mod corpus;
