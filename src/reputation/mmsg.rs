//! Several datagrams per system call on a connected UDP socket: `recvmmsg` fills a batch of
//! buffers, `sendmmsg` sends a batch of queries. A checker's cost is mostly the kernel's, and
//! one call per datagram is most of that. Elsewhere than Linux, the same interface loops over
//! `recv` and `send`.
//!
//! Owns only the calls; the caller owns readiness (see `udp`).

use std::io;
use std::net::UdpSocket;

/// Datagrams read or written by one call at most.
pub const BATCH: usize = 32;
/// Each receive buffer: a reply to a query without EDNS fits in 512 bytes (RFC 1035); a
/// longer datagram is cut and flagged, and read as truncated.
pub const DATAGRAM: usize = 2048;

/// Buffers for one `recvmmsg`.
pub struct RecvBatch {
    data: Vec<u8>,
    lens: [usize; BATCH],
    cut: [bool; BATCH],
    filled: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0; BATCH * DATAGRAM],
            lens: [0; BATCH],
            cut: [false; BATCH],
            filled: 0,
        }
    }

    /// The datagrams of the last read: bytes, and whether the buffer cut it short.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], bool)> + '_ {
        (0..self.filled).map(|i| {
            let start = i * DATAGRAM;
            let len = self.lens[i].min(DATAGRAM);
            (&self.data[start..start + len], self.cut[i])
        })
    }

    /// Reads what waits on `socket` (non-blocking), up to BATCH datagrams; how many. "Would
    /// block" when none waits.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.filled = 0;
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (i, v) in iov.iter_mut().enumerate() {
            v.iov_base = self.data[i * DATAGRAM..].as_mut_ptr().cast();
            v.iov_len = DATAGRAM;
        }
        // SAFETY: mmsghdr is plain data; all-zero is a valid value (null name, no control).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec of `iov`, each iovec at its own DATAGRAM
        // bytes of `self.data`; all outlive the call, which writes no more than that.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.cut[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        self.filled = n;
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.filled = 0;
        for i in 0..BATCH {
            let buf = &mut self.data[i * DATAGRAM..(i + 1) * DATAGRAM];
            match socket.recv(buf) {
                Ok(len) => {
                    self.lens[i] = len;
                    self.cut[i] = false;
                    self.filled = i + 1;
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(self.filled)
    }
}

/// Sends `packets` on a connected, non-blocking socket, in calls of up to BATCH; how many
/// left. Stops at the first error, which is only returned when nothing was sent.
#[cfg(target_os = "linux")]
pub fn send_all(socket: &UdpSocket, packets: &[&[u8]]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut sent = 0;
    for chunk in packets.chunks(BATCH) {
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (v, p) in iov.iter_mut().zip(chunk) {
            // sendmmsg only reads through it; iovec's field is *mut for both directions.
            v.iov_base = p.as_ptr().cast_mut().cast();
            v.iov_len = p.len();
        }
        // SAFETY: plain data, all-zero valid (see RecvBatch::recv).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first chunk.len() headers each point at one iovec, each at a packet
        // borrowed for the call; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if sent > 0 { Ok(sent) } else { Err(e) };
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

#[cfg(not(target_os = "linux"))]
pub fn send_all(socket: &UdpSocket, packets: &[&[u8]]) -> io::Result<usize> {
    let mut sent = 0;
    for p in packets {
        match socket.send(p) {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.connect(b.local_addr().expect("addr")).expect("connect");
        b.connect(a.local_addr().expect("addr")).expect("connect");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        (a, b)
    }

    #[test]
    fn a_batch_sent_is_read_back_in_order_across_calls() {
        let (a, b) = pair();
        let packets: Vec<Vec<u8>> = (0..BATCH as u16 + 5)
            .map(|i| {
                let mut p = i.to_be_bytes().to_vec();
                p.resize(2 + usize::from(i), 0xAB);
                p
            })
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        assert_eq!(send_all(&a, &refs).expect("send"), packets.len());
        let mut batch = RecvBatch::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        assert_eq!(batch.recv(&b).expect("first batch"), BATCH);
        got.extend(batch.datagrams().map(|(d, cut)| {
            assert!(!cut);
            d.to_vec()
        }));
        assert_eq!(batch.recv(&b).expect("the rest"), 5);
        got.extend(batch.datagrams().map(|(d, _)| d.to_vec()));
        assert_eq!(got, packets);
        let empty = batch.recv(&b).expect_err("nothing waits");
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.datagrams().count(), 0);
    }

    #[test]
    fn a_datagram_longer_than_a_buffer_is_flagged_as_cut() {
        let (a, b) = pair();
        let long = vec![7u8; DATAGRAM + 100];
        assert_eq!(send_all(&a, &[&long[..], b"short"]).expect("send"), 2);
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(&b).expect("read"), 2);
        let got: Vec<(usize, bool)> = batch.datagrams().map(|(d, cut)| (d.len(), cut)).collect();
        assert_eq!(got, vec![(DATAGRAM, true), (5, false)]);
    }
}
