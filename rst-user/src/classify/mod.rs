//! Cause classification: a pure function of what the kernel told us. No aya here.
//!
//! The table behind it is `docs/classification.md`; the tests in `send` and `recv` are
//! that table as code.

pub mod egress;
pub mod recv;
pub mod send;

pub use egress::classify_egress;
pub use recv::classify_recv;
pub use send::{classify_send, classify_send_key, reason_unavailable};

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in export order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The Prometheus label value.
            pub const fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

label_enum!(
    /// Why this host sent a reset: its TCP stack's reason, or who else made it
    /// (`firewall_reject`, `raw_socket`: seen at egress, see `sources::egress`).
    SendCause {
        NoListener => "no_listener",
        NoConnection => "no_connection",
        LingerAbort => "linger_abort",
        UnreadDataClose => "unread_data_close",
        DataAfterClose => "data_after_close",
        Timewait => "timewait",
        KeepaliveTimeout => "keepalive_timeout",
        MemoryPressure => "memory_pressure",
        Linger2Timeout => "linger2_timeout",
        InvalidSegment => "invalid_segment",
        Disconnect => "disconnect",
        Mptcp => "mptcp",
        FirewallReject => "firewall_reject",
        RawSocket => "raw_socket",
        Other => "other",
    }
);

label_enum!(
    /// Why a socket on this host accepted a reset.
    RecvCause {
        Refused => "refused",
        PeerAbort => "peer_abort",
        PeerClosed => "peer_closed",
        PeerLostState => "peer_lost_state",
        HandshakeAbort => "handshake_abort",
        Other => "other",
    }
);

label_enum!(
    /// Address family label.
    Family {
        Ipv4 => "ipv4",
        Ipv6 => "ipv6",
    }
);

impl Family {
    pub fn from_raw(f: u8) -> Option<Self> {
        match f {
            rst_common::FAMILY_IPV4 => Some(Family::Ipv4),
            rst_common::FAMILY_IPV6 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_snake_case() {
        let mut all: Vec<&str> = SendCause::ALL.iter().map(|c| c.label()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), SendCause::ALL.len());
        for l in SendCause::ALL
            .iter()
            .map(|c| c.label())
            .chain(RecvCause::ALL.iter().map(|c| c.label()))
        {
            assert!(
                l.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{l}"
            );
        }
    }
}
