//! Length-prefixed frames (see `proto/wire.md`).
