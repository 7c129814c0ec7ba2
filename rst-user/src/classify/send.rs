//! Why this host's TCP stack sent a reset: the kernel's reason name, the socket state
//! and the triggering segment.

use std::collections::BTreeMap;

use rst_common::{
    REASON_UNAVAILABLE, SEND_LINGER0, SEND_TRIG_DATA, SendKey, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    state,
};

use super::SendCause;

/// Classifies a sent reset from the kernel's reason *name* (decoded from the running
/// kernel's BTF, see `kernel::probe_layout`) and the key the tracepoint recorded.
pub fn classify_send(reason: Option<&str>, key: &SendKey) -> SendCause {
    let trig = key.trig_flags;
    let has_trigger = trig != 0;
    let trig_syn = trig & TCP_SYN != 0 && trig & (TCP_ACK | TCP_RST | TCP_FIN) == 0;
    let trig_data = key.bits & SEND_TRIG_DATA != 0;
    let linger0 = key.bits & SEND_LINGER0 != 0;
    let Some(reason) = reason else {
        return classify_send_without_reason(key);
    };
    match reason {
        "NO_SOCKET" => {
            if trig_syn {
                SendCause::NoListener
            } else {
                SendCause::NoConnection
            }
        }
        "TCP_ABORT_ON_CLOSE" => SendCause::UnreadDataClose,
        "TCP_ABORT_ON_DATA" => SendCause::DataAfterClose,
        // A late data segment hitting the orphaned FIN_WAIT2 socket that already became a
        // time-wait mini-socket is the "write after close" case; anything else is timewait.
        "TCP_TIMEWAIT_SOCKET" => {
            if has_trigger && trig_data {
                SendCause::DataAfterClose
            } else {
                SendCause::Timewait
            }
        }
        "TCP_ABORT_ON_LINGER" => SendCause::Linger2Timeout,
        "TCP_ABORT_ON_MEMORY" => SendCause::MemoryPressure,
        "TCP_KEEPALIVE_TIMEOUT" => SendCause::KeepaliveTimeout,
        "TCP_STATE" | "TCP_DISCONNECT_WITH_DATA" => {
            if linger0 {
                SendCause::LingerAbort
            } else {
                SendCause::Disconnect
            }
        }
        "TCP_INVALID_ACK_SEQUENCE"
        | "TCP_RFC7323_PAWS"
        | "TCP_TOO_OLD_ACK"
        | "TCP_ACK_UNSENT_DATA"
        | "TCP_FLAGS"
        | "TCP_OLD_ACK"
        | "INVALID_SYN" => SendCause::InvalidSegment,
        r if r.starts_with("MPTCP_") => SendCause::Mptcp,
        _ => SendCause::Other,
    }
}

/// Classifies a sent reset's key, looking its reason number up in the running kernel's
/// `enum sk_rst_reason` names (`reasons`); a number without a name counts as `other`.
pub fn classify_send_key(reasons: &BTreeMap<u32, String>, key: &SendKey) -> SendCause {
    if reason_unavailable(key.reason) {
        classify_send(None, key)
    } else {
        classify_send(
            Some(
                reasons
                    .get(&key.reason)
                    .map(String::as_str)
                    .unwrap_or("UNKNOWN"),
            ),
            key,
        )
    }
}

/// Kernels before 6.10 have no `reason`: classify from state, trigger and linger.
fn classify_send_without_reason(key: &SendKey) -> SendCause {
    let trig_data = key.bits & SEND_TRIG_DATA != 0;
    let linger0 = key.bits & SEND_LINGER0 != 0;
    match key.state {
        state::TIME_WAIT if key.trig_flags != 0 && trig_data => SendCause::DataAfterClose,
        state::TIME_WAIT => SendCause::Timewait,
        // tcp_rcv_state_process() on an orphan in FIN_WAIT1/FIN_WAIT2 that gets new data:
        // tcp_done()/tcp_reset() move it to CLOSE, then the caller answers the segment
        // (TCP_ABORT_ON_DATA where the reason exists). No other path answers a data
        // segment from a full socket in CLOSE.
        state::CLOSE if key.trig_flags != 0 && trig_data && !linger0 => SendCause::DataAfterClose,
        _ if key.trig_flags == 0 && linger0 => SendCause::LingerAbort,
        _ => SendCause::Other,
    }
}

/// Whether a reason value means "this kernel reports no reason".
pub fn reason_unavailable(reason: u32) -> bool {
    reason == REASON_UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use rst_common::{FAMILY_IPV4, TCP_PSH};

    fn skey(state: u8, trig: u8, bits: u8) -> SendKey {
        SendKey {
            reason: 0,
            state,
            family: FAMILY_IPV4,
            trig_flags: trig,
            bits,
        }
    }

    #[test]
    fn send_table() {
        use SendCause::*;
        use state::*;
        let pa = TCP_PSH | TCP_ACK;
        let cases: &[(Option<&str>, SendKey, SendCause)] = &[
            (Some("NO_SOCKET"), skey(NONE, TCP_SYN, 0), NoListener),
            (
                Some("NO_SOCKET"),
                skey(NONE, TCP_SYN | TCP_ACK, 0),
                NoConnection,
            ),
            (Some("NO_SOCKET"), skey(NONE, TCP_ACK, 0), NoConnection),
            (
                Some("NO_SOCKET"),
                skey(NONE, pa, SEND_TRIG_DATA),
                NoConnection,
            ),
            (
                Some("NO_SOCKET"),
                skey(NONE, TCP_FIN | TCP_ACK, 0),
                NoConnection,
            ),
            (
                Some("NO_SOCKET"),
                skey(NONE, TCP_SYN | TCP_FIN, 0),
                NoConnection,
            ),
            (
                Some("TCP_ABORT_ON_CLOSE"),
                skey(ESTABLISHED, 0, 0),
                UnreadDataClose,
            ),
            (
                Some("TCP_ABORT_ON_CLOSE"),
                skey(CLOSE_WAIT, 0, SEND_LINGER0),
                UnreadDataClose,
            ),
            (
                Some("TCP_ABORT_ON_DATA"),
                skey(FIN_WAIT1, pa, SEND_TRIG_DATA),
                DataAfterClose,
            ),
            (
                Some("TCP_TIMEWAIT_SOCKET"),
                skey(TIME_WAIT, pa, SEND_TRIG_DATA),
                DataAfterClose,
            ),
            (
                Some("TCP_TIMEWAIT_SOCKET"),
                skey(TIME_WAIT, TCP_ACK, 0),
                Timewait,
            ),
            (
                Some("TCP_TIMEWAIT_SOCKET"),
                skey(TIME_WAIT, TCP_SYN, 0),
                Timewait,
            ),
            (
                Some("TCP_ABORT_ON_LINGER"),
                skey(FIN_WAIT2, 0, 0),
                Linger2Timeout,
            ),
            (
                Some("TCP_ABORT_ON_MEMORY"),
                skey(FIN_WAIT1, 0, 0),
                MemoryPressure,
            ),
            (
                Some("TCP_KEEPALIVE_TIMEOUT"),
                skey(ESTABLISHED, 0, 0),
                KeepaliveTimeout,
            ),
            (
                Some("TCP_STATE"),
                skey(ESTABLISHED, 0, SEND_LINGER0),
                LingerAbort,
            ),
            (
                Some("TCP_STATE"),
                skey(CLOSE_WAIT, 0, SEND_LINGER0),
                LingerAbort,
            ),
            (Some("TCP_STATE"), skey(ESTABLISHED, 0, 0), Disconnect),
            (
                Some("TCP_DISCONNECT_WITH_DATA"),
                skey(LAST_ACK, 0, 0),
                Disconnect,
            ),
            (
                Some("TCP_DISCONNECT_WITH_DATA"),
                skey(CLOSING, 0, SEND_LINGER0),
                LingerAbort,
            ),
            (
                Some("TCP_INVALID_ACK_SEQUENCE"),
                skey(SYN_RECV, TCP_ACK, 0),
                InvalidSegment,
            ),
            (
                Some("TCP_RFC7323_PAWS"),
                skey(ESTABLISHED, TCP_ACK, 0),
                InvalidSegment,
            ),
            (
                Some("TCP_TOO_OLD_ACK"),
                skey(ESTABLISHED, TCP_ACK, 0),
                InvalidSegment,
            ),
            (
                Some("TCP_ACK_UNSENT_DATA"),
                skey(ESTABLISHED, TCP_ACK, 0),
                InvalidSegment,
            ),
            (Some("TCP_FLAGS"), skey(LISTEN, TCP_ACK, 0), InvalidSegment),
            (
                Some("TCP_OLD_ACK"),
                skey(SYN_SENT, TCP_ACK, 0),
                InvalidSegment,
            ),
            (
                Some("INVALID_SYN"),
                skey(ESTABLISHED, TCP_SYN, 0),
                InvalidSegment,
            ),
            (Some("MPTCP_RST_EUNSPEC"), skey(ESTABLISHED, 0, 0), Mptcp),
            (Some("MPTCP_RST_EMIDDLEBOX"), skey(ESTABLISHED, 0, 0), Mptcp),
            (Some("NOT_SPECIFIED"), skey(ESTABLISHED, 0, 0), Other),
            (Some("ERROR"), skey(ESTABLISHED, 0, 0), Other),
            (Some("SOMETHING_NEW_IN_7_0"), skey(ESTABLISHED, 0, 0), Other),
            // Kernels without the reason field.
            (None, skey(TIME_WAIT, pa, SEND_TRIG_DATA), DataAfterClose),
            (None, skey(TIME_WAIT, TCP_ACK, 0), Timewait),
            (None, skey(CLOSE, pa, SEND_TRIG_DATA), DataAfterClose),
            (None, skey(CLOSE, TCP_ACK, 0), Other),
            (None, skey(FIN_WAIT2, pa, SEND_TRIG_DATA), Other),
            (None, skey(ESTABLISHED, 0, SEND_LINGER0), LingerAbort),
            (None, skey(ESTABLISHED, 0, 0), Other),
            (None, skey(ESTABLISHED, TCP_ACK, SEND_LINGER0), Other),
        ];
        for (reason, key, want) in cases {
            assert_eq!(
                classify_send(*reason, key),
                *want,
                "reason {reason:?} state {} trig {:#x} bits {}",
                state::name(key.state),
                key.trig_flags,
                key.bits
            );
        }
    }

    #[test]
    fn reason_numbers_are_looked_up_by_name() {
        // 6.18 numbering; the numbers shift between kernels, the names do not.
        let reasons = BTreeMap::from([(1, "NO_SOCKET".to_string()), (14, "TCP_STATE".to_string())]);
        let mut key = skey(state::NONE, TCP_SYN, 0);
        key.reason = 1;
        assert_eq!(classify_send_key(&reasons, &key), SendCause::NoListener);
        key.reason = 14;
        assert_eq!(classify_send_key(&reasons, &key), SendCause::Disconnect);
        key.reason = 99; // a number this kernel has no name for
        assert_eq!(classify_send_key(&reasons, &key), SendCause::Other);
        key.reason = REASON_UNAVAILABLE;
        key.state = state::TIME_WAIT;
        assert_eq!(classify_send_key(&reasons, &key), SendCause::Timewait);
    }
}
