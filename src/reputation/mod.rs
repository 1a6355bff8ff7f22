//! Reputation: DNS blocklist checks over a real resolver, and what a listing means for a
//! node (pause, alerts).

pub mod dnsbl;
pub mod inflight;
pub mod mmsg;
pub mod monitor;
pub mod pacing;
pub mod policy;
pub mod udp;
pub mod wire;
