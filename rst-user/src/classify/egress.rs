//! The sent cause of an RST seen leaving, by who made it (`EGRESS_*`, decided by the TC
//! egress program) and its flags: only what no tracepoint counted becomes a sent reset.

use rst_common::{
    EGRESS_FIREWALL, EGRESS_FORWARDED, EGRESS_RAW_SOCKET, EGRESS_STACK, EGRESS_STACK_UNTRACED,
    EGRESS_UNMATCHED,
};

use super::SendCause;

/// The sent cause an egress RST adds to `rstmon_resets_sent_total`, `None` when it adds
/// none (the tracepoint counted it, it was forwarded, or it cannot be told). `ack`: the
/// RST carried ACK.
pub fn classify_egress(origin: u8, ack: bool) -> Option<SendCause> {
    match origin {
        EGRESS_FIREWALL => Some(SendCause::FirewallReject),
        EGRESS_RAW_SOCKET => Some(SendCause::RawSocket),
        // The control socket answers a segment: RST|ACK when it carried no ACK
        // (typically a SYN to a closed port), a bare RST otherwise.
        EGRESS_STACK_UNTRACED if ack => Some(SendCause::NoListener),
        EGRESS_STACK_UNTRACED => Some(SendCause::NoConnection),
        EGRESS_STACK | EGRESS_FORWARDED | EGRESS_UNMATCHED => None,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_table() {
        use SendCause::*;
        let cases: &[(u8, bool, Option<SendCause>)] = &[
            (EGRESS_FIREWALL, true, Some(FirewallReject)),
            (EGRESS_FIREWALL, false, Some(FirewallReject)),
            (EGRESS_RAW_SOCKET, false, Some(RawSocket)),
            (EGRESS_RAW_SOCKET, true, Some(RawSocket)),
            (EGRESS_STACK_UNTRACED, true, Some(NoListener)),
            (EGRESS_STACK_UNTRACED, false, Some(NoConnection)),
            // Counted by the tracepoint: never twice.
            (EGRESS_STACK, true, None),
            (EGRESS_STACK, false, None),
            // Not made here.
            (EGRESS_FORWARDED, true, None),
            (EGRESS_UNMATCHED, false, None),
            (200, true, None),
        ];
        for (origin, ack, want) in cases {
            assert_eq!(
                classify_egress(*origin, *ack),
                *want,
                "origin {origin} ack {ack}"
            );
        }
    }
}
