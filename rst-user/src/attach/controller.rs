//! The interface controller: follows the kernel's link notifications (RTM_NEWLINK /
//! RTM_DELLINK) and keeps one XDP link (ingress) and one TC link (egress) per selected
//! interface.
//!
//! * an interface that appears and matches the selection is attached, one that goes is
//!   detached and its series leave `/metrics`; one deleted and recreated under the same
//!   name is a new interface (a new ifindex) and is attached again;
//! * an interface that carries someone else's XDP program is left alone: one log line,
//!   `rstmon_interface_skipped_total{reason="foreign_xdp"}`, and it stays skipped until it
//!   is deleted (taking the interface back when its program goes would race whoever is
//!   replacing it). Its egress is left alone too: rstmon monitors an interface in both
//!   directions or not at all, so that its wire series always mean the same;
//! * TC egress is attached right after XDP; if that fails the interface keeps its XDP
//!   (ingress) monitoring, the failure is logged and `rstmon_tc_attached` lacks it;
//! * at start-up an interface named exactly with `-i` must exist and attach, or start-up
//!   fails; globs and the default selection never fail;
//! * the shared [`Interfaces`] (ifindex → name, mode) is what `/metrics` and `watch` read.
//!
//! Notifications can be lost (a full netlink socket buffer under a link storm), so a
//! full dump every [`RESYNC_INTERVAL`] reconciles the links held with the links there.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use aya::programs::{tc::SchedClassifierLinkId, xdp::XdpLinkId};
use futures_util::{StreamExt as _, TryStreamExt as _};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp},
};
use netlink_sys::AsyncSocket as _;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    error::LoadError,
    loader::Programs,
    select::Selection,
    tc,
    xdp::{self, XdpModeArg},
};
use crate::export::snapshot::Counters;

/// How often the links held are reconciled with a full dump.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Receive buffer of the notification socket: room for a burst of thousands of links.
const NETLINK_RCVBUF: usize = 8 << 20;

/// `rstmon_interface_skipped_total` reasons.
pub const SKIP_FOREIGN_XDP: &str = "foreign_xdp";
pub const SKIP_ATTACH_FAILED: &str = "attach_failed";
/// Every skip reason, exported from the start (at 0).
pub const SKIP_REASONS: [&str; 2] = [SKIP_FOREIGN_XDP, SKIP_ATTACH_FAILED];

/// One monitored interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub name: String,
    /// `native` or `generic`.
    pub mode: &'static str,
    /// TC egress: `tcx` or `clsact`, `None` when it could not be attached.
    pub tc: Option<&'static str>,
}

/// The controller's view, shared with `/metrics` and `watch`.
#[derive(Clone, Debug, Default)]
pub struct Interfaces {
    by_index: BTreeMap<u32, Attached>,
    /// Interfaces left alone since start, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

pub type SharedInterfaces = Arc<RwLock<Interfaces>>;

impl Interfaces {
    /// ifindex → name of the monitored interfaces.
    pub fn ifnames(&self) -> BTreeMap<u32, String> {
        self.by_index
            .iter()
            .map(|(i, a)| (*i, a.name.clone()))
            .collect()
    }

    /// (name, mode) of each monitored interface, by ifindex.
    pub fn attached(&self) -> Vec<(String, String)> {
        self.by_index
            .values()
            .map(|a| (a.name.clone(), a.mode.to_string()))
            .collect()
    }

    /// (name, mode) of each interface with rstmon's TC egress program, by ifindex.
    pub fn tc_attached(&self) -> Vec<(String, String)> {
        self.by_index
            .values()
            .filter_map(|a| Some((a.name.clone(), a.tc?.to_string())))
            .collect()
    }

    /// The monitored interfaces by ifindex, without copying them.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Attached)> {
        self.by_index.iter().map(|(i, a)| (*i, a))
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

/// What a link message says about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// The id of the XDP program attached to it, if any.
    pub xdp_prog: Option<u32>,
}

impl LinkInfo {
    pub fn from_message(msg: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut xdp_prog = None;
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Xdp(x) => {
                    xdp_prog = x.iter().find_map(|x| match x {
                        LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        Some(Self {
            ifindex: msg.header.index,
            name: name?,
            up: msg.header.flags.contains(LinkFlags::Up),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            xdp_prog,
        })
    }
}

/// Attaches and detaches XDP as interfaces come and go. Dropping it (or what
/// [`Controller::run`] returns) detaches everything.
pub struct Controller {
    programs: Programs,
    selection: Selection,
    mode: XdpModeArg,
    links: BTreeMap<u32, XdpLinkId>,
    tc_links: BTreeMap<u32, SchedClassifierLinkId>,
    /// Interfaces left alone; forgotten when they are deleted.
    skipped: BTreeSet<u32>,
    state: SharedInterfaces,
    counters: Arc<Mutex<Counters>>,
    our_prog: Option<u32>,
    handle: Option<Handle>,
    messages: Option<
        futures_channel::mpsc::UnboundedReceiver<(
            NetlinkMessage<RouteNetlinkMessage>,
            netlink_sys::SocketAddr,
        )>,
    >,
}

fn netlink_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Netlink(std::io::Error::other(e.to_string()))
}

impl Controller {
    /// Subscribes to link notifications, then attaches every interface there is that
    /// matches `selection`. Without interfaces to follow (an empty selection) it opens
    /// no socket at all.
    pub async fn start(
        programs: Programs,
        selection: Selection,
        mode: XdpModeArg,
        counters: Arc<Mutex<Counters>>,
    ) -> Result<Self, LoadError> {
        let mut c = Self {
            programs,
            selection,
            mode,
            links: BTreeMap::new(),
            tc_links: BTreeMap::new(),
            skipped: BTreeSet::new(),
            state: SharedInterfaces::default(),
            counters,
            our_prog: None,
            handle: None,
            messages: None,
        };
        if c.selection.is_empty() {
            return Ok(c);
        }
        // Subscribe before the dump, so that no interface falls between the two.
        let (mut conn, handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(LoadError::Netlink)?;
        if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(NETLINK_RCVBUF) {
            debug!("netlink receive buffer: {e}");
        }
        tokio::spawn(conn);
        c.handle = Some(handle);
        c.messages = Some(messages);
        let links = c.dump().await?;
        for l in &links {
            c.on_link(l, true)?;
        }
        let missing: Vec<&String> = c
            .selection
            .exact()
            .iter()
            .filter(|n| !links.iter().any(|l| &l.name == *n))
            .collect();
        if let Some(n) = missing.first() {
            return Err(LoadError::NoInterface((*n).clone()));
        }
        if c.links.is_empty() {
            info!(
                "no interface matches yet: waiting for one (sent and received resets are counted)"
            );
        }
        Ok(c)
    }

    /// The shared interface view.
    pub fn interfaces(&self) -> SharedInterfaces {
        self.state.clone()
    }

    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// Every link there is now.
    async fn dump(&self) -> Result<Vec<LinkInfo>, LoadError> {
        let Some(handle) = &self.handle else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        let mut stream = handle.link().get().execute();
        while let Some(msg) = stream.try_next().await.map_err(netlink_err)? {
            out.extend(LinkInfo::from_message(&msg));
        }
        Ok(out)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Interfaces> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn skip(&mut self, l: &LinkInfo, reason: &'static str) {
        if self.skipped.insert(l.ifindex) {
            *self.write_state().skipped.entry(reason).or_default() += 1;
        }
    }

    /// A link appeared or changed. At start-up, failing to attach an interface named
    /// exactly with `-i` is an error; otherwise failures are logged and counted.
    fn on_link(&mut self, l: &LinkInfo, startup: bool) -> Result<(), LoadError> {
        if self.links.contains_key(&l.ifindex) {
            let mut st = self.write_state();
            if let Some(a) = st.by_index.get_mut(&l.ifindex)
                && a.name != l.name
            {
                info!(from = %a.name, to = %l.name, ifindex = l.ifindex, "monitored interface renamed");
                a.name = l.name.clone();
            }
            return Ok(());
        }
        if self.skipped.contains(&l.ifindex) || !self.selection.matches(&l.name, l.up, l.loopback) {
            return Ok(());
        }
        let fatal = startup && self.selection.is_exact(&l.name);
        if self.our_prog.is_none() {
            self.our_prog = self.programs.xdp_prog_id();
        }
        if let Some(id) = l.xdp_prog
            && Some(id) != self.our_prog
        {
            if fatal {
                return Err(LoadError::XdpBusy(l.name.clone()));
            }
            warn!(interface = %l.name, prog_id = id, "another XDP program is attached; leaving the interface alone");
            self.skip(l, SKIP_FOREIGN_XDP);
            return Ok(());
        }
        // The slot first, so that the first RST after the attach is counted in it.
        let slot = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .assign_slot(l.ifindex);
        if slot.is_none() {
            debug!(interface = %l.name, "no free wire slot: counted on the overflow path");
        }
        let result = self
            .programs
            .xdp()
            .and_then(|prog| xdp::attach(prog, &l.name, l.ifindex, self.mode));
        if result.is_err() {
            self.counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget_interface(l.ifindex);
        }
        match result {
            Ok((link, mode)) => {
                info!(interface = %l.name, ifindex = l.ifindex, mode, "XDP attached");
                self.links.insert(l.ifindex, link);
                let tc = match self.programs.tc().and_then(|p| tc::attach(p, &l.name)) {
                    Ok((link, tc_mode)) => {
                        info!(interface = %l.name, ifindex = l.ifindex, mode = tc_mode, "TC egress attached");
                        self.tc_links.insert(l.ifindex, link);
                        Some(tc_mode)
                    }
                    Err(e) => {
                        warn!(interface = %l.name, "egress not monitored: {e}");
                        None
                    }
                };
                self.write_state().by_index.insert(
                    l.ifindex,
                    Attached {
                        name: l.name.clone(),
                        mode,
                        tc,
                    },
                );
                Ok(())
            }
            Err(e) if fatal => Err(e),
            Err(LoadError::XdpBusy(_)) => {
                warn!(interface = %l.name, "another XDP program is attached; leaving the interface alone");
                self.skip(l, SKIP_FOREIGN_XDP);
                Ok(())
            }
            Err(e) => {
                warn!(interface = %l.name, "not monitored: {e}");
                self.skip(l, SKIP_ATTACH_FAILED);
                Ok(())
            }
        }
    }

    /// A link went away.
    fn on_gone(&mut self, ifindex: u32) {
        self.skipped.remove(&ifindex);
        let Some(link) = self.links.remove(&ifindex) else {
            return;
        };
        // The kernel has already released an interface's XDP link when the interface
        // was unregistered; detaching only closes rstmon's handle.
        if let Ok(prog) = self.programs.xdp() {
            let _ = prog.detach(link);
        }
        // Likewise its tcx link; a clsact filter went with the interface's qdisc.
        if let Some(tc_link) = self.tc_links.remove(&ifindex)
            && let Ok(prog) = self.programs.tc()
        {
            let _ = prog.detach(tc_link);
        }
        let name = self
            .write_state()
            .by_index
            .remove(&ifindex)
            .map(|a| a.name)
            .unwrap_or_default();
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_interface(ifindex);
        info!(interface = %name, ifindex, "interface gone; detached");
    }

    /// Reconciles with a full dump: attaches what is missing, forgets what is gone.
    async fn resync(&mut self) {
        let links = match self.dump().await {
            Ok(l) => l,
            Err(e) => {
                warn!("interface resync: {e}");
                return;
            }
        };
        let present: BTreeSet<u32> = links.iter().map(|l| l.ifindex).collect();
        let gone: Vec<u32> = self
            .links
            .keys()
            .chain(self.skipped.iter())
            .filter(|i| !present.contains(i))
            .copied()
            .collect();
        for i in gone {
            self.on_gone(i);
        }
        for l in &links {
            let _ = self.on_link(l, false);
        }
    }

    /// Follows link notifications until `stop` turns true; returns the programs, whose
    /// drop detaches everything.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Programs {
        let Some(mut messages) = self.messages.take() else {
            let _ = stop.changed().await;
            return self.programs;
        };
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let mut open = true;
        loop {
            tokio::select! {
                msg = messages.next(), if open => {
                    let Some((msg, _)) = msg else {
                        warn!("link notifications ended; following interfaces by resync only");
                        open = false;
                        continue;
                    };
                    match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                            if let Some(l) = LinkInfo::from_message(&m) {
                                let _ = self.on_link(&l, false);
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                            self.on_gone(m.header.index);
                        }
                        NetlinkPayload::Overrun(_) => self.resync().await,
                        _ => {}
                    }
                }
                _ = resync.tick() => self.resync().await,
                _ = stop.changed() => return self.programs,
            }
        }
    }
}
