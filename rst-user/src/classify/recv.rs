//! What a reset a socket on this host accepted means, from the socket's state and
//! where the RST came from.

use rst_common::{ORIGIN_STATELESS, RecvKey, state};

use super::RecvCause;

/// Classifies a reset a socket accepted, from its state and where the RST came from.
pub fn classify_recv(key: &RecvKey) -> RecvCause {
    match key.state {
        state::SYN_SENT => RecvCause::Refused,
        state::SYN_RECV | state::NEW_SYN_RECV => RecvCause::HandshakeAbort,
        // The peer had already sent its FIN.
        state::CLOSE_WAIT | state::LAST_ACK | state::CLOSING => RecvCause::PeerClosed,
        state::ESTABLISHED | state::FIN_WAIT1 | state::FIN_WAIT2 => {
            if key.origin == ORIGIN_STATELESS {
                // The stateless (bare) RST of a host with no such connection.
                RecvCause::PeerLostState
            } else {
                RecvCause::PeerAbort
            }
        }
        _ => RecvCause::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rst_common::{FAMILY_IPV4, ORIGIN_SOCKET, ORIGIN_UNKNOWN};

    #[test]
    fn recv_table() {
        use RecvCause::*;
        use state::*;
        let k = |state, origin| RecvKey {
            state,
            family: FAMILY_IPV4,
            origin,
            _pad: [0; 5],
        };
        let (sock, stateless, unknown) = (ORIGIN_SOCKET, ORIGIN_STATELESS, ORIGIN_UNKNOWN);
        let cases = [
            (k(SYN_SENT, unknown), Refused),
            (k(SYN_SENT, stateless), Refused),
            (k(SYN_RECV, stateless), HandshakeAbort),
            (k(NEW_SYN_RECV, unknown), HandshakeAbort),
            (k(CLOSE_WAIT, stateless), PeerClosed),
            (k(CLOSE_WAIT, sock), PeerClosed),
            (k(LAST_ACK, sock), PeerClosed),
            (k(CLOSING, sock), PeerClosed),
            (k(ESTABLISHED, stateless), PeerLostState),
            (k(ESTABLISHED, sock), PeerAbort),
            (k(ESTABLISHED, unknown), PeerAbort),
            (k(FIN_WAIT1, stateless), PeerLostState),
            (k(FIN_WAIT2, sock), PeerAbort),
            (k(LISTEN, sock), Other),
            (k(CLOSE, sock), Other),
            (k(200, sock), Other),
        ];
        for (key, want) in cases {
            assert_eq!(classify_recv(&key), want, "{key:?}");
        }
    }
}
