//! Mutual TLS: certificates, roles and handshakes over real QUIC.
