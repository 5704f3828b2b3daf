//! Thin, safe wrappers over the few libc calls the appliance needs.
//!
//! This is the only module allowed to contain `unsafe` (STYLE S13). Each
//! block states the invariants it relies on. Everything here is a plain
//! syscall wrapper; policy lives in the callers.

pub mod fdpass;
pub mod spawn;
#[cfg(feature = "server")]
pub mod uring;

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;
use std::time::Duration;

/// An OS account as the password database describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

pub fn real_uid() -> u32 {
    // SAFETY: getuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

fn account_from_passwd(entry: &libc::passwd) -> Account {
    // SAFETY: pw_name of an entry returned by getpw*_r points to a
    // NUL-terminated string inside the caller's buffer, alive for this call.
    let name = unsafe { CStr::from_ptr(entry.pw_name) }.to_string_lossy().into_owned();
    Account { name, uid: entry.pw_uid, gid: entry.pw_gid }
}

/// Buffer for getpw*_r; 16 KiB covers every entry glibc's own default
/// (sysconf(_SC_GETPW_R_SIZE_MAX) = 1024) would, with room for NSS modules.
pub(crate) const PASSWD_BUFFER_BYTES: usize = 16 * 1024;

/// Look up an account by name; `Ok(None)` if there is none.
pub fn account_by_name(name: &str) -> io::Result<Option<Account>> {
    let c_name = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in user name"))?;
    let mut buffer = vec![0 as libc::c_char; PASSWD_BUFFER_BYTES];
    // SAFETY: passwd is a plain C struct for which all-zero bytes are valid.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call: c_name is
    // NUL-terminated, buffer has the length passed, entry and result are
    // locals. getpwnam_r writes only into them.
    let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut result) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some(account_from_passwd(&entry)))
}

/// Look up an account by uid; `Ok(None)` if there is none.
pub fn account_by_uid(uid: u32) -> io::Result<Option<Account>> {
    let mut buffer = vec![0 as libc::c_char; PASSWD_BUFFER_BYTES];
    // SAFETY: passwd is a plain C struct for which all-zero bytes are valid.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in account_by_name; uid is passed by value.
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut result) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some(account_from_passwd(&entry)))
}

/// chown(2) without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Size and free space of a filesystem, in bytes (fstatfs(2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub total: u64,
    /// What an unprivileged writer may still allocate (`f_bavail`): the
    /// filesystem's root-reserved blocks are not counted.
    pub available: u64,
}

/// fstatfs(2) of the filesystem holding an open file or directory.
pub fn fs_space(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FsSpace> {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain data that fstatfs fills completely on success;
    // the descriptor is valid for the call (borrowed).
    let stat = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(fd.as_raw_fd(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat
    };
    let block = stat.f_bsize as u64;
    Ok(FsSpace {
        total: (stat.f_blocks as u64).saturating_mul(block),
        available: (stat.f_bavail as u64).saturating_mul(block),
    })
}

/// Whether a process with this pid exists (kill(pid, 0)).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Clock ticks per second, the unit of /proc/<pid>/stat's CPU times
/// (sysconf(_SC_CLK_TCK)); None if the system does not say.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0)
}

/// Signals the supervisor handles synchronously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
    Child,
}

/// SIGTERM and SIGINT: the signals that make a lane drain and exit.
pub(crate) fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully and
    // sigaddset only sets bits of valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// The termination signals and SIGCHLD.
fn supervisor_sigset() -> libc::sigset_t {
    let mut set = termination_sigset();
    // SAFETY: set is initialised; sigaddset only sets the bit of a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGCHLD) };
    set
}

/// flock(LOCK_EX | LOCK_NB) on an open file: Err(EWOULDBLOCK) if another
/// open file description holds the lock. Released when the file closes.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    flock(file, libc::LOCK_EX | libc::LOCK_NB)
}

/// flock(LOCK_EX) on an open file, waiting while another holds it.
/// Released when the file closes.
pub fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    loop {
        match flock(file, libc::LOCK_EX) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

fn flock(file: &std::fs::File, operation: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a descriptor we own (borrowed for the call) and flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Keep freed heap memory for reuse instead of returning it to the kernel:
/// allocations up to `mmap_threshold` come from the heap (not mmap), and
/// the heap is trimmed only beyond `trim_threshold` free at its top. A lane allocates and
/// frees megabyte-sized batch buffers hundreds of times a second; with
/// glibc's defaults each one was fresh mmap'd memory, zero-filled page by
/// page (11% of a lane's CPU in page faults, `perf record` on the bench).
/// The lane's memory stays bounded by its batch and cache limits: this
/// changes only whether freed memory is kept.
pub fn keep_freed_heap(mmap_threshold: usize, trim_threshold: usize) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mmap = libc::c_int::try_from(mmap_threshold).map_err(invalid)?;
    let trim = libc::c_int::try_from(trim_threshold).map_err(invalid)?;
    // SAFETY: mallopt only sets allocator tunables; called before the lane allocates batches.
    let ok =
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1 };
    if ok { Ok(()) } else { Err(io::Error::other("mallopt refused the threshold")) }
}

/// Ignore SIGXFSZ: a write past RLIMIT_FSIZE then fails with EFBIG (which
/// the spool handles as a full disk) instead of killing the process.
pub fn ignore_sigxfsz() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler code runs.
    let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if previous == libc::SIG_ERR { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Block SIGTERM, SIGINT and SIGCHLD in the calling thread so that
/// [`wait_signal`] can take them synchronously. Call before spawning threads.
pub fn block_supervisor_signals() -> io::Result<()> {
    let set = supervisor_sigset();
    // SAFETY: set is initialised; the old-mask pointer may be null.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Wait up to `timeout` for one of the blocked supervisor signals.
pub fn wait_signal(timeout: Duration) -> io::Result<Option<Signal>> {
    let set = supervisor_sigset();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: set and ts are initialised locals; the siginfo pointer may be null.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(error),
        };
    }
    Ok(match rc {
        libc::SIGTERM => Some(Signal::Terminate),
        libc::SIGINT => Some(Signal::Interrupt),
        _ => Some(Signal::Child),
    })
}

/// Credentials of the process at the other end of a Unix socket, as the
/// kernel recorded them at connect() or listen() time (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// SO_PEERCRED of a connected Unix socket.
pub fn peer_credentials(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<PeerCred> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: fd is a live descriptor (borrowed); cred and len are locals of
    // the size passed; the kernel writes at most len bytes into cred.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred { pid: cred.pid, uid: cred.uid, gid: cred.gid })
}

/// SO_PEERPIDFD (Linux 6.5+): a pidfd for the peer, which keeps naming the
/// same process even after its pid is reused. `Ok(None)` where unsupported.
pub fn peer_pidfd(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut pidfd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in peer_credentials; the kernel writes one int.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) | Some(libc::ESRCH) => Ok(None),
            _ => Err(error),
        };
    }
    // SAFETY: on success the kernel returned a new descriptor we now own.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) }))
}

/// Ask for a send buffer of `bytes` on socket `fd` (SO_SNDBUF; the kernel
/// caps the request at `net.core.wmem_max` and doubles it for its own
/// bookkeeping, so the size in effect is read back with [`send_buffer`]).
pub fn set_send_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let wanted = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fd is a live descriptor (borrowed); the kernel reads one int
    // from `wanted`, a local of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&wanted as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The send buffer of socket `fd` in bytes (SO_SNDBUF as the kernel reports it).
pub fn send_buffer(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    socket_option_int(fd.as_raw_fd(), libc::SO_SNDBUF).map(|value| usize::try_from(value).unwrap_or(0))
}

/// An int-valued SOL_SOCKET option of socket `fd` (getsockopt).
fn socket_option_int(fd: std::os::fd::RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are locals of the size passed; the kernel writes
    // at most one int into `value` (an invalid fd is an error, not UB).
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(value) }
}

/// Take ownership of a listening Unix socket inherited as descriptor `fd`,
/// after checking that it is one (SO_DOMAIN AF_UNIX, SO_ACCEPTCONN).
pub fn inherited_unix_listener(fd: std::os::fd::RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    if socket_option_int(fd, libc::SO_DOMAIN)? != libc::AF_UNIX || socket_option_int(fd, libc::SO_ACCEPTCONN)? != 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is not a listening Unix socket")));
    }
    // SAFETY: fd was checked to be an open listening socket that this
    // process inherited for exactly this purpose; nothing else owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // SAFETY: fcntl on a descriptor we own; sets CLOEXEC so no grandchild inherits it.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// SO_TYPE of a socket descriptor (SOCK_STREAM, SOCK_SEQPACKET, ...).
pub fn socket_type(fd: std::os::fd::RawFd) -> io::Result<libc::c_int> {
    socket_option_int(fd, libc::SO_TYPE)
}

/// Take ownership of a `SOCK_SEQPACKET` socket inherited as descriptor
/// `fd` (a lane's control socket, a connector's socket), close-on-exec.
pub fn inherited_seqpacket(fd: std::os::fd::RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if socket_type(fd)? != libc::SOCK_SEQPACKET {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is not a SOCK_SEQPACKET socket")));
    }
    // SAFETY: fcntl on a descriptor checked above to be an open socket.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is an open socket this process inherited for exactly this
    // purpose; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// prctl(PR_SET_NAME): the name `ps` and `/proc/<pid>/comm` show (at most
/// 15 bytes kept), since a child executed through a descriptor is named
/// after that descriptor's number.
pub fn set_process_name(name: &str) -> io::Result<()> {
    let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
    bytes.push(0);
    // SAFETY: bytes is NUL-terminated and at most 16 bytes, as PR_SET_NAME reads.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr(), 0, 0, 0) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A signalfd for SIGTERM and SIGINT, which must already be blocked
/// ([`block_supervisor_signals`]). Readable when one is pending.
pub fn termination_signalfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let set = termination_sigset();
    // SAFETY: -1 asks for a new descriptor; set is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A signalfd for SIGTERM, SIGINT and SIGCHLD, which must already be
/// blocked ([`block_supervisor_signals`]): the supervisor's loop polls it
/// beside its lanes' control sockets.
pub fn supervisor_signalfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let set = supervisor_sigset();
    // SAFETY: -1 asks for a new descriptor; set is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Read every pending record of a signalfd and return the signals, in order.
pub fn read_signals(fd: std::os::fd::BorrowedFd<'_>) -> Vec<Signal> {
    use std::os::fd::AsRawFd;
    let mut signals = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; all-zero bytes are valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is a local of exactly the size passed.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        if n != size as isize {
            return signals;
        }
        signals.push(match info.ssi_signo as libc::c_int {
            libc::SIGTERM => Signal::Terminate,
            libc::SIGINT => Signal::Interrupt,
            _ => Signal::Child,
        });
    }
}

/// poll(2) over `fds`; returns the number ready (0 on timeout or EINTR).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a valid mutable slice of pollfd of the length passed.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        return if error.raw_os_error() == Some(libc::EINTR) { Ok(0) } else { Err(error) };
    }
    Ok(rc as usize)
}

/// Send what the socket takes now of `bytes` (`MSG_DONTWAIT`; a closed
/// peer is an error, not SIGPIPE): the count sent, 0 when it is full.
pub fn send_nowait(socket: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `bytes` is valid for reads of its length for the call.
    let sent = unsafe {
        libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(error),
        };
    }
    Ok(sent as usize)
}

/// Every process whose parent is `parent` (the ppid field of
/// `/proc/<pid>/stat`). A process that exits while the list is read is
/// left out.
pub fn children_of(parent: i32) -> io::Result<Vec<i32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command: state, ppid, ...
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    Ok(children)
}

/// Send a signal to one process (pid > 0).
pub fn send_signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // kill(2) reads 0 as "my process group" and -1 as "every process I may
    // signal": a pid from a missing or stale file must never mean that.
    if pid <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal pid {pid}")));
    }
    // SAFETY: kill has no memory arguments.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Read and discard whatever is readable on a non-blocking descriptor
/// (used to consume pending signalfd records).
pub fn drain_readable(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut buffer = [0u8; 128];
    loop {
        // SAFETY: buffer is a local of the length passed; the kernel writes at most that.
        let n = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// prctl(PR_SET_NO_NEW_PRIVS, 1): no exec can gain privileges from now on
/// (required before an unprivileged seccomp filter or Landlock domain).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes only integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// getppid(2). Not in the lane's seccomp allow-list: the sandbox probe
/// calls it to show that a forbidden syscall kills the process.
pub fn parent_pid() -> i32 {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::getppid() }
}

/// The kernel's Landlock ABI version (landlock_create_ruleset with
/// LANDLOCK_CREATE_RULESET_VERSION), or the errno why there is none.
pub fn landlock_abi() -> Result<i64, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the
    // kernel reads no memory and only returns the ABI version.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(rc) }
}

/// sched_setaffinity(2) for a process (0: the caller) to exactly `cpus`.
pub fn set_affinity(pid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only set bits
    // inside it for indices below CPU_SETSIZE, checked here.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in cpus {
            if *cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cpu {cpu} out of range")));
            }
            libc::CPU_SET(*cpu, &mut set);
        }
        set
    };
    // SAFETY: set is initialised and its size is passed.
    let rc = unsafe { libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// ioprio_set(2): best-effort class at `level` (0 highest .. 7 lowest) for the caller.
pub fn set_io_priority_best_effort(level: u8) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    let priority = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | libc::c_int::from(level.min(7));
    // SAFETY: ioprio_set takes only integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, priority) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// setrlimit(RLIMIT_AS) for the caller: soft and hard limit `bytes`.
pub fn limit_address_space(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: limit is an initialised local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    /// The send buffer asked for is the one in effect, as the kernel counts
    /// it (twice the request), whenever `net.core.wmem_max` allows it.
    #[test]
    fn a_socket_gets_the_send_buffer_it_asks_for() {
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let before = super::send_buffer(ours.as_fd()).expect("SO_SNDBUF");
        let wanted = 64 * 1024;
        super::set_send_buffer(ours.as_fd(), wanted).expect("set SO_SNDBUF");
        assert_eq!(super::send_buffer(ours.as_fd()).expect("SO_SNDBUF"), 2 * wanted, "default was {before}");
    }
}
