//! The worked examples of `hardening/PROTOCOL.md`, checked byte for byte
//! against the frame codec (STYLE S19: golden bytes; S5: the document is
//! tested against the code, not copied from it).
//!
//! Every example is a fenced block whose info string is `hex example=NAME`
//! followed by the values it encodes (`key=value` or `key="value with
//! spaces"`); its content is hex bytes, with `#` starting a comment. For each
//! block this test encodes the stated values with `applianced::codec::frame`
//! and requires the block's bytes exactly, decodes the block back, and, for
//! an EVENTS example, requires its record to be a valid event of its lane.
//! A fenced block that holds a hex dump without the marker fails the test,
//! so no example escapes the check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use applianced::codec::frame::{self, ErrorCode, Kind, RejectCode, StatusCode};
use applianced::codec::validate::validate_record;
use applianced::model::matrix::Module;
use bytes::BytesMut;

const DOCUMENT: &str = "hardening/PROTOCOL.md";

/// Every example name the document must hold at least once.
const EXAMPLES_REQUIRED: [&str; 9] =
    ["crc32c", "hello", "welcome", "events", "ack", "credit", "reject", "error", "status"];

/// One `hex example=...` block of the document.
#[derive(Debug)]
struct Example {
    /// 1-based line of the opening fence.
    line: usize,
    values: BTreeMap<String, String>,
    bytes: Vec<u8>,
}

impl Example {
    fn name(&self) -> &str {
        self.text("example")
    }

    fn text(&self, key: &str) -> &str {
        self.values.get(key).unwrap_or_else(|| panic!("{DOCUMENT}:{}: example lacks `{key}=`", self.line))
    }

    fn number(&self, key: &str) -> u64 {
        let text = self.text(key);
        text.parse().unwrap_or_else(|_| panic!("{DOCUMENT}:{}: `{key}={text}` is not a number", self.line))
    }

    fn small<T: TryFrom<u64>>(&self, key: &str) -> T {
        T::try_from(self.number(key)).unwrap_or_else(|_| panic!("{DOCUMENT}:{}: `{key}` out of range", self.line))
    }
}

fn document() -> String {
    let path = format!("{}/{DOCUMENT}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fenced block: its opening line, info string and content lines.
struct Fence<'a> {
    line: usize,
    info: &'a str,
    content: Vec<&'a str>,
}

fn fences(text: &str) -> Vec<Fence<'_>> {
    let mut fences = Vec::new();
    let mut open: Option<Fence<'_>> = None;
    for (index, line) in text.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Fence { line: index + 1, info: info.trim(), content: Vec::new() });
                }
            }
            Some(fence) => {
                if line.trim_end() == "```" {
                    fences.extend(open.take());
                } else {
                    fence.content.push(line);
                }
            }
        }
    }
    assert!(open.is_none(), "{DOCUMENT}: a fenced block is not closed");
    fences
}

/// `key=value` and `key="value with spaces"` pairs of an info string.
fn parse_values(line: usize, info: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let mut rest = info.trim();
    while !rest.is_empty() {
        let (key, after) =
            rest.split_once('=').unwrap_or_else(|| panic!("{DOCUMENT}:{line}: `{rest}` is not key=value"));
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or_else(|| panic!("{DOCUMENT}:{line}: unclosed quote"));
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_at(after.find(' ').unwrap_or(after.len())),
        };
        let previous = values.insert(key.trim().to_string(), value.to_string());
        assert!(previous.is_none(), "{DOCUMENT}:{line}: `{key}` given twice");
        rest = after.trim_start();
    }
    values
}

/// The bytes of a hex block: pairs of hex digits separated by spaces,
/// `#` to the end of a line being a comment.
fn parse_hex(line: usize, content: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (offset, text) in content.iter().enumerate() {
        let data = text.split('#').next().unwrap_or_default();
        for token in data.split_whitespace() {
            let byte = (token.len() == 2)
                .then(|| u8::from_str_radix(token, 16).ok())
                .flatten()
                .unwrap_or_else(|| panic!("{DOCUMENT}:{}: `{token}` is not one hex byte", line + 1 + offset));
            bytes.push(byte);
        }
    }
    bytes
}

/// Whether a block's content looks like a hex dump (every non-empty line
/// starts with hex bytes).
fn looks_like_hex(content: &[&str]) -> bool {
    let lines: Vec<&str> = content.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    !lines.is_empty()
        && lines.iter().all(|l| {
            let mut tokens = l.split_whitespace();
            let first_two: Vec<&str> = tokens.by_ref().take(2).collect();
            first_two.len() == 2 && first_two.iter().all(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
        })
}

fn examples() -> Vec<Example> {
    let text = document();
    let mut examples = Vec::new();
    for fence in fences(&text) {
        let Some(values) = fence.info.strip_prefix("hex") else {
            assert!(
                !looks_like_hex(&fence.content),
                "{DOCUMENT}:{}: a hex dump without an `hex example=` marker is not checked",
                fence.line
            );
            continue;
        };
        let values = parse_values(fence.line, values);
        assert!(values.contains_key("example"), "{DOCUMENT}:{}: `hex` block without `example=`", fence.line);
        examples.push(Example { line: fence.line, values, bytes: parse_hex(fence.line, &fence.content) });
    }
    examples
}

/// A UUID in its text form, as its 16 bytes.
fn uuid(line: usize, text: &str) -> [u8; 16] {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    assert_eq!(digits.len(), 32, "{DOCUMENT}:{line}: `{text}` is not a UUID");
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            .unwrap_or_else(|_| panic!("{DOCUMENT}:{line}: `{text}` is not a UUID"));
    }
    out
}

/// Fields given as `type:value` (or `null`), in COPY BINARY field encoding.
fn encode_fields(line: usize, spec: &str) -> (u16, Vec<u8>) {
    let mut out = Vec::new();
    let mut count = 0u16;
    for field in spec.split_whitespace() {
        count += 1;
        let value: Vec<u8> = match field.split_once(':') {
            None if field == "null" => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            Some(("uuid", v)) => uuid(line, v).to_vec(),
            Some(("text", v)) => v.as_bytes().to_vec(),
            Some(("int2", v)) => v.parse::<i16>().unwrap().to_be_bytes().to_vec(),
            Some(("int4", v)) => v.parse::<i32>().unwrap().to_be_bytes().to_vec(),
            Some(("int8", v)) => v.parse::<i64>().unwrap().to_be_bytes().to_vec(),
            Some(("float4", v)) => v.parse::<f32>().unwrap().to_be_bytes().to_vec(),
            _ => panic!("{DOCUMENT}:{line}: field `{field}` is not type:value or null"),
        };
        out.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&value);
    }
    (count, out)
}

fn error_code(line: usize, code: u16) -> ErrorCode {
    use ErrorCode::*;
    [
        BadMagic,
        UnsupportedVersion,
        UnknownKind,
        NonZeroReserved,
        FrameTooLarge,
        BadChecksum,
        Malformed,
        HandshakeRequired,
        WrongModule,
        SequenceGap,
        SequenceRegression,
        EpochFenced,
        CreditExceeded,
        FieldCount,
        PeerNotAllowed,
        LaneFull,
        Internal,
        ProducerNotAllowed,
        Timeout,
        NotReading,
        Evicted,
    ]
    .into_iter()
    .find(|c| *c as u16 == code)
    .unwrap_or_else(|| panic!("{DOCUMENT}:{line}: no ERROR code {code}"))
}

fn module(line: usize, code: u8) -> Module {
    Module::ALL
        .into_iter()
        .find(|m| frame::module_code(*m) == code)
        .unwrap_or_else(|| panic!("{DOCUMENT}:{line}: no module code {code}"))
}

/// The EVENTS body an `events` example states: one record.
fn events_body(example: &Example) -> BytesMut {
    let line = example.line;
    let (field_count, fields) = encode_fields(line, example.text("fields"));
    let event_time_us = i64::try_from(example.number("event_time_us")).unwrap();
    let mut body = BytesMut::new();
    frame::encode_events_header(&mut body, example.number("first_seq"), 1);
    frame::encode_record(
        &mut body,
        example.small("table"),
        &uuid(line, example.text("source_id")),
        event_time_us,
        field_count,
        &fields,
    );
    body
}

/// What the codec encodes for an example's stated values, and the frame
/// kind it is (None for a bare CRC32C).
fn encode(example: &Example) -> (Vec<u8>, Option<Kind>) {
    let line = example.line;
    let mut out = BytesMut::new();
    let kind = match example.name() {
        "crc32c" => return (crc32c::crc32c(example.text("input").as_bytes()).to_be_bytes().to_vec(), None),
        "hello" => {
            let (id, epoch) = (example.number("producer_id"), example.number("producer_epoch"));
            frame::encode_hello(&mut out, example.small("module"), id, epoch);
            Kind::Hello
        }
        "welcome" => {
            let (epoch, seq) = (example.number("watermark_epoch"), example.number("watermark_seq"));
            frame::encode_welcome(&mut out, epoch, seq, example.small("credit_bytes"));
            Kind::Welcome
        }
        "events" => {
            frame::encode_frame(&mut out, Kind::Events, &events_body(example));
            Kind::Events
        }
        "ack" => {
            frame::encode_ack(&mut out, example.number("epoch"), example.number("durable_seq"));
            Kind::Ack
        }
        "credit" => {
            frame::encode_credit(&mut out, example.small("credit_bytes"));
            Kind::Credit
        }
        "reject" => {
            let code = RejectCode::from_u16(example.small("code"))
                .unwrap_or_else(|| panic!("{DOCUMENT}:{line}: no REJECT code"));
            frame::encode_reject(
                &mut out,
                example.number("epoch"),
                example.number("seq"),
                code,
                example.text("reason"),
            );
            Kind::Reject
        }
        "error" => {
            frame::encode_error(&mut out, error_code(line, example.small("code")), example.text("reason"));
            Kind::Error
        }
        "status" => {
            let code = StatusCode::from_u16(example.small("code"))
                .unwrap_or_else(|| panic!("{DOCUMENT}:{line}: no STATUS code"));
            frame::encode_status(&mut out, code, example.text("reason"));
            Kind::Status
        }
        other => panic!("{DOCUMENT}:{line}: unknown example `{other}`"),
    };
    (out.to_vec(), Some(kind))
}

/// Where two byte strings first differ, for the failure message.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

#[test]
fn every_example_is_what_the_codec_encodes() {
    let examples = examples();
    for example in &examples {
        let (expected, _) = encode(example);
        assert!(
            example.bytes == expected,
            "{DOCUMENT}:{}: example `{}` differs from the codec at byte {}:\n  document {:02x?}\n  codec    {:02x?}",
            example.line,
            example.name(),
            first_difference(&example.bytes, &expected),
            example.bytes,
            expected
        );
    }
    let names: BTreeSet<&str> = examples.iter().map(Example::name).collect();
    for name in EXAMPLES_REQUIRED {
        assert!(names.contains(name), "{DOCUMENT}: no `hex example={name}` block");
    }
}

#[test]
fn every_frame_example_decodes_back_to_its_kind_and_values() {
    for example in examples() {
        let (_, Some(kind)) = encode(&example) else { continue };
        let line = example.line;
        let mut buffer = BytesMut::from(&example.bytes[..]);
        let decoded = frame::decode_frame(&mut buffer)
            .unwrap_or_else(|e| panic!("{DOCUMENT}:{line}: {e}"))
            .unwrap_or_else(|| panic!("{DOCUMENT}:{line}: incomplete frame"));
        assert!(buffer.is_empty(), "{DOCUMENT}:{line}: bytes after the frame");
        assert_eq!(decoded.kind, kind, "{DOCUMENT}:{line}");
        match kind {
            Kind::Hello => {
                let hello = frame::decode_hello(&decoded.body).unwrap();
                assert_eq!(hello.producer_id.get(), example.number("producer_id"), "{DOCUMENT}:{line}");
            }
            Kind::Welcome => {
                let welcome = frame::decode_welcome(&decoded.body).unwrap();
                assert_eq!(welcome.watermark_seq.get(), example.number("watermark_seq"), "{DOCUMENT}:{line}");
            }
            Kind::Ack => {
                let ack = frame::decode_ack(&decoded.body).unwrap();
                assert_eq!(ack.durable_seq.get(), example.number("durable_seq"), "{DOCUMENT}:{line}");
            }
            Kind::Credit => {
                let credit = frame::decode_credit(&decoded.body).unwrap();
                assert_eq!(u64::from(credit.credit_bytes.get()), example.number("credit_bytes"), "{DOCUMENT}:{line}");
            }
            Kind::Reject => {
                let (head, reason) = frame::decode_reject(&decoded.body).unwrap();
                assert_eq!((head.seq.get(), reason.as_str()), (example.number("seq"), example.text("reason")));
            }
            Kind::Error | Kind::Status => {
                let (code, reason) = frame::decode_error(&decoded.body).unwrap();
                assert_eq!((u64::from(code), reason.as_str()), (example.number("code"), example.text("reason")));
            }
            Kind::Events => {
                let events = frame::decode_events(&decoded.body).unwrap_or_else(|e| panic!("{DOCUMENT}:{line}: {e}"));
                assert_eq!(events.first_seq, example.number("first_seq"), "{DOCUMENT}:{line}");
                let lane = module(line, example.small("module"));
                for record in &events.records {
                    let table = validate_record(lane, record)
                        .unwrap_or_else(|e| panic!("{DOCUMENT}:{line}: not a valid {} event: {e:?}", lane.name()));
                    assert_eq!(usize::from(record.table), usize::from(example.small::<u8>("table")));
                    assert_eq!(usize::from(record.field_count), table.columns.len(), "{DOCUMENT}:{line}");
                }
            }
        }
    }
}

#[test]
fn the_examples_cover_every_frame_kind() {
    let examples = examples();
    let mut kinds = BTreeSet::new();
    for example in &examples {
        assert!(!example.bytes.is_empty(), "{DOCUMENT}:{}: empty example", example.line);
        if let (_, Some(kind)) = encode(example) {
            kinds.insert(kind as u8);
        }
    }
    assert_eq!(kinds, (1..=8).collect::<BTreeSet<u8>>(), "{DOCUMENT}: an example of every frame kind");
}
