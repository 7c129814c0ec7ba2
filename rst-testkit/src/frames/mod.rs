//! Hand-built Ethernet frames for tests and benchmarks.
//!
//! A [`Frame`] describes a frame layer by layer with public fields ([`layers`]). The
//! constructors ([`Frame::tcp4`], [`Frame::tcp6`]) give a well-formed TCP segment, the
//! `with_*` methods change one layer, and [`Frame::build`] lays the bytes out with correct
//! length fields and checksums and says where each layer starts ([`Built`]). Fields named
//! `*_override` write the given value instead of the computed one, to make malformed
//! frames; [`Built::truncated`] and [`Built::prefixes`] cut frames short.
//!
//! [`parse`] and [`sample`] run the real parser ([`rst_common::parse`]) on a byte slice,
//! the way the XDP program runs it on packet memory ([`host`]). [`catalog`] is the shared
//! corpus of the parser tests and the XDP test runs ([`corpus`]), and [`mutate`] fuzzes
//! it ([`fuzz`]).
//!
//! Protocol numbers the parser knows are `rst_common::IPPROTO_*`; the ones below are
//! those only the tests need, to build frames the parser must skip.

pub mod build;
pub mod corpus;
pub mod fuzz;
pub mod host;
pub mod layers;

pub use build::{Built, Frame, internet_checksum};
pub use corpus::{FLAG_SETS, catalog, example_rst_v4};
pub use fuzz::{Rng, mutate};
pub use host::{empty_event, parse, sample};
pub use layers::{Ext6, Ip, Ipv4, Ipv6, L4, Tcp, TcpOpt, Vlan};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const ETH_P_ARP: u16 = 0x0806;
