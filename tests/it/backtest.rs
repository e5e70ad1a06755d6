//! `portcullis backtest`.
