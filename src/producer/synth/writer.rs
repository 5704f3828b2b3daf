//! The field writer: single values in COPY BINARY field encoding.
//!
//! Consumes the event's random stream and the caller's `BytesMut`; produces
//! fields (i32 BE length, -1 for NULL, then PostgreSQL's binary send format
//! of the value) appended to that buffer, and counts them so
//! [`super::synthesize`] can report the event's field count. Also writes the
//! text pieces (decimals, hostnames, dotted addresses) that variable-length
//! fields are built from. Sans-I/O (STYLE S3), in the caller's thread.
//!
//! Invariant: `count` grows by exactly one per field written, NULL or not,
//! so it equals the fields appended since the writer was made.

use bytes::{BufMut, BytesMut};

use super::rng::Rng;
use super::with_uuid_version;

/// Digits of `u64::MAX` in decimal.
const DECIMAL_DIGITS_MAX: usize = 20;

/// Writes fields in COPY field encoding into the caller's buffer, counting them.
pub(super) struct Writer<'a> {
    pub(super) out: &'a mut BytesMut,
    pub(super) rng: Rng,
    pub(super) producer_id: u64,
    pub(super) host: u64,
    pub(super) count: u16,
}

/// An IPv4 or IPv6 address (IPv4 in the first four bytes).
#[derive(Clone, Copy)]
pub(super) struct Address {
    pub(super) bytes: [u8; 16],
    pub(super) v6: bool,
}

impl Writer<'_> {
    pub(super) fn field(&mut self, value: &[u8]) {
        self.out.put_i32(value.len() as i32);
        self.out.put_slice(value);
        self.count += 1;
    }

    pub(super) fn null(&mut self) {
        self.out.put_i32(-1);
        self.count += 1;
    }

    pub(super) fn int2(&mut self, value: i16) {
        self.field(&value.to_be_bytes());
    }

    pub(super) fn int4(&mut self, value: u64) {
        self.field(&(value as i32).to_be_bytes());
    }

    pub(super) fn int8(&mut self, value: u64) {
        self.field(&(value as i64).to_be_bytes());
    }

    pub(super) fn int2_of(&mut self, choices: &[i16]) {
        let value = self.rng.pick(choices);
        self.int2(value);
    }

    pub(super) fn int4_of(&mut self, choices: &[u64]) {
        let value = self.rng.pick(choices);
        self.int4(value);
    }

    pub(super) fn int8_of(&mut self, choices: &[u64]) {
        let value = self.rng.pick(choices);
        self.int8(value);
    }

    /// An int4 uniform in `low..=high`.
    pub(super) fn int4_in(&mut self, low: u64, high: u64) {
        let value = self.rng.range(low, high);
        self.int4(value);
    }

    /// An int8 uniform in `low..=high`.
    pub(super) fn int8_in(&mut self, low: u64, high: u64) {
        let value = self.rng.range(low, high);
        self.int8(value);
    }

    /// A real of `thousandths / 1000`.
    pub(super) fn float4(&mut self, thousandths: u64) {
        self.field(&(thousandths as f32 / 1000.0).to_be_bytes());
    }

    pub(super) fn random_bytes<const N: usize>(&mut self) {
        let mut value = [0u8; N];
        self.rng.fill(&mut value);
        self.field(&value);
    }

    /// A random RFC 9562 version 4 UUID.
    pub(super) fn random_uuid(&mut self) {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        self.field(&with_uuid_version(id, 4));
    }

    /// PostgreSQL's inet binary form (network.c, inet_send): family, bits,
    /// is_cidr, length, address; a host address, so all bits are set.
    pub(super) fn inet(&mut self, address: Address) {
        let mut value = [0u8; 20];
        let length = if address.v6 { 16 } else { 4 };
        let (family, bits) = if address.v6 { (3, 128) } else { (2, 32) };
        value[..4].copy_from_slice(&[family, bits, 0, length as u8]);
        value[4..4 + length].copy_from_slice(&address.bytes[..length]);
        self.field(&value[..4 + length]);
    }

    /// A variable-length field whose bytes `write` appends.
    pub(super) fn variable(&mut self, write: impl FnOnce(&mut Self)) {
        let at = self.out.len();
        self.out.put_i32(0);
        write(self);
        let length = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        self.count += 1;
    }

    pub(super) fn or_null(&mut self, present_percent: u64, write: impl FnOnce(&mut Self)) {
        if self.rng.percent(present_percent) {
            write(self);
        } else {
            self.null();
        }
    }

    pub(super) fn text(&mut self, text: &str) {
        self.field(text.as_bytes());
    }

    pub(super) fn put(&mut self, text: &str) {
        self.out.put_slice(text.as_bytes());
    }

    pub(super) fn decimal(&mut self, mut value: u64) {
        let mut digits = [0u8; DECIMAL_DIGITS_MAX];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.out.put_slice(&digits[start..]);
    }

    pub(super) fn lowercase(&mut self, letters: usize) {
        for _ in 0..letters {
            self.out.put_u8(b'a' + self.rng.below(26) as u8);
        }
    }

    pub(super) fn hostname(&mut self) {
        self.put("ws-");
        self.decimal(self.producer_id);
        self.put("-");
        self.decimal(self.host);
    }

    pub(super) fn dotted(&mut self, address: &Address) {
        for (index, octet) in address.bytes[..4].iter().enumerate() {
            if index > 0 {
                self.put(".");
            }
            self.decimal(u64::from(*octet));
        }
    }
}
