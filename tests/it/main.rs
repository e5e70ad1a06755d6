//! The integration tests: one binary (one link step), a file per area.

mod cli;
mod contract;
mod props;
mod replay_cases;
mod rules_edit;
mod support;
mod tidy;
