//! A lean DNS client for blocklist lookups: a few UDP sockets that stay open (bound to random
//! ports, connected to the one server), and one driver task that owns them and does all the
//! socket work. Callers hand it a query message (see `wire`) and await the reply; the driver,
//! on each wake, reads every datagram waiting, resends what is overdue and sends what the
//! window admits (several datagrams per system call, see `mmsg`), so a busy checker costs a
//! few wakes per batch of answers rather than a task, a timer and a lock per query. A general resolver opens a socket per query; a checker
//! asking thousands of questions of one resolver should not.
//!
//! Forged replies are guarded against as a resolver would: random ports, random ids (see
//! `inflight`), and a reply is only taken from the server asked (the sockets are connected),
//! on the socket the query left by, and for the question asked; so a late duplicate reply
//! under a reused id cannot be taken for another query.
//!
//! A query unanswered for the retransmission timeout is sent again (same id, same question;
//! each further resend waits twice as long), and the number of queries in flight adapts to
//! loss (see `pacing`): a server dropping queries under load costs a short wait and a
//! smaller window, not the timeout. From idle, queries start in a burst of 32 and each answer
//! lets two more go (slow start), so the window is not sent in one burst that a server's
//! receive buffer would partly drop.

use super::inflight::{InFlight, Key};
use super::mmsg::{self, RecvBatch};
use super::pacing::Pacing;
use super::wire::{self, Reply};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

/// Why a query got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    Timeout,
    /// The reply did not fit in UDP (the caller may ask again over TCP).
    Truncated,
    Io(String),
}

/// The receive buffer asked for each socket: room for thousands of replies, so a burst of
/// answers is never dropped on our side while the driver is busy (the kernel caps it at
/// `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 1 << 20;

/// Resends of one query wait the RTO times 2^n, n at most this.
const MAX_BACKOFF_SHIFT: u32 = 6;

/// Queries sent at once when nothing is in flight. Beyond it, each answer lets two more
/// go (slow start, ack-clocked as TCP's): the window is reached in a few round trips instead
/// of in one burst, which a server's receive buffer (PowerDNS's holds ~190 queries) would
/// partly drop, and drops before any round trip is measured cost the initial RTO.
const INITIAL_BURST: usize = 32;

/// Receive errors (ICMP reports on a connected socket) read in one wake before yielding.
const MAX_ERRORS_PER_WAKE: usize = 64;

pub struct UdpDns {
    requests: mpsc::UnboundedSender<Request>,
    pacing: Arc<Mutex<Pacing>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for UdpDns {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct Request {
    /// From `wire::encode_query`; the driver writes the id in.
    packet: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, QueryError>>,
}

impl UdpDns {
    /// Opens `sockets` UDP sockets towards `server`, for at most `concurrency` queries in
    /// flight, each given up after `timeout`. Must be called within a tokio runtime (the
    /// driver is a task on it).
    pub fn new(
        server: SocketAddr,
        sockets: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> std::io::Result<UdpDns> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(std::io::Error::other(
                "no tokio runtime to run the DNS client on",
            ));
        };
        let bind: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut opened = Vec::with_capacity(sockets.max(1));
        for _ in 0..sockets.max(1) {
            let std_socket = std::net::UdpSocket::bind(bind)?;
            std_socket.connect(server)?;
            std_socket.set_nonblocking(true)?;
            set_receive_buffer(&std_socket, RECEIVE_BUFFER);
            let direct = std_socket.try_clone()?;
            let _enter = runtime.enter();
            opened.push(Socket {
                readiness: UdpSocket::from_std(std_socket)?,
                direct,
            });
        }
        let concurrency = concurrency.clamp(1, super::inflight::CAPACITY);
        let pacing = Arc::new(Mutex::new(Pacing::new(concurrency, timeout)));
        let (requests, incoming) = mpsc::unbounded_channel();
        let driver = Driver {
            sockets: opened,
            incoming,
            closed: false,
            in_flight: InFlight::new(),
            timers: BinaryHeap::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_at: None,
            pacing: pacing.clone(),
            timeout,
            next_socket: 0,
            rng: StdRng::from_entropy(),
            batch: RecvBatch::new(),
            unsent: Vec::new(),
            credit: INITIAL_BURST,
        };
        let driver = runtime.spawn(driver);
        Ok(UdpDns {
            requests,
            pacing,
            driver,
        })
    }

    /// The pacing as it stands: RTO, window, losses (for benchmarks and tests).
    pub fn pacing(&self) -> Pacing {
        lock(&self.pacing).clone()
    }

    /// Sends one query (a message from `wire::encode_query`, any id) and waits for its
    /// reply, whatever its response code.
    pub async fn query(&self, packet: Vec<u8>) -> Result<Reply, QueryError> {
        let stopped = || QueryError::Io("the DNS client stopped".into());
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { packet, reply })
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn lock(pacing: &Mutex<Pacing>) -> std::sync::MutexGuard<'_, Pacing> {
    pacing.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks the kernel for a bigger receive buffer; a refusal leaves the default, which only
/// makes loss under bursts likelier (and the pacing copes with loss).
fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the call's duration (borrowed from `socket`), and the option
    // value is a c_int that outlives the call, its size passed alongside.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One socket, registered with the runtime for its readiness (the driver is woken when
/// datagrams wait), and read and written directly, several datagrams a call (see `mmsg`).
/// Sends do not wait for the runtime to have seen the socket writable: its `try_send`
/// answers "would block" until then, which would turn a fresh socket's first queries into
/// losses.
struct Socket {
    readiness: UdpSocket,
    /// The same socket (a duplicate descriptor), non-blocking.
    direct: std::net::UdpSocket,
}

/// A query in flight.
struct Pending {
    /// The query as sent, id included: sent again as is, and its question checks replies.
    packet: Vec<u8>,
    socket: usize,
    first_sent: Instant,
    deadline: Instant,
    resends: u32,
    reply: oneshot::Sender<Result<Reply, QueryError>>,
}

/// When to look at a query again (resend it, or give it up).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    key: Key,
}

/// Owns the sockets and everything in flight; runs as one task.
struct Driver {
    sockets: Vec<Socket>,
    incoming: mpsc::UnboundedReceiver<Request>,
    /// Every `UdpDns` handle is gone.
    closed: bool,
    in_flight: InFlight<Pending>,
    /// One live timer per query in flight; timers of answered queries are skipped when due.
    timers: BinaryHeap<Reverse<Timer>>,
    sleep: Pin<Box<Sleep>>,
    armed_at: Option<Instant>,
    pacing: Arc<Mutex<Pacing>>,
    timeout: Duration,
    next_socket: usize,
    rng: StdRng,
    batch: RecvBatch,
    /// Queries admitted in this wake, not sent yet: sent together.
    unsent: Vec<Key>,
    /// Queries that may be sent before more answers come (see INITIAL_BURST).
    credit: usize,
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = this.pacing.clone();
        let mut pacing = lock(&shared);
        loop {
            this.receive(cx, &mut pacing);
            this.expire(&mut pacing);
            this.admit(cx, &mut pacing);
            if this.closed && this.in_flight.is_empty() {
                return Poll::Ready(());
            }
            let Some(Reverse(next)) = this.timers.peek() else {
                return Poll::Pending;
            };
            if this.armed_at != Some(next.at) {
                this.armed_at = Some(next.at);
                this.sleep.as_mut().reset(next.at);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A timer is due already: go round again.
        }
    }
}

impl Driver {
    /// Reads every datagram waiting on every socket, and hands out the replies.
    fn receive(&mut self, cx: &mut Context<'_>, pacing: &mut Pacing) {
        let mut errors = 0;
        for socket in 0..self.sockets.len() {
            while let Poll::Ready(Ok(())) = self.sockets[socket].readiness.poll_recv_ready(cx) {
                let Socket { readiness, direct } = &self.sockets[socket];
                let batch = &mut self.batch;
                match readiness.try_io(Interest::READABLE, || batch.recv(direct)) {
                    Ok(_) => {
                        let batch = std::mem::take(&mut self.batch);
                        for (message, cut) in batch.datagrams() {
                            self.take_reply(socket, message, cut, pacing);
                        }
                        self.batch = batch;
                    }
                    // Nothing more waits: the next poll_recv_ready registers the wake.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // An ICMP report (port unreachable, ...): the queries it concerns time out
                    // or are answered by a later copy.
                    Err(_) => {
                        errors += 1;
                        if errors > MAX_ERRORS_PER_WAKE {
                            cx.waker().wake_by_ref();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One datagram: the reply of the query in flight under its id, sent from that query's
    /// socket, for that query's question; anything else is dropped. A datagram longer than
    /// the buffer is taken as a truncated reply when its question matches.
    fn take_reply(&mut self, socket: usize, message: &[u8], cut: bool, pacing: &mut Pacing) {
        let Some(id) = wire::id_of(message) else {
            return;
        };
        let Some((key, pending)) = self.in_flight.by_id(id) else {
            return;
        };
        if pending.socket != socket {
            return;
        }
        let result = if cut {
            if !wire::is_reply_to(message, &pending.packet) {
                return;
            }
            Err(QueryError::Truncated)
        } else {
            match wire::read_reply(message, &pending.packet) {
                Ok(reply) if reply.truncated => Err(QueryError::Truncated),
                Ok(reply) => Ok(reply),
                Err(_) => return,
            }
        };
        let Some(pending) = self.in_flight.remove(key) else {
            return;
        };
        // Karn: the round trip of a query sent more than once is not known.
        pacing.answered((pending.resends == 0).then(|| pending.first_sent.elapsed()));
        self.freed(true);
        let _ = pending.reply.send(result);
    }

    /// Resends the queries whose RTO passed, and gives up those past their deadline.
    fn expire(&mut self, pacing: &mut Pacing) {
        let now = Instant::now();
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.at > now {
                break;
            }
            let key = timer.key;
            self.timers.pop();
            let Some(pending) = self.in_flight.get_mut(key) else {
                continue; // answered meanwhile
            };
            if now >= pending.deadline || pending.reply.is_closed() {
                if let Some(p) = self.in_flight.remove(key) {
                    self.freed(false);
                    let _ = p.reply.send(Err(QueryError::Timeout));
                }
                continue;
            }
            // Lost on the way, or late: asked again under the same id, so either copy's
            // answer is taken.
            pending.resends += 1;
            let wait = pacing.rto() * (1 << pending.resends.min(MAX_BACKOFF_SHIFT));
            let at = (now + wait).min(pending.deadline);
            let sent = send(&self.sockets[pending.socket].direct, &pending.packet);
            pacing.lost(now.into_std());
            match sent {
                Ok(()) => self.timers.push(Reverse(Timer { at, key })),
                Err(e) => {
                    if let Some(p) = self.in_flight.remove(key) {
                        self.freed(false);
                        let _ = p.reply.send(Err(QueryError::Io(e)));
                    }
                }
            }
        }
    }

    /// A seat came free: an answer lets two queries go, a query given up one.
    fn freed(&mut self, answered: bool) {
        self.credit += if answered { 2 } else { 1 };
    }

    /// Takes new queries while the window and the credit have room, and sends them.
    fn admit(&mut self, cx: &mut Context<'_>, pacing: &mut Pacing) {
        if self.in_flight.is_empty() {
            self.credit = self.credit.max(INITIAL_BURST);
        }
        while !self.closed && self.credit > 0 && self.in_flight.len() < pacing.window() {
            match self.incoming.poll_recv(cx) {
                Poll::Ready(Some(request)) => {
                    self.credit -= 1;
                    self.start(request, pacing);
                }
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => break,
            }
        }
        // What this wake's answers earned and did not use carries over only up to a burst.
        self.credit = self.credit.min(INITIAL_BURST);
        if !self.unsent.is_empty() {
            self.flush();
        }
    }

    /// Puts a query in flight (id drawn, timer set); `flush` sends it.
    fn start(&mut self, request: Request, pacing: &Pacing) {
        if request.reply.is_closed() {
            return; // the caller gave up while it queued
        }
        let now = Instant::now();
        let socket = self.next_socket;
        self.next_socket = (self.next_socket + 1) % self.sockets.len();
        let pending = Pending {
            packet: request.packet,
            socket,
            first_sent: now,
            deadline: now + self.timeout,
            resends: 0,
            reply: request.reply,
        };
        let (id, key) = match self.in_flight.insert(&mut self.rng, pending) {
            Ok(placed) => placed,
            Err(pending) => {
                let too_many = QueryError::Io("too many queries in flight".into());
                let _ = pending.reply.send(Err(too_many));
                return;
            }
        };
        let Some(pending) = self.in_flight.get_mut(key) else {
            return;
        };
        wire::set_id(&mut pending.packet, id);
        let at = (now + pacing.rto()).min(pending.deadline);
        self.timers.push(Reverse(Timer { at, key }));
        self.unsent.push(key);
    }

    /// Sends the queries admitted, several per call on each socket. Those a full send buffer
    /// refused count as lost (their timers send them again); an error fails them.
    fn flush(&mut self) {
        let unsent = std::mem::take(&mut self.unsent);
        for socket in 0..self.sockets.len() {
            let packets: Vec<&[u8]> = unsent
                .iter()
                .filter_map(|&key| self.in_flight.get(key))
                .filter(|p| p.socket == socket)
                .map(|p| p.packet.as_slice())
                .collect();
            if packets.is_empty() {
                continue;
            }
            let direct = &self.sockets[socket].direct;
            // An error left on the socket by an earlier ICMP report is read by the first
            // try, so it tries twice.
            let failed = match mmsg::send_all(direct, &packets) {
                Ok(_) => None,
                Err(_) => match mmsg::send_all(direct, &packets) {
                    Ok(_) => None,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(e.to_string()),
                },
            };
            if let Some(e) = failed {
                for &key in &unsent {
                    if self.in_flight.get(key).is_some_and(|p| p.socket == socket) {
                        if let Some(p) = self.in_flight.remove(key) {
                            self.freed(false);
                            let _ = p.reply.send(Err(QueryError::Io(e.clone())));
                        }
                    }
                }
            }
        }
        self.unsent = unsent;
        self.unsent.clear();
    }
}

/// Sends one datagram. A full send buffer counts as a loss (the RTO sends it again); an error
/// left on the socket by an earlier ICMP report is read by the first try, so it tries twice.
fn send(socket: &std::net::UdpSocket, packet: &[u8]) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..2 {
        match socket.send(packet) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::wire::{encode_query, TYPE_A};
    use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
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

    fn query(i: usize) -> Vec<u8> {
        encode_query(&format!("{i}.0.0.127.zen.example."), TYPE_A).expect("name")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_query_is_sent_again_and_answered_before_the_timeout() {
        let server = lossy_server().await;
        let dns = UdpDns::new(server, 2, 16, Duration::from_secs(2)).expect("client");
        let answers = futures::future::join_all((0..40).map(|i| dns.query(query(i)))).await;
        for (i, a) in answers.iter().enumerate() {
            match a {
                Ok(reply) => assert_eq!(reply.response_code, ResponseCode::NXDomain, "{i}"),
                Err(e) => panic!("{i}: {e:?} (the resent copy was not answered)"),
            }
        }
        let p = dns.pacing();
        assert!(p.losses >= 40, "every query was lost once: {}", p.losses);
        assert!(p.cuts >= 1 && p.smallest_window < 16, "{p:?}");
    }

    /// A server that answers every query twice: once for another question under the same
    /// id (a forgery, or a late reply to an earlier query), then truly; replies come from
    /// the socket it was given.
    async fn echo_server(
        socket: UdpSocket,
        reply_for: impl Fn(&Message) -> Vec<Message> + Send + 'static,
    ) {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            for reply in reply_for(&q) {
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        }
    }

    fn reply_to(q: &Message, name: &str, code: ResponseCode) -> Message {
        use hickory_resolver::proto::op::Query;
        use hickory_resolver::proto::rr::{Name, RecordType};
        let mut reply = Message::new();
        reply
            .set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_response_code(code)
            .add_query(Query::query(
                Name::from_ascii(name).expect("name"),
                RecordType::A,
            ));
        reply
    }

    #[tokio::test]
    async fn a_reply_for_another_question_under_the_same_id_is_not_taken() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server = socket.local_addr().expect("addr");
        tokio::spawn(echo_server(socket, |q| {
            let asked = q.queries()[0].name().to_ascii();
            vec![
                reply_to(q, "other.example.", ResponseCode::ServFail),
                reply_to(q, &asked, ResponseCode::NXDomain),
            ]
        }));
        let dns = UdpDns::new(server, 1, 8, Duration::from_secs(2)).expect("client");
        for i in 0..20 {
            let reply = dns.query(query(i)).await.expect("answered");
            assert_eq!(reply.response_code, ResponseCode::NXDomain, "query {i}");
        }
    }

    #[tokio::test]
    async fn a_truncated_reply_or_one_longer_than_the_buffer_is_truncated() {
        use hickory_resolver::proto::rr::rdata::TXT;
        use hickory_resolver::proto::rr::{RData, Record};
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server = socket.local_addr().expect("addr");
        tokio::spawn(echo_server(socket, |q| {
            let name = q.queries()[0].name().clone();
            let mut reply = reply_to(q, &name.to_ascii(), ResponseCode::NoError);
            if name.to_ascii().starts_with("tc.") {
                reply.set_truncated(true);
            } else {
                // Longer than any receive buffer: the kernel cuts it.
                let text = "x".repeat(250);
                for _ in 0..12 {
                    let txt = TXT::new(vec![text.clone()]);
                    reply.add_answer(Record::from_rdata(name.clone(), 60, RData::TXT(txt)));
                }
            }
            vec![reply]
        }));
        let dns = UdpDns::new(server, 1, 8, Duration::from_secs(2)).expect("client");
        let tc = encode_query("tc.example.", TYPE_A).expect("name");
        assert_eq!(dns.query(tc).await, Err(QueryError::Truncated));
        let long = encode_query("long.example.", TYPE_A).expect("name");
        assert_eq!(dns.query(long).await, Err(QueryError::Truncated));
    }

    #[tokio::test]
    async fn a_reply_from_another_address_is_not_taken() {
        // The server asked never answers; a stranger sends well-formed replies for every id.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server = silent.local_addr().expect("addr");
        let dns = UdpDns::new(server, 1, 8, Duration::from_millis(300)).expect("client");
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let asked = query(1);
        let target = {
            // The stranger learns our port and the query's id from the query as the server
            // read it, and replies from its own address.
            let ask = dns.query(asked.clone());
            tokio::pin!(ask);
            let mut buf = vec![0u8; 512];
            let (n, from) = tokio::select! {
                got = silent.recv_from(&mut buf) => got.expect("the query arrives"),
                _ = &mut ask => panic!("answered before anyone replied"),
            };
            let q = Message::from_vec(&buf[..n]).expect("query");
            let name = q.queries()[0].name().to_ascii();
            let forged = reply_to(&q, &name, ResponseCode::NXDomain);
            stranger
                .send_to(&forged.to_vec().expect("write"), from)
                .await
                .expect("send");
            ask.await
        };
        assert_eq!(target, Err(QueryError::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn queries_start_in_a_burst_of_32_then_each_answer_lets_two_go() {
        // A plain socket: read and answered by hand, without the runtime.
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let dns = Arc::new(
            UdpDns::new(
                server.local_addr().expect("addr"),
                1,
                256,
                Duration::from_secs(2),
            )
            .expect("client"),
        );
        let asking: Vec<_> = (0..200)
            .map(|i| {
                let dns = dns.clone();
                tokio::spawn(async move { dns.query(query(i)).await })
            })
            .collect();
        let arrived = |buf: &mut Vec<u8>| {
            let mut got = Vec::new();
            while let Ok((n, from)) = server.recv_from(buf) {
                got.push((Message::from_vec(&buf[..n]).expect("query"), from));
            }
            got
        };
        let mut buf = vec![0u8; 512];
        // Well within the first RTO (400 ms): nothing is resent yet.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let first = arrived(&mut buf);
        assert_eq!(
            first.len(),
            INITIAL_BURST,
            "the window is 256, the first burst 32"
        );
        // Three answers: six more queries go, not 200 - 32.
        for (q, from) in first.iter().take(3) {
            let name = q.queries()[0].name().to_ascii();
            let reply = reply_to(q, &name, ResponseCode::NXDomain);
            server
                .send_to(&reply.to_vec().expect("write"), from)
                .expect("answer");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(arrived(&mut buf).len(), 6);
        drop(asking);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_costs_the_timeout_after_backed_off_resends() {
        // A plain socket: read below without the runtime's readiness tracking.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        silent.set_nonblocking(true).expect("nonblocking");
        let server = silent.local_addr().expect("addr");
        let dns = UdpDns::new(server, 1, 8, Duration::from_secs(2)).expect("client");
        let started = Instant::now();
        assert_eq!(dns.query(query(1)).await, Err(QueryError::Timeout));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_millis(2010),
            "{took:?}"
        );
        // No RTT measured: the RTO is the initial 400 ms, and resends wait 800, then the
        // deadline: 2 resends, not one every RTO.
        let mut buf = vec![0u8; 512];
        let mut copies = 0;
        while silent.recv_from(&mut buf).is_ok() {
            copies += 1;
        }
        assert_eq!(copies, 3, "the query and two resends");
        assert_eq!(dns.pacing().losses, 2);
    }
}
