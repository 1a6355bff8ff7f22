//! The few DNS messages a blocklist check needs, written and read by hand: a query is encoded
//! once (header, one question) and its id patched in place for every send; a reply is read
//! only as far as the checker needs (header, the question it echoes, A and TXT answers), with
//! no allocation for an answer that carries no record. hickory-proto stays the reference:
//! the tests check both directions against it.
//!
//! Owns only byte layouts (RFC 1035 §4); no sockets, no clocks.

use hickory_resolver::proto::op::ResponseCode;
use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// The longest name on the wire, length octets and the root included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
/// Compression pointers followed before a name is taken as a loop.
const MAX_POINTERS: usize = 32;

/// Why a name could not be written as a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    EmptyLabel,
    LabelTooLong(usize),
    NameTooLong,
    NotAscii,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "the name is empty"),
            NameError::EmptyLabel => write!(f, "the name has an empty label"),
            NameError::LabelTooLong(n) => write!(f, "a label is {n} bytes (at most 63)"),
            NameError::NameTooLong => write!(f, "the name is longer than 255 bytes"),
            NameError::NotAscii => write!(f, "the name holds a space, control or non-ASCII byte"),
        }
    }
}

/// A query message with id 0, recursion desired, one question: `name` (dotted, the final dot
/// optional) of type `qtype`, class IN. Send it with [`set_id`].
pub fn encode_query(name: &str, qtype: u16) -> Result<Vec<u8>, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let mut packet = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    // id 0; flags: RD; QDCOUNT 1; AN/NS/ARCOUNT 0.
    packet.extend_from_slice(&[0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NameError::LabelTooLong(label.len()));
        }
        if !label.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(NameError::NotAscii);
        }
        // At most 63: fits in the length octet.
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    if packet.len() - HEADER_LEN > MAX_NAME {
        return Err(NameError::NameTooLong);
    }
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// Writes `id` into a message's header.
pub fn set_id(packet: &mut [u8], id: u16) {
    if let Some(head) = packet.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// The id of a message, if it is long enough to have a header.
pub fn id_of(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

/// The question section of a query built by [`encode_query`] (name, type, class).
pub fn question_of(query: &[u8]) -> &[u8] {
    query.get(HEADER_LEN..).unwrap_or_default()
}

/// The question type of a query built by [`encode_query`].
pub fn qtype_of(query: &[u8]) -> u16 {
    let n = query.len();
    match query.get(n.saturating_sub(4)..n.saturating_sub(2)) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// What the checker takes from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub response_code: ResponseCode,
    /// TC: the answer did not fit; ask again over TCP.
    pub truncated: bool,
    /// Every A record in the answer section.
    pub a: Vec<Ipv4Addr>,
    /// Every TXT record in the answer section, its strings joined.
    pub txt: Vec<Vec<u8>>,
}

/// Why a datagram is not a reply to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Cut short, or a name or record runs past the end.
    Malformed,
    /// Not a response, not a standard query, or not exactly one question.
    NotAReply,
    /// The question is not the one asked (another query's reply under a reused id).
    OtherQuestion,
}

/// Whether `message`'s header and question make it a reply to `query`; only those are read
/// (for a reply cut short on the way).
pub fn is_reply_to(message: &[u8], query: &[u8]) -> bool {
    reply_header(message, query).is_ok()
}

/// The checks of `read_reply` up to the end of the question: flags, answer count, and where
/// the answers start.
fn reply_header(message: &[u8], query: &[u8]) -> Result<(u16, u16, usize), ReplyError> {
    let header = message.get(..HEADER_LEN).ok_or(ReplyError::Malformed)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    if !is_response || opcode != 0 || count(4) != 1 {
        return Err(ReplyError::NotAReply);
    }
    let asked = question_of(query);
    let asked_name_len = asked.len().saturating_sub(4);
    let (same_name, pos) = name_equals(message, HEADER_LEN, &asked[..asked_name_len])?;
    let fixed = message.get(pos..pos + 4).ok_or(ReplyError::Malformed)?;
    if !same_name || fixed != &asked[asked_name_len..] {
        return Err(ReplyError::OtherQuestion);
    }
    Ok((flags, count(6), pos + 4))
}

/// Reads `message` as the reply to `query` (a message from [`encode_query`]): the ids must
/// already have been matched by the caller; the question must be the same name (ignoring
/// ASCII case), type and class.
pub fn read_reply(message: &[u8], query: &[u8]) -> Result<Reply, ReplyError> {
    let (flags, answers, mut pos) = reply_header(message, query)?;
    let truncated = flags & 0x0200 != 0;
    let response_code = ResponseCode::from_low((flags & 0xF) as u8);
    let mut reply = Reply {
        response_code,
        truncated,
        a: Vec::new(),
        txt: Vec::new(),
    };
    for _ in 0..answers {
        pos = skip_name(message, pos)?;
        let fixed = message.get(pos..pos + 10).ok_or(ReplyError::Malformed)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10;
        let data = message.get(pos..pos + len).ok_or(ReplyError::Malformed)?;
        pos += len;
        if class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_A => match data {
                &[a, b, c, d] => reply.a.push(Ipv4Addr::new(a, b, c, d)),
                _ => return Err(ReplyError::Malformed),
            },
            TYPE_TXT => reply.txt.push(txt_strings(data)?),
            _ => {}
        }
    }
    Ok(reply)
}

/// The character-strings of a TXT record's data, joined.
fn txt_strings(mut data: &[u8]) -> Result<Vec<u8>, ReplyError> {
    let mut text = Vec::with_capacity(data.len());
    while let Some((&len, rest)) = data.split_first() {
        let part = rest.get(..usize::from(len)).ok_or(ReplyError::Malformed)?;
        text.extend_from_slice(part);
        data = &rest[usize::from(len)..];
    }
    Ok(text)
}

/// Where the name starting at `pos` ends (compression pointers are not followed: a pointer
/// ends the name in place).
fn skip_name(message: &[u8], mut pos: usize) -> Result<usize, ReplyError> {
    loop {
        let len = *message.get(pos).ok_or(ReplyError::Malformed)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => {
                message.get(pos + 1).ok_or(ReplyError::Malformed)?;
                return Ok(pos + 2);
            }
            _ => return Err(ReplyError::Malformed),
        }
    }
}

/// Whether the (possibly compressed) name at `pos` equals `wire` (an uncompressed name, as
/// [`encode_query`] writes it), ignoring ASCII case; and where the name ends at `pos`.
fn name_equals(message: &[u8], pos: usize, wire: &[u8]) -> Result<(bool, usize), ReplyError> {
    let end = skip_name(message, pos)?;
    let mut at = pos;
    let mut theirs = Vec::with_capacity(wire.len());
    let mut pointers = 0;
    loop {
        let len = *message.get(at).ok_or(ReplyError::Malformed)?;
        if len & 0xC0 == 0xC0 {
            pointers += 1;
            if pointers > MAX_POINTERS {
                return Err(ReplyError::Malformed);
            }
            let low = *message.get(at + 1).ok_or(ReplyError::Malformed)?;
            at = usize::from(u16::from_be_bytes([len & 0x3F, low]));
            continue;
        }
        let label = message
            .get(at..at + 1 + usize::from(len))
            .ok_or(ReplyError::Malformed)?;
        theirs.extend_from_slice(label);
        if theirs.len() > MAX_NAME {
            return Err(ReplyError::Malformed);
        }
        if len == 0 {
            break;
        }
        at += label.len();
    }
    Ok((theirs.eq_ignore_ascii_case(wire), end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
    use hickory_resolver::proto::rr::rdata::{A, CNAME, TXT};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

    const NAME: &str = "10.2.0.192.zen.spamhaus.org.";

    fn hickory_reply(query: &Message) -> Message {
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .add_queries(query.queries().to_vec());
        reply
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    #[test]
    fn queries_encode_as_hickory_reads_them() {
        for (text, qtype, rtype) in [
            (NAME, TYPE_A, RecordType::A),
            ("2.0.0.127.bl.test", TYPE_TXT, RecordType::TXT),
        ] {
            let mut packet = encode_query(text, qtype).expect("encode");
            set_id(&mut packet, 0xBEEF);
            let msg = Message::from_vec(&packet).expect("hickory reads it");
            assert_eq!(msg.id(), 0xBEEF);
            assert_eq!(msg.message_type(), MessageType::Query);
            assert_eq!(msg.op_code(), OpCode::Query);
            assert!(msg.recursion_desired());
            let fqdn = format!("{}.", text.trim_end_matches('.'));
            assert_eq!(msg.queries(), &[Query::query(name(&fqdn), rtype)]);
            assert_eq!(id_of(&packet), Some(0xBEEF));
            assert_eq!(qtype_of(&packet), qtype);
        }
    }

    #[test]
    fn queries_are_byte_for_byte_what_hickory_writes() {
        let mut msg = Message::new();
        msg.set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name(NAME), RecordType::A));
        let mut ours = encode_query(NAME, TYPE_A).expect("encode");
        set_id(&mut ours, 7);
        assert_eq!(ours, msg.to_vec().expect("hickory writes it"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(encode_query("", TYPE_A), Err(NameError::Empty));
        assert_eq!(encode_query(".", TYPE_A), Err(NameError::Empty));
        assert_eq!(encode_query("a..b", TYPE_A), Err(NameError::EmptyLabel));
        assert_eq!(
            encode_query(&format!("{}.test", "x".repeat(64)), TYPE_A),
            Err(NameError::LabelTooLong(64))
        );
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(encode_query(&long, TYPE_A), Err(NameError::NameTooLong));
        assert_eq!(encode_query("a b.test", TYPE_A), Err(NameError::NotAscii));
        assert_eq!(encode_query("é.test", TYPE_A), Err(NameError::NotAscii));
        // 253 characters of text is the longest name that fits.
        let longest = [
            "x".repeat(63),
            "y".repeat(63),
            "z".repeat(63),
            "w".repeat(61),
        ];
        assert!(encode_query(&longest.join("."), TYPE_A).is_ok());
        assert_eq!(
            encode_query(&format!("{}w", longest.join(".")), TYPE_A),
            Err(NameError::NameTooLong)
        );
    }

    #[test]
    fn a_and_txt_answers_are_read_from_hickory_replies() {
        let mut query = encode_query(NAME, TYPE_A).expect("encode");
        set_id(&mut query, 99);
        let asked = Message::from_vec(&query).expect("parse");
        let mut reply = hickory_reply(&asked);
        for code in [[127, 0, 0, 2], [127, 0, 0, 4]] {
            reply.add_answer(Record::from_rdata(
                name(NAME),
                60,
                RData::A(A::from(Ipv4Addr::from(code))),
            ));
        }
        // A record of another type in between is skipped.
        reply.add_answer(Record::from_rdata(
            name(NAME),
            60,
            RData::CNAME(CNAME(name("other.example."))),
        ));
        let bytes = reply.to_vec().expect("hickory writes it");
        let got = read_reply(&bytes, &query).expect("read");
        assert_eq!(got.response_code, ResponseCode::NoError);
        assert!(!got.truncated);
        assert_eq!(
            got.a,
            vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 4)]
        );
        assert!(got.txt.is_empty());

        let mut query = encode_query(NAME, TYPE_TXT).expect("encode");
        set_id(&mut query, 100);
        let asked = Message::from_vec(&query).expect("parse");
        let mut reply = hickory_reply(&asked);
        reply.add_answer(Record::from_rdata(
            name(NAME),
            60,
            RData::TXT(TXT::new(vec![
                "Listed: see ".to_string(),
                "https://check.example/".to_string(),
            ])),
        ));
        reply.add_answer(Record::from_rdata(
            name(NAME),
            60,
            RData::TXT(TXT::new(vec![String::new()])),
        ));
        let bytes = reply.to_vec().expect("hickory writes it");
        let got = read_reply(&bytes, &query).expect("read");
        assert_eq!(
            got.txt,
            vec![b"Listed: see https://check.example/".to_vec(), Vec::new()]
        );
    }

    #[test]
    fn response_codes_and_truncation_are_read() {
        let query = encode_query(NAME, TYPE_A).expect("encode");
        let asked = Message::from_vec(&query).expect("parse");
        for rcode in [
            ResponseCode::NXDomain,
            ResponseCode::ServFail,
            ResponseCode::Refused,
        ] {
            let mut reply = hickory_reply(&asked);
            reply.set_response_code(rcode);
            let got = read_reply(&reply.to_vec().expect("write"), &query).expect("read");
            assert_eq!(got.response_code, rcode);
            assert!(got.a.is_empty());
        }
        let mut reply = hickory_reply(&asked);
        reply.set_truncated(true);
        let got = read_reply(&reply.to_vec().expect("write"), &query).expect("read");
        assert!(got.truncated);
    }

    #[test]
    fn the_question_must_be_the_one_asked() {
        let query = encode_query(NAME, TYPE_A).expect("encode");
        let asked = Message::from_vec(&query).expect("parse");
        // Another name under the same id: a late reply to an earlier query.
        let mut other = hickory_reply(&asked);
        other.take_queries();
        other.add_query(Query::query(
            name("11.2.0.192.zen.spamhaus.org."),
            RecordType::A,
        ));
        assert_eq!(
            read_reply(&other.to_vec().expect("write"), &query),
            Err(ReplyError::OtherQuestion)
        );
        // The same name for another type.
        let mut txt = hickory_reply(&asked);
        txt.take_queries();
        txt.add_query(Query::query(name(NAME), RecordType::TXT));
        assert_eq!(
            read_reply(&txt.to_vec().expect("write"), &query),
            Err(ReplyError::OtherQuestion)
        );
        // Case does not matter (RFC 4343).
        let mut upper = hickory_reply(&asked);
        upper.take_queries();
        upper.add_query(Query::query(name(&NAME.to_uppercase()), RecordType::A));
        assert!(read_reply(&upper.to_vec().expect("write"), &query).is_ok());
        // A query is not a reply to itself.
        assert_eq!(read_reply(&query, &query), Err(ReplyError::NotAReply));
        // The header and question alone say whether a datagram cut short is the reply.
        let same = hickory_reply(&asked).to_vec().expect("write");
        assert!(is_reply_to(&same, &query));
        assert!(!is_reply_to(&other.to_vec().expect("write"), &query));
        assert!(!is_reply_to(&query, &query));
    }

    #[test]
    fn compressed_names_are_followed_and_bad_ones_refused() {
        let query = encode_query("a.test", TYPE_A).expect("encode");
        let mut reply = query.clone();
        reply[2] |= 0x80; // QR
        reply[7] = 1; // ANCOUNT
                      // Answer owner: a pointer to the question name at offset 12.
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
        let got = read_reply(&reply, &query).expect("read");
        assert_eq!(got.a, vec![Ipv4Addr::new(127, 0, 0, 2)]);
        // Cut short anywhere: malformed, never a panic.
        for cut in 0..reply.len() {
            assert!(read_reply(&reply[..cut], &query).is_err(), "cut at {cut}");
        }
        // A question that is a pointer to itself loops.
        let mut looping = reply[..12].to_vec();
        looping.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(read_reply(&looping, &query), Err(ReplyError::Malformed));
        // An A record whose data is not 4 bytes.
        let mut bad = reply[..reply.len() - 6].to_vec();
        bad.extend_from_slice(&[0, 3, 127, 0, 0]);
        assert_eq!(read_reply(&bad, &query), Err(ReplyError::Malformed));
    }
}
