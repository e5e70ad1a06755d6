//! Who may do what: the roles a client certificate carries, the peer a
//! connection belongs to, and the one table of which request kinds each
//! role may send. Every edge asks [`may_send`]; nothing else decides it.
//!
//! Deny by default: the table names, for every kind the contract knows, the
//! roles that may send it, with no wildcard, so a kind added to the
//! contract is refused to every role until a line here says otherwise (the
//! match below does not compile without one).

use crate::contract::Kind;
use std::fmt;

/// What a client may do, carried in its certificate as the URI SAN
/// `portcullis:role:<role>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A back-office system: sends decision requests and signals.
    Caller,
    /// A fraud analyst's tooling: also `verification`, `list_add` and
    /// `list_remove`.
    Analyst,
    /// Operations: everything an analyst may do (and operator actions).
    Admin,
}

impl Role {
    /// Every role, in order of privilege.
    pub const ALL: [Role; 3] = [Role::Caller, Role::Analyst, Role::Admin];

    /// The role's name as written in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Parses `caller`, `analyst` or `admin` (exactly, lower case: a role
    /// is compared as written in a certificate, never normalised).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role may name any client's request (`CLIENT:ID`) in an
    /// `await`, as a verification does, rather than only its own: the
    /// roles that may send `verification` ([`may_send`]).
    pub fn may_name_any_request(self) -> bool {
        may_send(self, Kind::Verification)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is on the other end of a connection, read from its certificate by
/// `tls::peer_of`. Request ids are scoped to `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub name: String,
    pub role: Role,
}

const ANY_ROLE: &[Role] = &[Role::Caller, Role::Analyst, Role::Admin];
/// Those change what later decisions see: a caller system may not.
const ANALYSTS: &[Role] = &[Role::Analyst, Role::Admin];

/// The roles that may send `kind`: the table (`proto/tls.md`).
pub const fn roles_for(kind: Kind) -> &'static [Role] {
    match kind {
        Kind::SimSwap | Kind::EsimTransfer | Kind::PortOut | Kind::AccountChange => ANY_ROLE,
        Kind::DeviceSeen | Kind::AuthFailure | Kind::FraudReport => ANY_ROLE,
        Kind::Lock | Kind::Unlock => ANY_ROLE,
        Kind::Verification | Kind::ListAdd | Kind::ListRemove => ANALYSTS,
    }
}

/// Whether `role` may send `kind`.
pub fn may_send(role: Role, kind: Kind) -> bool {
    roles_for(kind).contains(&role)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as `proto/tls.md` writes it, cell by cell.
    #[test]
    fn the_table_is_the_documented_one() {
        for &kind in Kind::ALL {
            for role in Role::ALL {
                let analyst_only =
                    matches!(kind, Kind::Verification | Kind::ListAdd | Kind::ListRemove);
                let want = !analyst_only || role != Role::Caller;
                assert_eq!(may_send(role, kind), want, "{role} {kind:?}");
            }
        }
        assert!(!Role::Caller.may_name_any_request());
        assert!(Role::Analyst.may_name_any_request() && Role::Admin.may_name_any_request());
    }
}
