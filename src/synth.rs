//! Deterministic synthetic telemetry, for load generation and tests.
//!
//! Consumes a module, a producer id and a sequence number; produces the
//! fields of one event in COPY BINARY field encoding (exactly what a
//! producer puts in an EVENTS record, see [`crate::frame::RecordRef`]) and
//! the values of its record header. Content is a pure function of the three
//! inputs: a splitmix64 stream seeded from them picks the table and every
//! value, so a load run or a golden fixture is reproducible byte for byte
//! (STYLE S19). The values imitate a ransomware intrusion as the sensors see
//! it: encryptors and shells on Linux hosts, `vssadmin` and Run keys on
//! Windows, SMB writes of `.locked` files and DGA lookups on the wire, and
//! Core's detections, incident transitions and response actions.
//!
//! Sans-I/O (STYLE S3): no clock, no socket, no allocation beyond what the
//! caller's `BytesMut` needs; runs in whichever process calls it.
//!
//! Invariant: every event passes [`crate::validate::validate_record`] for
//! its module; the tests below frame, decode and validate thousands of them.

use bytes::{BufMut, BytesMut};

use crate::matrix::Module;

/// 2026-12-01T00:00:00Z in microseconds since 1970-01-01 UTC: the clock of
/// every synthetic producer starts here, so fixtures do not depend on today.
pub const BASE_TIME_US: i64 = 1_796_083_200_000_000;
/// Event `seq` happens `seq` times this after [`BASE_TIME_US`]: 1,000
/// events per second and producer, the rate of a busy host sensor.
pub const EVENT_SPACING_US: i64 = 1_000;
/// Jitter added to each event time; below the spacing, so event times
/// strictly increase with `seq`.
const EVENT_JITTER_US_MAX: u64 = 500;
/// Event times restart after this many sequence numbers (31.7 years at the
/// spacing above), so any `u64` seq keeps the time inside validate's range.
const EVENT_TIME_SEQS_WRAP: u64 = 1_000_000_000_000;
/// Hosts behind one producer: a Windows relay forwards several hosts and a
/// DPI sensor watches a subnet; each host has its own source id.
pub const HOSTS_PER_PRODUCER: u64 = 8;
/// Agent producers (ids 1..=this) whose hosts Core's detections name as subject.
const SUBJECT_PRODUCERS: u64 = 4;
/// Digits of `u64::MAX` in decimal.
const DECIMAL_DIGITS_MAX: usize = 20;

const _: () = assert!(EVENT_JITTER_US_MAX < EVENT_SPACING_US as u64);
const _: () = assert!(
    BASE_TIME_US + EVENT_TIME_SEQS_WRAP as i64 * EVENT_SPACING_US + (EVENT_JITTER_US_MAX as i64)
        < crate::validate::EVENT_TIME_US_MAX
);

/// One synthetic event, ready to be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticEvent {
    /// Index of the table in `schema::tables_of(module)`.
    pub table: u8,
    pub source_id: [u8; 16],
    /// Microseconds since 1970-01-01 UTC.
    pub event_time_us: i64,
    pub field_count: u16,
}

/// Append the fields (COPY BINARY field encoding: i32 BE length, -1 for
/// NULL, then the PostgreSQL binary send format of the value) of the event
/// `seq` of producer `producer_id` for `module` to `fields`, and return its
/// header values.
pub fn synthesize(module: Module, producer_id: u64, seq: u64, fields: &mut BytesMut) -> SyntheticEvent {
    let mut rng = Rng(mix64(mix64(mix64(module_salt(module)) ^ producer_id) ^ seq));
    let generators = generators_of(module);
    let table = choose_table(&mut rng, generators);
    let host = rng.below(HOSTS_PER_PRODUCER);
    let jitter_us = rng.below(EVENT_JITTER_US_MAX) as i64;
    let event_time_us = BASE_TIME_US + (seq % EVENT_TIME_SEQS_WRAP) as i64 * EVENT_SPACING_US + jitter_us;
    let mut writer = Writer { out: fields, rng, producer_id, host, count: 0 };
    let generator = &generators[usize::from(table)];
    (generator.write)(&mut writer);
    // Pair assertion with the schema (STYLE S12): right table, right arity.
    debug_assert!(
        crate::schema::tables_of(module)
            .nth(usize::from(table))
            .is_some_and(|t| t.name == generator.table && t.columns.len() == usize::from(writer.count))
    );
    SyntheticEvent { table, source_id: source_id(producer_id, host), event_time_us, field_count: writer.count }
}

/// The source id of host `host_index` behind producer `producer_id`: an
/// RFC 9562 version 8 (custom) UUID, stable across runs.
pub fn source_id(producer_id: u64, host_index: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix64(producer_id ^ SOURCE_SALT).to_be_bytes());
    id[8..].copy_from_slice(&mix64(mix64(producer_id) ^ host_index).to_be_bytes());
    with_uuid_version(id, 8)
}

/// Salts ("SRCID_v1", "DOMAIN", "INCID") that keep the id streams apart.
const SOURCE_SALT: u64 = 0x5352_4349_445f_7631;
const DOMAIN_SALT: u64 = 0x0000_444f_4d41_494e;
const INCIDENT_SALT: u64 = 0x0000_0049_4e43_4944;

fn with_uuid_version(mut id: [u8; 16], version: u8) -> [u8; 16] {
    id[6] = (id[6] & 0x0f) | (version << 4);
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// The HELLO module codes, so streams of different modules never coincide.
fn module_salt(module: Module) -> u64 {
    match module {
        Module::Core => 1,
        Module::Dpi => 2,
        Module::LinuxAgent => 3,
        Module::WindowsAgent => 4,
    }
}

// --- randomness ---

/// splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): an add and a three-step mix per output, good
/// enough for test data and seedable from any 64-bit value.
struct Rng(u64);

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; bias at most bound / 2^64).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}

// --- field writer ---

/// Writes fields in COPY field encoding into the caller's buffer, counting them.
struct Writer<'a> {
    out: &'a mut BytesMut,
    rng: Rng,
    producer_id: u64,
    host: u64,
    count: u16,
}

/// An IPv4 or IPv6 address (IPv4 in the first four bytes).
#[derive(Clone, Copy)]
struct Address {
    bytes: [u8; 16],
    v6: bool,
}

impl Writer<'_> {
    fn field(&mut self, value: &[u8]) {
        self.out.put_i32(value.len() as i32);
        self.out.put_slice(value);
        self.count += 1;
    }

    fn null(&mut self) {
        self.out.put_i32(-1);
        self.count += 1;
    }

    fn int2(&mut self, value: i16) {
        self.field(&value.to_be_bytes());
    }

    fn int4(&mut self, value: u64) {
        self.field(&(value as i32).to_be_bytes());
    }

    fn int8(&mut self, value: u64) {
        self.field(&(value as i64).to_be_bytes());
    }

    fn int2_of(&mut self, choices: &[i16]) {
        let value = self.rng.pick(choices);
        self.int2(value);
    }

    fn int4_of(&mut self, choices: &[u64]) {
        let value = self.rng.pick(choices);
        self.int4(value);
    }

    fn int8_of(&mut self, choices: &[u64]) {
        let value = self.rng.pick(choices);
        self.int8(value);
    }

    /// An int4 uniform in `low..=high`.
    fn int4_in(&mut self, low: u64, high: u64) {
        let value = self.rng.range(low, high);
        self.int4(value);
    }

    /// An int8 uniform in `low..=high`.
    fn int8_in(&mut self, low: u64, high: u64) {
        let value = self.rng.range(low, high);
        self.int8(value);
    }

    /// A real of `thousandths / 1000`.
    fn float4(&mut self, thousandths: u64) {
        self.field(&(thousandths as f32 / 1000.0).to_be_bytes());
    }

    fn random_bytes<const N: usize>(&mut self) {
        let mut value = [0u8; N];
        self.rng.fill(&mut value);
        self.field(&value);
    }

    /// A random RFC 9562 version 4 UUID.
    fn random_uuid(&mut self) {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        self.field(&with_uuid_version(id, 4));
    }

    /// PostgreSQL's inet binary form (network.c, inet_send): family, bits,
    /// is_cidr, length, address; a host address, so all bits are set.
    fn inet(&mut self, address: Address) {
        let mut value = [0u8; 20];
        let length = if address.v6 { 16 } else { 4 };
        let (family, bits) = if address.v6 { (3, 128) } else { (2, 32) };
        value[..4].copy_from_slice(&[family, bits, 0, length as u8]);
        value[4..4 + length].copy_from_slice(&address.bytes[..length]);
        self.field(&value[..4 + length]);
    }

    /// A variable-length field whose bytes `write` appends.
    fn variable(&mut self, write: impl FnOnce(&mut Self)) {
        let at = self.out.len();
        self.out.put_i32(0);
        write(self);
        let length = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        self.count += 1;
    }

    fn or_null(&mut self, present_percent: u64, write: impl FnOnce(&mut Self)) {
        if self.rng.percent(present_percent) {
            write(self);
        } else {
            self.null();
        }
    }

    fn text(&mut self, text: &str) {
        self.field(text.as_bytes());
    }

    fn put(&mut self, text: &str) {
        self.out.put_slice(text.as_bytes());
    }

    fn decimal(&mut self, mut value: u64) {
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

    fn lowercase(&mut self, letters: usize) {
        for _ in 0..letters {
            self.out.put_u8(b'a' + self.rng.below(26) as u8);
        }
    }

    fn hostname(&mut self) {
        self.put("ws-");
        self.decimal(self.producer_id);
        self.put("-");
        self.decimal(self.host);
    }

    fn dotted(&mut self, address: &Address) {
        for (index, octet) in address.bytes[..4].iter().enumerate() {
            if index > 0 {
                self.put(".");
            }
            self.decimal(u64::from(*octet));
        }
    }
}

// --- tables ---

/// How often a module emits a table, and how its fields are made.
struct Generator {
    table: &'static str,
    weight_percent: u64,
    write: fn(&mut Writer<'_>),
}

const fn generator(table: &'static str, weight_percent: u64, write: fn(&mut Writer<'_>)) -> Generator {
    Generator { table, weight_percent, write }
}

const fn weights_total_percent(generators: &[Generator]) -> u64 {
    let mut total = 0;
    let mut index = 0;
    while index < generators.len() {
        total += generators[index].weight_percent;
        index += 1;
    }
    total
}

/// In `schema::tables_of(module)` order; a host sensor mostly reports files
/// and processes, a probe mostly flows.
const LINUX_AGENT: &[Generator] = &[
    generator("process_events", 35, linux_process),
    generator("file_events", 50, linux_file),
    generator("network_events", 15, linux_network),
];
const WINDOWS_AGENT: &[Generator] = &[
    generator("process_events", 25, windows_process),
    generator("file_events", 40, windows_file),
    generator("registry_events", 20, windows_registry),
    generator("network_events", 15, windows_network),
];
const DPI: &[Generator] = &[
    generator("flows", 30, dpi_flow),
    generator("dns", 25, dpi_dns),
    generator("tls", 15, dpi_tls),
    generator("smb", 15, dpi_smb),
    generator("http", 15, dpi_http),
];
const CORE: &[Generator] = &[
    generator("detections", 50, core_detection),
    generator("incident_transitions", 30, core_transition),
    generator("response_actions", 20, core_response),
];

const _: () = assert!(weights_total_percent(LINUX_AGENT) == 100);
const _: () = assert!(weights_total_percent(WINDOWS_AGENT) == 100);
const _: () = assert!(weights_total_percent(DPI) == 100);
const _: () = assert!(weights_total_percent(CORE) == 100);

fn generators_of(module: Module) -> &'static [Generator] {
    match module {
        Module::Core => CORE,
        Module::Dpi => DPI,
        Module::LinuxAgent => LINUX_AGENT,
        Module::WindowsAgent => WINDOWS_AGENT,
    }
}

fn choose_table(rng: &mut Rng, generators: &[Generator]) -> u8 {
    let mut roll = rng.below(100);
    for (index, generator) in generators.iter().enumerate() {
        if roll < generator.weight_percent {
            return index as u8;
        }
        roll -= generator.weight_percent;
    }
    0
}

// --- vocabulary ---

/// (Linux, Windows) prefixes of a user's files: the home directory, and the
/// file-server and backup copies ransomware goes after next.
const DOCUMENT_ROOTS: &[(&str, &str)] = &[
    ("/home/user", r"C:\Users\user"),
    ("/home/user", r"C:\Users\user"),
    ("/srv/samba/shares/home/user", r"D:\Shares\Home\user"),
    ("/mnt/nfs/backup/home/user", r"E:\Backup\Users\user"),
];
const DOCUMENT_DIRECTORIES: &[&str] = &["Documents", "Desktop", "Pictures", "Downloads", "Finance", "Projects"];
/// Project and period folders under the user directory.
const DOCUMENT_FOLDERS: &[&str] = &[
    "FY2026-Q4",
    "clients-acme-industries",
    "archive-2025",
    "team-shared",
    "contracts-signed",
    "tax-returns-2025",
    "board-meetings",
];
const DOCUMENT_SUBFOLDERS: &[&str] = &["drafts", "final", "scans", "2026", "shared-with-legal", "exports"];
const DOCUMENT_STEMS: &[&str] =
    &["report", "invoice", "budget", "thesis", "scan", "contract", "payroll", "backup", "minutes", "photo"];
const DOCUMENT_EXTENSIONS: &[&str] =
    &[".docx", ".xlsx", ".pdf", ".jpg", ".pptx", ".txt", ".sql", ".tar.gz", ".odt", ".png"];
/// Extensions real ransomware families append to encrypted files.
const RANSOM_EXTENSIONS: &[&str] = &[".locked", ".enc", ".crypt", ".lockbit", ".akira"];
/// (executable, argv before the target file): admin tools and the staging,
/// encryption and wiping steps of a Linux ransomware run.
const LINUX_PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/bash", "bash -c cat "),
    ("/usr/bin/python3", "python3 /tmp/.cache/enc.py --key /dev/shm/.k --in "),
    ("/usr/bin/openssl", "openssl enc -aes-256-cbc -salt -pass file:/dev/shm/.k -in "),
    ("/usr/bin/tar", "tar czf /tmp/.x/stage.tgz "),
    ("/usr/bin/shred", "shred -u -n 1 "),
    ("/usr/bin/gpg", "gpg --batch --yes --symmetric --cipher-algo AES256 "),
    ("/usr/bin/curl", "curl -s -T "),
    ("/tmp/.X11-unix/.kthreadd", "[kworker/u8:2] --encrypt --path "),
    ("/usr/bin/libreoffice", "soffice.bin --writer "),
    ("/usr/bin/vim", "vim "),
];
/// (image, command line, whether a document path follows).
const WINDOWS_PROGRAMS: &[(&str, &str, bool)] = &[
    (r"C:\Windows\System32\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", false),
    (r"C:\Windows\System32\wbem\WMIC.exe", "wmic shadowcopy delete /nointeractive", false),
    (r"C:\Windows\System32\bcdedit.exe", "bcdedit /set {default} recoveryenabled No", false),
    (r"C:\Windows\System32\net.exe", r#"net stop "Veeam Backup Service" /y"#, false),
    (
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        "powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=",
        false,
    ),
    (r"C:\Windows\System32\cmd.exe", "cmd.exe /c copy /y ", true),
    (r"C:\Users\Public\Music\svch0st.exe", r"svch0st.exe -nolog -path ", true),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE",
        r#""C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE" /n "#,
        true,
    ),
    (r"C:\Windows\explorer.exe", r"C:\Windows\Explorer.EXE", false),
];
const REG_SZ: i16 = 1;
const REG_BINARY: i16 = 3;
const REG_DWORD: i16 = 4;
/// (key, value name, type, data for REG_SZ): persistence, defence evasion
/// and ransom-note keys.
const REGISTRY_VALUES: &[(&str, Option<&str>, i16, &str)] = &[
    (
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run",
        Some("SecurityUpdate"),
        REG_SZ,
        r"C:\Users\Public\Music\svch0st.exe",
    ),
    (r"HKLM\SOFTWARE\Policies\Microsoft\Windows Defender", Some("DisableAntiSpyware"), REG_DWORD, ""),
    (
        r"HKLM\SOFTWARE\Policies\Microsoft\Windows Defender\Real-Time Protection",
        Some("DisableRealtimeMonitoring"),
        REG_DWORD,
        "",
    ),
    (
        r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon",
        Some("LegalNoticeText"),
        REG_SZ,
        "Your files are encrypted. Read RECOVER-FILES.txt",
    ),
    (r"HKLM\SOFTWARE\Classes\.locked", None, REG_SZ, "lockedfile"),
    (r"HKLM\SOFTWARE\Veeam\Veeam Backup and Replication", Some("Configuration"), REG_BINARY, ""),
    (r"HKLM\SYSTEM\CurrentControlSet\Services\VSS", Some("Start"), REG_DWORD, ""),
    (r"HKCU\Control Panel\Desktop", Some("Wallpaper"), REG_SZ, r"C:\Users\Public\recover.bmp"),
];
/// (port, IP protocol, application protocol the probe names).
const SERVICES: &[(u64, i16, Option<&str>)] = &[
    (443, 6, Some("tls")),
    (443, 6, Some("tls")),
    (80, 6, Some("http")),
    (445, 6, Some("smb2")),
    (53, 17, Some("dns")),
    (3389, 6, Some("rdp")),
    (22, 6, Some("ssh")),
    (4444, 6, None),
    (8443, 6, None),
];
/// Public /24s: CDN, cloud and well-known exfiltration/Tor-exit ranges.
const REMOTE_PREFIXES: &[[u8; 3]] =
    &[[104, 16, 132], [13, 107, 42], [140, 82, 112], [185, 220, 101], [45, 137, 21], [151, 101, 1]];
/// (name, CNAME target the resolver returns first, if any).
const DNS_NAMES: &[(&str, Option<&str>)] = &[
    ("login.microsoftonline.com", Some("login.mso.msidentity.com.ak.privatelink.msidentity.com")),
    ("update.googleapis.com", None),
    ("fs01.corp.example.com", None),
    ("outlook.office365.com", Some("outlook.ms-acdc.office.com")),
    ("api.github.com", None),
    ("ocsp.digicert.com", Some("fp2e7a.wpc.phicdn.net")),
    ("g.live.mega.co.nz", Some("gfs270n122.userstorage.mega.co.nz")),
    ("backup-eu-west-1.s3.dualstack.eu-west-1.amazonaws.com", Some("s3-r-w.dualstack.eu-west-1.amazonaws.com")),
    ("settings-win.data.microsoft.com", Some("atm-settingsfe-prod-geo2.trafficmanager.net")),
];
const DGA_SUFFIXES: &[&str] = &[".top", ".xyz", ".info", ".biz"];
const SMB_SHARES: &[&str] =
    &[r"\\FS01\Finance", r"\\FS01\HR", r"\\NAS02\Backups", r"\\FS01\Projects", r"\\DC01\SYSVOL"];
const HTTP_METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "HEAD"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "curl/8.5.0",
    "Microsoft-CryptoAPI/10.0",
    "python-requests/2.32.3",
];
const CONTENT_TYPES: &[&str] =
    &["text/html; charset=utf-8", "application/json", "application/octet-stream", "application/pkix-cert"];
/// (rule id, severity 1..=4, summary before the pid).
const DETECTION_RULES: &[(&str, i16, &str)] = &[
    ("RE-LNX-0001", 4, "Mass file encryption: files renamed to a ransom extension by pid "),
    ("RE-WIN-0007", 4, "Shadow copies deleted by vssadmin.exe, pid "),
    ("RE-WIN-0012", 3, "Defender real-time protection disabled in the registry by pid "),
    ("RE-NET-0003", 3, "Burst of high-entropy SMB writes to a file share from pid "),
    ("RE-DNS-0020", 2, "DGA-like NXDOMAIN burst from pid "),
    ("RE-TLS-0015", 2, "Outbound TLS with a rare JA3 fingerprint from pid "),
];
const ANALYSTS: &[&str] = &["analyst:jdoe", "analyst:mgarcia", "analyst:kwong", "soar:playbook-7"];
const TRANSITION_REASONS: &[&str] = &[
    "auto-escalated: correlated detections RE-LNX-0001 and RE-NET-0003 exceed the incident threshold",
    "analyst confirmed encryption activity on the file server; ransom note RECOVER-FILES.txt found",
    "host isolated by agent; no further high-entropy writes observed for 15 minutes",
    "affected shares restored from the immutable backup of 2026-11-30 02:00 UTC",
    "root cause: RDP brute force on an exposed jump host; credentials rotated",
];

// --- shared value makers ---

/// One user document, picked once so it can be written twice (rename).
struct Document {
    root: (&'static str, &'static str),
    user: u64,
    directory: &'static str,
    folder: &'static str,
    subfolder: &'static str,
    stem: &'static str,
    number: u64,
    extension: &'static str,
}

impl Writer<'_> {
    fn pick_document(&mut self) -> Document {
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
    fn put_document(&mut self, document: &Document, windows: bool) {
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
    fn document_pair(&mut self, renamed: bool, windows: bool) {
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
    fn write_volume(&mut self, written: bool) {
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

    fn user_sid(&mut self) {
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

    fn local_address(&mut self, v6: bool) -> Address {
        let mut bytes = [0u8; 16];
        if v6 {
            bytes[..8].copy_from_slice(&[0xfd, 0x42, 0, self.producer_id as u8, 0, self.host as u8, 0, 0]);
            self.rng.fill(&mut bytes[8..]);
        } else {
            bytes[..4].copy_from_slice(&[10, self.producer_id as u8, self.host as u8, self.rng.range(10, 250) as u8]);
        }
        Address { bytes, v6 }
    }

    fn remote_address(&mut self, v6: bool) -> Address {
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
    fn connection(&mut self) {
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

// --- Linux agent ---

fn linux_process(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 1, 2, 3]); // exec, exec, fork, exit
    w.int2(action);
    w.int4_in(1_200, 400_000);
    w.int4_in(1, 1_199);
    let uid = if w.rng.percent(15) { 0 } else { 1_000 + w.rng.below(50) };
    w.int4(uid);
    w.int4(uid);
    let (exe, argv) = w.rng.pick(LINUX_PROGRAMS);
    w.text(exe);
    let document = w.pick_document();
    w.variable(|w| {
        w.put(argv);
        w.put_document(&document, false);
    });
    if action == 3 { w.null() } else { w.random_bytes::<32>() }
}

fn linux_file(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 3, 3, 4]); // open, write, rename, unlink
    w.int2(action);
    w.int4_in(1_200, 400_000);
    let uid = 1_000 + w.rng.below(50);
    w.int4(uid);
    w.document_pair(action == 3, false);
    w.write_volume(action == 2);
}

fn linux_network(w: &mut Writer<'_>) {
    w.int2_of(&[1i16, 1, 2, 3]); // connect, connect, accept, close
    w.int4_in(1_200, 400_000);
    let uid = if w.rng.percent(30) { 0 } else { 1_000 + w.rng.below(50) };
    w.int4(uid);
    w.connection();
}

// --- Windows agent ---

fn windows_pid(w: &mut Writer<'_>) {
    // Windows process ids are multiples of four.
    let pid = 4 * w.rng.range(100, 16_000);
    w.int8(pid);
}

fn windows_process(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 1, 1, 2]); // start, start, start, stop
    w.int2(action);
    windows_pid(w);
    windows_pid(w);
    w.user_sid();
    let (image, command_line, takes_path) = w.rng.pick(WINDOWS_PROGRAMS);
    w.text(image);
    let document = w.pick_document();
    w.variable(|w| {
        w.put(command_line);
        if takes_path {
            w.put_document(&document, true);
        }
    });
    w.int2_of(&[0x2000i16, 0x2000, 0x3000, 0x4000]); // medium, high, system
    if action == 2 { w.null() } else { w.random_bytes::<32>() }
}

fn windows_file(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 3, 3, 4]); // create, write, rename, delete
    w.int2(action);
    windows_pid(w);
    w.user_sid();
    w.document_pair(action == 3, true);
    w.write_volume(action == 2);
}

fn windows_registry(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 2, 3]); // create key, set value, delete value
    w.int2(action);
    windows_pid(w);
    w.user_sid();
    let (key, name, value_type, data) = w.rng.pick(REGISTRY_VALUES);
    w.text(key);
    match name {
        Some(name) => w.text(name),
        None => w.null(),
    }
    w.int2(value_type);
    if action == 3 {
        return w.null();
    }
    match value_type {
        REG_DWORD => {
            let dword = w.rng.below(5) as u32;
            w.field(&dword.to_le_bytes());
        }
        REG_SZ => w.variable(|w| {
            // REG_SZ data is NUL-terminated UTF-16LE.
            for byte in data.bytes().chain([0]) {
                w.out.put_slice(&[byte, 0]);
            }
        }),
        _ => w.random_bytes::<24>(),
    }
}

fn windows_network(w: &mut Writer<'_>) {
    w.int2_of(&[1i16, 1, 2, 3]); // connect, connect, accept, close
    windows_pid(w);
    w.connection();
}

// --- DPI probe ---

fn dpi_flow(w: &mut Writer<'_>) {
    w.random_uuid();
    let (port, protocol, app_protocol) = w.rng.pick(SERVICES);
    let v6 = w.rng.percent(15);
    w.int2(protocol);
    let source = w.local_address(v6);
    w.inet(source);
    w.int4_in(32_768, 60_999);
    let destination = w.remote_address(v6);
    w.inet(destination);
    w.int4(port);
    let packets = w.rng.range(1, 50_000);
    w.int8(packets);
    let packet_bytes = w.rng.range(60, 1_400);
    w.int8(packets * packet_bytes);
    w.int8_in(1, 900_000);
    match app_protocol {
        Some(name) => w.text(name),
        None => w.null(),
    }
}

fn dpi_dns(w: &mut Writer<'_>) {
    w.random_uuid();
    let generated = w.rng.percent(25);
    let (name, canonical_name) = w.rng.pick(DNS_NAMES);
    w.variable(|w| {
        if generated {
            let letters = w.rng.range(12, 24) as usize;
            w.lowercase(letters);
            let suffix = w.rng.pick(DGA_SUFFIXES);
            w.put(suffix);
        } else {
            w.put(name);
        }
    });
    w.int4_of(&[1u64, 1, 1, 28, 5, 16, 33]); // A, AAAA, CNAME, TXT, SRV
    w.int2(if generated { 3 } else { 0 }); // NXDOMAIN, NOERROR
    if generated {
        return w.null();
    }
    let answers = w.rng.range(1, 4);
    w.variable(|w| {
        if let Some(canonical_name) = canonical_name {
            w.put(canonical_name);
            w.put(",");
        }
        for index in 0..answers {
            if index > 0 {
                w.put(",");
            }
            let address = w.remote_address(false);
            w.dotted(&address);
        }
    });
}

fn dpi_tls(w: &mut Writer<'_>) {
    w.random_uuid();
    w.or_null(95, |w| {
        let (name, _) = w.rng.pick(DNS_NAMES);
        w.text(name);
    });
    let tls13 = w.rng.percent(60);
    w.int4(if tls13 { 0x0304 } else { 0x0303 });
    let suites: &[u64] = if tls13 { &[0x1301, 0x1302, 0x1303] } else { &[0xc02f, 0xc030, 0xcca8] };
    w.int4_of(suites);
    w.or_null(95, |w| w.random_bytes::<16>());
    // TLS 1.3 encrypts the certificate, so the probe only sees it for 1.2.
    if tls13 { w.null() } else { w.random_bytes::<32>() }
}

fn dpi_smb(w: &mut Writer<'_>) {
    w.random_uuid();
    // SMB2 NEGOTIATE, TREE_CONNECT, CREATE, READ, WRITE, WRITE, SET_INFO.
    let command = w.rng.pick(&[0u64, 3, 5, 8, 9, 9, 17]);
    w.int4(command);
    w.int4_of(&[0x0210u64, 0x0300, 0x0302, 0x0311]);
    let share = w.rng.pick(SMB_SHARES);
    if command == 0 {
        w.null()
    } else {
        w.text(share)
    }
    if command < 5 {
        w.null();
    } else {
        let document = w.pick_document();
        let locked = w.rng.percent(40);
        w.variable(|w| {
            w.put(document.directory);
            w.put(r"\");
            w.put(document.folder);
            w.put(r"\");
            w.put(document.subfolder);
            w.put(r"\");
            w.put(document.stem);
            w.put("-");
            w.decimal(document.number);
            w.put(document.extension);
            if locked {
                w.put(".locked");
            }
        });
    }
    // STATUS_SUCCESS, STATUS_ACCESS_DENIED, STATUS_OBJECT_NAME_NOT_FOUND.
    w.int8_of(&[0u64, 0, 0, 0, 0xc000_0022, 0xc000_0034]);
    let pages = if command >= 8 { w.rng.range(1, 256) } else { 0 };
    w.int8(4096 * pages);
}

fn dpi_http(w: &mut Writer<'_>) {
    w.random_uuid();
    let method = w.rng.pick(HTTP_METHODS);
    w.text(method);
    let (host, _) = w.rng.pick(DNS_NAMES);
    w.text(host);
    let number = w.rng.range(1, 99_999);
    let template = w.rng.below(3);
    w.variable(|w| match template {
        0 => {
            w.put("/api/v2/upload?id=");
            w.decimal(number);
            w.put("&chunk=");
            w.decimal(number % 64);
            w.put("&session=");
            w.lowercase(24);
        }
        1 => {
            w.put("/updates/stable/x64/agent-8.");
            w.decimal(number);
            w.put(".bin?channel=enterprise");
        }
        _ => {
            w.put("/wp-content/plugins/gate.php?bot=");
            w.lowercase(16);
            w.put("&os=win10&av=defender");
        }
    });
    let status = w.rng.pick(&[200i16, 200, 200, 204, 301, 403, 404, 500]);
    w.int2(status);
    w.or_null(90, |w| {
        let agent = w.rng.pick(USER_AGENTS);
        w.text(agent);
    });
    if method == "HEAD" || status == 204 {
        w.null();
    } else {
        let content_type = w.rng.pick(CONTENT_TYPES);
        w.text(content_type);
    }
    w.int8_in(0, 5_000_000);
}

// --- Core ---

/// One of 16 incidents per producer, so an incident timeline has many rows.
fn incident_id(w: &mut Writer<'_>) {
    let incident = w.rng.below(16);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix64(w.producer_id ^ INCIDENT_SALT).to_be_bytes());
    id[8..].copy_from_slice(&mix64(incident).to_be_bytes());
    w.field(&with_uuid_version(id, 8));
}

fn actor(w: &mut Writer<'_>) {
    if w.rng.percent(60) {
        w.text("core-engine");
    } else {
        let analyst = w.rng.pick(ANALYSTS);
        w.text(analyst);
    }
}

fn core_detection(w: &mut Writer<'_>) {
    w.random_uuid();
    let (rule, severity, summary) = w.rng.pick(DETECTION_RULES);
    w.text(rule);
    w.int2(severity);
    let score = w.rng.range(500, 999);
    w.float4(score);
    let subject = source_id(w.rng.range(1, SUBJECT_PRODUCERS), w.rng.below(HOSTS_PER_PRODUCER));
    w.field(&subject);
    let pid = w.rng.range(1_200, 400_000);
    w.variable(|w| {
        w.put(summary);
        w.decimal(pid);
        w.put(" on ");
        w.hostname();
    });
    let files = w.rng.range(20, 5_000);
    let entropy = w.rng.range(7_800, 7_999);
    let sample = w.pick_document();
    w.or_null(70, |w| {
        w.variable(|w| {
            w.put(r#"{"rule":""#);
            w.put(rule);
            w.put(r#"","files":"#);
            w.decimal(files);
            w.put(r#","entropy_mean":7."#);
            w.decimal(entropy % 1_000);
            w.put(r#","window_s":30,"sample":""#);
            w.put_document(&sample, false);
            w.put(r#""}"#);
        });
    });
}

fn core_transition(w: &mut Writer<'_>) {
    incident_id(w);
    // new, triaged, contained, eradicated, recovered, closed
    let from_state = w.rng.below(5) as i16;
    w.int2(from_state);
    w.int2(from_state + 1);
    actor(w);
    w.or_null(60, |w| {
        let reason = w.rng.pick(TRANSITION_REASONS);
        w.text(reason);
    });
}

fn core_response(w: &mut Writer<'_>) {
    w.random_uuid();
    w.or_null(80, incident_id);
    // isolate host, kill process, quarantine file, block address
    let kind = w.rng.pick(&[1i16, 2, 3, 4]);
    w.int2(kind);
    let pid = w.rng.range(1_200, 400_000);
    let document = w.pick_document();
    let address = w.remote_address(false);
    w.variable(|w| match kind {
        1 => w.hostname(),
        2 => {
            w.put("pid:");
            w.decimal(pid);
            w.put("@");
            w.hostname();
        }
        3 => w.put_document(&document, false),
        _ => w.dotted(&address),
    });
    actor(w);
    let outcome = w.rng.pick(&[1i16, 1, 1, 0, 2]); // succeeded, pending, failed
    w.int2(outcome);
    w.or_null(50, |w| {
        w.text(if outcome == 2 {
            "agent unreachable: no acknowledgement within 30 s, retry scheduled by the response queue"
        } else {
            "applied by the agent and verified by the next heartbeat"
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_events, encode_events_header, encode_record};
    use crate::schema::tables_of;
    use crate::validate::validate_record;

    const EVENTS_PER_MODULE: u64 = 2_000;

    #[test]
    fn generators_follow_the_schema_order() {
        for module in Module::ALL {
            let names: Vec<&str> = tables_of(module).map(|t| t.name).collect();
            let generated: Vec<&str> = generators_of(module).iter().map(|g| g.table).collect();
            assert_eq!(names, generated, "{module:?}");
        }
    }

    /// Frame, decode and validate; every table and both NULL and non-NULL
    /// of every nullable column must appear.
    #[test]
    fn every_event_validates_and_every_table_appears() {
        let mut averages = Vec::new();
        for module in Module::ALL {
            let mut body = BytesMut::new();
            let mut fields = BytesMut::new();
            let mut field_bytes = 0;
            encode_events_header(&mut body, 1, EVENTS_PER_MODULE as u32);
            for seq in 1..=EVENTS_PER_MODULE {
                fields.clear();
                let event = synthesize(module, 7, seq, &mut fields);
                field_bytes += fields.len();
                encode_record(
                    &mut body,
                    event.table,
                    &event.source_id,
                    event.event_time_us,
                    event.field_count,
                    &fields,
                );
            }
            let events = decode_events(&body).unwrap();
            let mut seen = std::collections::HashSet::new();
            for record in &events.records {
                let table = validate_record(module, record).unwrap();
                seen.insert((table.name, None));
                let mut rest = record.fields;
                for column in table.columns {
                    let (length, tail) = rest.split_first_chunk::<4>().unwrap();
                    let length = i32::from_be_bytes(*length);
                    seen.insert((table.name, Some((column.name, length < 0))));
                    rest = &tail[usize::try_from(length).unwrap_or(0)..];
                }
            }
            for table in tables_of(module) {
                assert!(seen.contains(&(table.name, None)), "{} never chosen", table.name);
                for column in table.columns.iter().filter(|c| c.nullable) {
                    for null in [false, true] {
                        assert!(
                            seen.contains(&(table.name, Some((column.name, null)))),
                            "{}.{} null={null} never seen",
                            table.name,
                            column.name
                        );
                    }
                }
            }
            let average = field_bytes as u64 / EVENTS_PER_MODULE;
            eprintln!("{}: {average} field bytes per event on average", module.name());
            averages.push((module, average));
        }
        // DPI rows are mostly fixed-width (a flow is about 112 bytes), so
        // its average sits near 125 bytes; host and Core events near 150-190.
        for (module, average) in averages {
            assert!((100..=300).contains(&average), "{module:?}: {average} bytes");
        }
    }

    #[test]
    fn same_inputs_give_identical_bytes() {
        for module in Module::ALL {
            for seq in [1, 2, 1_000, u64::MAX] {
                let mut first = BytesMut::new();
                let mut second = BytesMut::from(&b"prefix"[..]);
                let a = synthesize(module, 42, seq, &mut first);
                let b = synthesize(module, 42, seq, &mut second);
                assert_eq!(a, b);
                assert_eq!(&first[..], &second[6..]);
                let mut other = BytesMut::new();
                synthesize(module, 43, seq, &mut other);
                assert_ne!(first, other, "producer id must change the content");
            }
        }
    }

    #[test]
    fn event_times_increase_and_source_ids_are_few() {
        let mut fields = BytesMut::new();
        let mut previous = 0;
        let mut sources = std::collections::HashSet::new();
        for seq in 1..=1_000 {
            let event = synthesize(Module::LinuxAgent, 3, seq, &mut fields);
            assert!(event.event_time_us > previous);
            assert!(event.event_time_us - BASE_TIME_US < (seq as i64 + 1) * EVENT_SPACING_US);
            previous = event.event_time_us;
            sources.insert(event.source_id);
        }
        assert_eq!(sources.len() as u64, HOSTS_PER_PRODUCER);
    }
}
