//! `portcullis explain`.
