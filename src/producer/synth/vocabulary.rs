//! The vocabulary of the synthetic intrusion: user documents, programs and
//! command lines, registry values, services, DNS names, HTTP clients, and
//! Core's detection rules, analysts and incident reasons.
//!
//! Data only: constant tables that [`super::values`] and [`super::tables`]
//! pick from with the event's random stream. Changing an entry, or the
//! order of entries, changes the synthesized bytes and so the golden COPY
//! fixtures (`tests/copy_golden.rs`).

/// (Linux, Windows) prefixes of a user's files: the home directory, and the
/// file-server and backup copies ransomware goes after next.
pub(super) const DOCUMENT_ROOTS: &[(&str, &str)] = &[
    ("/home/user", r"C:\Users\user"),
    ("/home/user", r"C:\Users\user"),
    ("/srv/samba/shares/home/user", r"D:\Shares\Home\user"),
    ("/mnt/nfs/backup/home/user", r"E:\Backup\Users\user"),
];
pub(super) const DOCUMENT_DIRECTORIES: &[&str] =
    &["Documents", "Desktop", "Pictures", "Downloads", "Finance", "Projects"];
/// Project and period folders under the user directory.
pub(super) const DOCUMENT_FOLDERS: &[&str] = &[
    "FY2026-Q4",
    "clients-acme-industries",
    "archive-2025",
    "team-shared",
    "contracts-signed",
    "tax-returns-2025",
    "board-meetings",
];
pub(super) const DOCUMENT_SUBFOLDERS: &[&str] = &["drafts", "final", "scans", "2026", "shared-with-legal", "exports"];
pub(super) const DOCUMENT_STEMS: &[&str] =
    &["report", "invoice", "budget", "thesis", "scan", "contract", "payroll", "backup", "minutes", "photo"];
pub(super) const DOCUMENT_EXTENSIONS: &[&str] =
    &[".docx", ".xlsx", ".pdf", ".jpg", ".pptx", ".txt", ".sql", ".tar.gz", ".odt", ".png"];
/// Extensions real ransomware families append to encrypted files.
pub(super) const RANSOM_EXTENSIONS: &[&str] = &[".locked", ".enc", ".crypt", ".lockbit", ".akira"];
/// (executable, argv before the target file): admin tools and the staging,
/// encryption and wiping steps of a Linux ransomware run.
pub(super) const LINUX_PROGRAMS: &[(&str, &str)] = &[
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
pub(super) const WINDOWS_PROGRAMS: &[(&str, &str, bool)] = &[
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
pub(super) const REG_SZ: i16 = 1;
pub(super) const REG_BINARY: i16 = 3;
pub(super) const REG_DWORD: i16 = 4;
/// (key, value name, type, data for REG_SZ): persistence, defence evasion
/// and ransom-note keys.
pub(super) const REGISTRY_VALUES: &[(&str, Option<&str>, i16, &str)] = &[
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
pub(super) const SERVICES: &[(u64, i16, Option<&str>)] = &[
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
pub(super) const REMOTE_PREFIXES: &[[u8; 3]] =
    &[[104, 16, 132], [13, 107, 42], [140, 82, 112], [185, 220, 101], [45, 137, 21], [151, 101, 1]];
/// (name, CNAME target the resolver returns first, if any).
pub(super) const DNS_NAMES: &[(&str, Option<&str>)] = &[
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
pub(super) const DGA_SUFFIXES: &[&str] = &[".top", ".xyz", ".info", ".biz"];
pub(super) const SMB_SHARES: &[&str] =
    &[r"\\FS01\Finance", r"\\FS01\HR", r"\\NAS02\Backups", r"\\FS01\Projects", r"\\DC01\SYSVOL"];
pub(super) const HTTP_METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "HEAD"];
pub(super) const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "curl/8.5.0",
    "Microsoft-CryptoAPI/10.0",
    "python-requests/2.32.3",
];
pub(super) const CONTENT_TYPES: &[&str] =
    &["text/html; charset=utf-8", "application/json", "application/octet-stream", "application/pkix-cert"];
/// (rule id, severity 1..=4, summary before the pid).
pub(super) const DETECTION_RULES: &[(&str, i16, &str)] = &[
    ("RE-LNX-0001", 4, "Mass file encryption: files renamed to a ransom extension by pid "),
    ("RE-WIN-0007", 4, "Shadow copies deleted by vssadmin.exe, pid "),
    ("RE-WIN-0012", 3, "Defender real-time protection disabled in the registry by pid "),
    ("RE-NET-0003", 3, "Burst of high-entropy SMB writes to a file share from pid "),
    ("RE-DNS-0020", 2, "DGA-like NXDOMAIN burst from pid "),
    ("RE-TLS-0015", 2, "Outbound TLS with a rare JA3 fingerprint from pid "),
];
pub(super) const ANALYSTS: &[&str] = &["analyst:jdoe", "analyst:mgarcia", "analyst:kwong", "soar:playbook-7"];
pub(super) const TRANSITION_REASONS: &[&str] = &[
    "auto-escalated: correlated detections RE-LNX-0001 and RE-NET-0003 exceed the incident threshold",
    "analyst confirmed encryption activity on the file server; ransom note RECOVER-FILES.txt found",
    "host isolated by agent; no further high-entropy writes observed for 15 minutes",
    "affected shares restored from the immutable backup of 2026-11-30 02:00 UTC",
    "root cause: RDP brute force on an exposed jump host; credentials rotated",
];
