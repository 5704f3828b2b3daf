//! Composite values several tables share: a user document (written once,
//! or twice for a rename), write volumes, Windows SIDs, local and remote
//! addresses, and the connection columns of the network tables.
//!
//! Consumes the [`Writer`] of the event being made and the
//! [`super::vocabulary`]; produces fields through the writer, so it keeps
//! the writer's field count right. Sans-I/O (STYLE S3), in the caller's thread.

use super::DOMAIN_SALT;
use super::rng::mix64;
use super::vocabulary::{
    DOCUMENT_DIRECTORIES, DOCUMENT_EXTENSIONS, DOCUMENT_FOLDERS, DOCUMENT_ROOTS, DOCUMENT_STEMS, DOCUMENT_SUBFOLDERS,
    RANSOM_EXTENSIONS, REMOTE_PREFIXES, SERVICES,
};
use super::writer::{Address, Writer};

/// One user document, picked once so it can be written twice (rename).
pub(super) struct Document {
    pub(super) root: (&'static str, &'static str),
    pub(super) user: u64,
    pub(super) directory: &'static str,
    pub(super) folder: &'static str,
    pub(super) subfolder: &'static str,
    pub(super) stem: &'static str,
    pub(super) number: u64,
    pub(super) extension: &'static str,
}

impl Writer<'_> {
    pub(super) fn pick_document(&mut self) -> Document {
        Document {
            root: self.rng.pick(DOCUMENT_ROOTS),
            user: self.rng.below(50),
            directory: self.rng.pick(DOCUMENT_DIRECTORIES),
            folder: self.rng.pick(DOCUMENT_FOLDERS),
            subfolder: self.rng.pick(DOCUMENT_SUBFOLDERS),
            stem: self.rng.pick(DOCUMENT_STEMS),
            number: self.rng.range(1, 9999),
            extension: self.rng.pick(DOCUMENT_EXTENSIONS),
        }
    }

    /// `/home/user42/Documents/FY2026-Q4/final/report-1234.docx` or the Windows equivalent.
    pub(super) fn put_document(&mut self, document: &Document, windows: bool) {
        let separator = if windows { r"\" } else { "/" };
        self.put(if windows { document.root.1 } else { document.root.0 });
        self.decimal(document.user);
        self.put(separator);
        self.put(document.directory);
        self.put(separator);
        self.put(document.folder);
        self.put(separator);
        self.put(document.subfolder);
        self.put(separator);
        self.put(document.stem);
        self.put("-");
        self.decimal(document.number);
        self.put(document.extension);
    }

    /// `path`, then for a rename `target_path` with a ransom extension.
    pub(super) fn document_pair(&mut self, renamed: bool, windows: bool) {
        let document = self.pick_document();
        self.variable(|w| w.put_document(&document, windows));
        if renamed {
            let extension = self.rng.pick(RANSOM_EXTENSIONS);
            self.variable(|w| {
                w.put_document(&document, windows);
                w.put(extension);
            });
        } else {
            self.null();
        }
    }

    /// `bytes_written` and `entropy`: encrypted writes are near 8 bits/byte.
    pub(super) fn write_volume(&mut self, written: bool) {
        if !written {
            self.int8(0);
            self.null();
            return;
        }
        let pages = self.rng.range(1, 2048);
        self.int8(4096 * pages);
        let thousandths =
            if self.rng.percent(60) { self.rng.range(7_800, 7_999) } else { self.rng.range(3_000, 6_500) };
        self.float4(thousandths);
    }

    pub(super) fn user_sid(&mut self) {
        if self.rng.percent(20) {
            return self.text("S-1-5-18");
        }
        let domain = mix64(self.producer_id ^ DOMAIN_SALT);
        let rid = if self.rng.percent(10) { 500 } else { 1_000 + self.rng.below(50) };
        self.variable(|w| {
            w.put("S-1-5-21-");
            w.decimal(domain & 0xffff_ffff);
            w.put("-");
            w.decimal((domain >> 32) & 0x7fff_ffff);
            w.put("-");
            w.decimal(u64::from((domain as u32).rotate_left(13)));
            w.put("-");
            w.decimal(rid);
        });
    }

    pub(super) fn local_address(&mut self, v6: bool) -> Address {
        let mut bytes = [0u8; 16];
        if v6 {
            bytes[..8].copy_from_slice(&[0xfd, 0x42, 0, self.producer_id as u8, 0, self.host as u8, 0, 0]);
            self.rng.fill(&mut bytes[8..]);
        } else {
            bytes[..4].copy_from_slice(&[10, self.producer_id as u8, self.host as u8, self.rng.range(10, 250) as u8]);
        }
        Address { bytes, v6 }
    }

    pub(super) fn remote_address(&mut self, v6: bool) -> Address {
        let mut bytes = [0u8; 16];
        if v6 {
            bytes[..6].copy_from_slice(&[0x26, 0x06, 0x47, 0x00, 0x30, 0x30]);
            bytes[14..].copy_from_slice(&(self.rng.range(1, 0xffff) as u16).to_be_bytes());
        } else {
            bytes[..3].copy_from_slice(&self.rng.pick(REMOTE_PREFIXES));
            bytes[3] = self.rng.range(1, 254) as u8;
        }
        Address { bytes, v6 }
    }

    /// protocol, local address and port, remote address and port, byte counts.
    pub(super) fn connection(&mut self) {
        let (port, protocol, _) = self.rng.pick(SERVICES);
        let v6 = self.rng.percent(15);
        self.int2(protocol);
        let local = self.local_address(v6);
        self.inet(local);
        self.int4_in(32_768, 60_999);
        let remote = self.remote_address(v6);
        self.inet(remote);
        self.int4(port);
        self.int8_in(60, 40_000_000);
        self.int8_in(60, 2_000_000);
    }
}
