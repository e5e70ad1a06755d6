//! The integration tests: one binary (one link step), a file per area.
// A benchmark or test times what it measures: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

mod backtest;
mod cli;
mod client;
mod contract;
mod explain;
mod fuzz_corpus;
mod generate;
mod keys;
mod loadgen;
mod power;
mod props;
mod replay_cases;
mod rules_edit;
mod serve;
mod serve_cli;
mod store;
mod support;
mod tidy;
mod tls;
mod wire;
