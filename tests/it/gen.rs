//! `portcullis gen`.
