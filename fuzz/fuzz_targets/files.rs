//! Fuzz target `files`: see `fuzz/README.md` and `check_files` in
//! `tests/it/fuzz_checks.rs`, which `tests/it/fuzz_corpus.rs` also runs over
//! the committed corpus on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/fuzz_checks.rs"]
#[allow(dead_code)]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_files(data));
