//! A lean DNS client for blocklist lookups: messages built and read with hickory-proto, sent
//! over a small pool of UDP sockets that stay open (bound to random ports), with replies
//! matched to their queries by id, source and question. A general resolver opens a socket per
//! query for each lookup; a checker asking thousands of questions of one resolver should
//! not, and this is what makes it several times faster than the common Python checker.
//!
//! Forged replies are guarded against as a resolver would: random ports, random ids, and a
//! reply is only taken from the server asked and only for the question asked.
//!
//! A query unanswered for the retransmission timeout is sent again (same id, same
//! question), and the number of queries in flight adapts to loss (see `pacing`): a server
//! dropping queries under load costs a short wait and a smaller window, not the timeout.

use super::pacing::Pacing;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RecordType};
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Notify};

/// Why a query got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Timeout,
    /// The reply did not fit in UDP (the caller may ask again over TCP).
    Truncated,
    Io(String),
}

type Waiting = Arc<Mutex<HashMap<u16, (Query, oneshot::Sender<Message>)>>>;

struct Slot {
    socket: Arc<UdpSocket>,
    waiting: Waiting,
    reader: tokio::task::JoinHandle<()>,
}

pub struct UdpDns {
    server: SocketAddr,
    slots: Vec<Slot>,
    next: AtomicUsize,
    timeout: Duration,
    flow: Mutex<Flow>,
    /// Signalled when a seat in the window frees or the window grows.
    seats: Notify,
}

/// The pacing and the queries in flight now.
struct Flow {
    pacing: Pacing,
    in_flight: usize,
}

/// A query's seat in the window; given back when dropped.
struct Seat<'a> {
    dns: &'a UdpDns,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.dns.flow().in_flight -= 1;
        self.dns.seats.notify_one();
    }
}

impl Drop for UdpDns {
    fn drop(&mut self) {
        for s in &self.slots {
            s.reader.abort();
        }
    }
}

async fn read_replies(socket: Arc<UdpSocket>, server: SocketAddr, waiting: Waiting) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if from != server {
            continue;
        }
        let Ok(msg) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if msg.message_type() != MessageType::Response {
            continue;
        }
        let taken = {
            let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
            match w.get(&msg.id()) {
                Some((q, _)) if msg.queries().first() == Some(q) => w.remove(&msg.id()),
                _ => None,
            }
        };
        if let Some((_, tx)) = taken {
            let _ = tx.send(msg);
        }
    }
}

impl UdpDns {
    /// Opens `sockets` UDP sockets towards `server`, for at most `concurrency` queries in
    /// flight. Must be called within a tokio runtime (each socket's reader is a task).
    pub fn new(
        server: SocketAddr,
        sockets: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> std::io::Result<UdpDns> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(std::io::Error::other(
                "no tokio runtime to run the DNS client on",
            ));
        }
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().map_err(std::io::Error::other)?
        } else {
            "[::]:0".parse().map_err(std::io::Error::other)?
        };
        let mut slots = Vec::with_capacity(sockets.max(1));
        for _ in 0..sockets.max(1) {
            let std_socket = std::net::UdpSocket::bind(bind)?;
            std_socket.set_nonblocking(true)?;
            let socket = Arc::new(UdpSocket::from_std(std_socket)?);
            let waiting: Waiting = Arc::default();
            let reader = tokio::spawn(read_replies(socket.clone(), server, waiting.clone()));
            slots.push(Slot {
                socket,
                waiting,
                reader,
            });
        }
        Ok(UdpDns {
            server,
            slots,
            next: AtomicUsize::new(0),
            timeout,
            flow: Mutex::new(Flow {
                pacing: Pacing::new(concurrency, timeout),
                in_flight: 0,
            }),
            seats: Notify::new(),
        })
    }

    fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pacing as it stands: RTO, window, losses (for benchmarks and tests).
    pub fn pacing(&self) -> Pacing {
        self.flow().pacing.clone()
    }

    /// Waits for a seat in the window.
    async fn seat(&self) -> Seat<'_> {
        loop {
            let freed = self.seats.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut f = self.flow();
                if f.in_flight < f.pacing.window() {
                    f.in_flight += 1;
                    return Seat { dns: self };
                }
            }
            freed.await;
        }
    }

    fn answered(&self, rtt: Option<Duration>) {
        let grew = {
            let mut f = self.flow();
            let before = f.pacing.window();
            f.pacing.answered(rtt);
            f.pacing.window() > before
        };
        if grew {
            self.seats.notify_one();
        }
    }

    /// Asks one question; the reply whatever its response code.
    pub async fn query(&self, name: &Name, rtype: RecordType) -> Result<Message, QueryError> {
        let _seat = self.seat().await;
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let query = Query::query(name.clone(), rtype);
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut w = slot.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let mut rng = rand::thread_rng();
            let mut id: u16 = rng.gen();
            while w.contains_key(&id) {
                id = rng.gen();
            }
            w.insert(id, (query.clone(), tx));
            id
        };
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(query);
        let forget = || {
            slot.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        };
        let bytes = match msg.to_vec() {
            Ok(b) => b,
            Err(e) => {
                forget();
                return Err(QueryError::Io(e.to_string()));
            }
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut rx = rx;
        let mut resent = false;
        loop {
            if let Err(e) = slot.socket.send_to(&bytes, self.server).await {
                forget();
                return Err(QueryError::Io(e.to_string()));
            }
            let sent = tokio::time::Instant::now();
            let rto = self.flow().pacing.rto();
            match tokio::time::timeout_at((sent + rto).min(deadline), &mut rx).await {
                Ok(Ok(reply)) => {
                    self.answered((!resent).then(|| sent.elapsed()));
                    return if reply.truncated() {
                        Err(QueryError::Truncated)
                    } else {
                        Ok(reply)
                    };
                }
                Ok(Err(_)) => return Err(QueryError::Io("the reader stopped".into())),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    forget();
                    return Err(QueryError::Timeout);
                }
                Err(_) => {
                    // Lost on the way, or late: asked again under the same id, so either
                    // copy's answer is taken.
                    self.flow()
                        .pacing
                        .lost(tokio::time::Instant::now().into_std());
                    resent = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::ResponseCode;
    use std::collections::HashSet;

    /// A DNS server on loopback that drops the first copy of every query it gets (as a
    /// full receive buffer does) and answers NXDOMAIN to any later copy.
    async fn lossy_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut seen: HashSet<(SocketAddr, u16)> = HashSet::new();
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if seen.insert((from, q.id())) {
                    continue;
                }
                let mut reply = Message::new();
                reply
                    .set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_response_code(ResponseCode::NXDomain)
                    .add_queries(q.queries().to_vec());
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_query_is_sent_again_and_answered_before_the_timeout() {
        let server = lossy_server().await;
        let dns = UdpDns::new(server, 2, 16, Duration::from_secs(2)).expect("client");
        let names: Vec<Name> = (0..40)
            .map(|i| Name::from_ascii(format!("{i}.0.0.127.zen.example.")).expect("name"))
            .collect();
        let answers =
            futures::future::join_all(names.iter().map(|n| dns.query(n, RecordType::A))).await;
        for (n, a) in names.iter().zip(&answers) {
            match a {
                Ok(reply) => assert_eq!(reply.response_code(), ResponseCode::NXDomain, "{n}"),
                Err(e) => panic!("{n}: {e:?} (the resent copy was not answered)"),
            }
        }
        let p = dns.pacing();
        assert!(p.losses >= 40, "every query was lost once: {}", p.losses);
        assert!(p.cuts >= 1 && p.smallest_window < 16, "{p:?}");
    }
}
