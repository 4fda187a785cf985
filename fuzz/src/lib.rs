//! Fuzzing for tickrelay on the stable toolchain.
//!
//! `cargo fuzz` needs nightly; this crate is the same idea in plain Rust: a
//! target per parser or state machine ([`targets`]), and an engine
//! ([`engine`]) that feeds each target structure-aware inputs (built from
//! the target's own grammar) and byte-level mutations of its corpus, seeded
//! and repeatable, catching every panic with the input that caused it.
//!
//! There is no coverage instrumentation on stable. Instead each target
//! returns a small *signature* of what an input did (which error, which
//! packet kind, which branch of the sequencer); an input with a signature
//! not seen before joins the in-memory corpus and is mutated further.
//!
//! # Layout
//!
//! - [`engine`]: the loop, the mutators, corpus and crash files, the report.
//! - [`targets`]: `packet`, `message`, `sequencer`, `http_head`, `client_op`.

pub mod engine;
pub mod targets;
