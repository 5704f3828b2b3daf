//! The lane's seccomp allow-list: reviewed data, one entry per syscall
//! with the reason it is needed (STYLE S16). Inventory taken with
//! `strace -ff` of lane processes under load, a PostgreSQL backend kill
//! (reconnect) and SIGTERM (drain), then confirmed with the filter in
//! kill mode by `tests/sandbox.rs`. Everything else kills the process
//! (SECCOMP_RET_KILL_PROCESS), in particular io_uring_setup and
//! io_uring_register: the ring is built and restricted before the filter.

use super::error::SandboxError;
use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// An allowed syscall, optionally only with some argument values.
pub struct Allowed {
    pub syscall: i64,
    pub name: &'static str,
    pub reason: &'static str,
    /// (argument index, value): allowed when any listed pair matches.
    pub only: &'static [(u8, u64)],
    /// Argument whose bits must all be clear: (index, mask).
    pub clear_bits: Option<(u8, u64)>,
}

const fn allow(syscall: i64, name: &'static str, reason: &'static str) -> Allowed {
    Allowed { syscall, name, reason, only: &[], clear_bits: None }
}

/// The allow-list of a lane after its sandbox is entered. Neither
/// `socket` nor `connect` is on it: a lane cannot open any new connection,
/// to PostgreSQL or anything else; its connector hands it each PostgreSQL
/// connection (`recvmsg`, SCM_RIGHTS).
pub fn lane_allow_list() -> Vec<Allowed> {
    use libc::*;
    vec![
        allow(SYS_io_uring_enter, "io_uring_enter", "the event loop: submit and reap ring operations"),
        allow(SYS_poll, "poll", "the poll(2) fallback path's event loop"),
        allow(SYS_ppoll, "ppoll", "the same, where libc implements poll(2) with ppoll"),
        allow(SYS_accept4, "accept4", "the poll(2) fallback path accepts producers (io_uring path: ring ACCEPT)"),
        allow(SYS_read, "read", "drain the signalfd; poll path reads producers"),
        allow(SYS_write, "write", "log lines to stderr; poll path writes replies"),
        allow(SYS_recvfrom, "recvfrom", "the poll(2) path reads producers and PostgreSQL (std's recv)"),
        allow(SYS_sendto, "sendto", "the poll(2) path writes to producers and PostgreSQL (std's send)"),
        allow(SYS_recvmsg, "recvmsg", "a connection handed over by the connector (SCM_RIGHTS); control messages"),
        allow(SYS_sendmsg, "sendmsg", "requests to the connector; the status and metrics messages to the supervisor"),
        allow(SYS_close, "close", "closing producer and PostgreSQL sockets"),
        allow(SYS_shutdown, "shutdown", "waking a pending ring receive before closing a socket"),
        Allowed {
            syscall: SYS_getsockopt,
            name: "getsockopt",
            reason: "SO_PEERCRED of each accepted producer; SO_SNDBUF of each PostgreSQL connection (logged)",
            only: &[(1, SOL_SOCKET as u64)],
            clear_bits: None,
        },
        Allowed {
            syscall: SYS_ioctl,
            name: "ioctl",
            reason: "FIONBIO: make a socket non-blocking",
            only: &[(1, FIONBIO)],
            clear_bits: None,
        },
        Allowed {
            syscall: SYS_fcntl,
            name: "fcntl",
            reason: "descriptor flags (F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC)",
            only: &[
                (1, F_GETFD as u64),
                (1, F_SETFD as u64),
                (1, F_GETFL as u64),
                (1, F_SETFL as u64),
                (1, F_DUPFD_CLOEXEC as u64),
            ],
            clear_bits: None,
        },
        allow(SYS_openat, "openat", "spool segment files; every path is confined by Landlock"),
        allow(SYS_pwrite64, "pwrite64", "append a record to a spool segment"),
        allow(SYS_pread64, "pread64", "read a spooled batch back for PostgreSQL"),
        allow(SYS_fdatasync, "fdatasync", "make spooled records durable before their ACK"),
        allow(SYS_fsync, "fsync", "make a new spool segment's directory entry durable"),
        allow(SYS_ftruncate, "ftruncate", "cut back a failed spool append"),
        allow(SYS_unlink, "unlink", "remove a spool segment once all of it is committed (std::fs::remove_file)"),
        allow(SYS_fstatfs, "fstatfs", "free space of the spool's filesystem, against its reserve, before each append"),
        Allowed {
            syscall: SYS_mmap,
            name: "mmap",
            reason: "memory allocation; never executable (W^X)",
            only: &[],
            clear_bits: Some((2, PROT_EXEC as u64)),
        },
        Allowed {
            syscall: SYS_mprotect,
            name: "mprotect",
            reason: "allocator guard pages; never executable (W^X)",
            only: &[],
            clear_bits: Some((2, PROT_EXEC as u64)),
        },
        allow(SYS_munmap, "munmap", "memory release"),
        allow(SYS_mremap, "mremap", "growing large buffers"),
        allow(SYS_madvise, "madvise", "allocator returns memory"),
        allow(SYS_brk, "brk", "heap growth"),
        allow(SYS_futex, "futex", "std's locks (stderr) when contended"),
        allow(SYS_getpid, "getpid", "std and tracing read the process id"),
        allow(SYS_clock_gettime, "clock_gettime", "time, when the vDSO falls back to the syscall"),
        allow(SYS_rt_sigreturn, "rt_sigreturn", "return from a signal handler"),
        allow(SYS_rt_sigprocmask, "rt_sigprocmask", "std at thread exit"),
        allow(SYS_sigaltstack, "sigaltstack", "std tears down its signal stack at exit"),
        allow(SYS_sched_yield, "sched_yield", "std's spin loops"),
        allow(SYS_exit, "exit", "thread exit"),
        allow(SYS_exit_group, "exit_group", "process exit"),
        allow(
            SYS_gettid,
            "gettid",
            "abort(3) raises SIGABRT at its own thread (raise asks the kernel for the thread id)",
        ),
        Allowed {
            syscall: SYS_tgkill,
            name: "tgkill",
            reason: "abort(3) after a failed allocation raises SIGABRT: the lane ends by a signal the supervisor logs, not by SIGSYS",
            only: &[(2, SIGABRT as u64)],
            clear_bits: None,
        },
        #[cfg(feature = "failpoints")]
        allow(SYS_kill, "kill", "test build only: a failpoint stops the lane with SIGSTOP"),
    ]
}

/// The allow-list of a lane's connector: open one Unix-socket connection
/// to PostgreSQL at a time, authenticate it, hand it to the lane.
pub fn connector_allow_list() -> Vec<Allowed> {
    use libc::*;
    vec![
        Allowed {
            syscall: SYS_socket,
            name: "socket",
            reason: "a connection to PostgreSQL's Unix socket; AF_UNIX only",
            only: &[(0, AF_UNIX as u64)],
            clear_bits: None,
        },
        allow(SYS_connect, "connect", "to PostgreSQL's socket (Landlock denies TCP)"),
        Allowed {
            syscall: SYS_setsockopt,
            name: "setsockopt",
            reason: "read and write timeouts of the connection (PG_IO_TIMEOUT_S); its send buffer (PG_SEND_BUFFER_BYTES)",
            only: &[(1, SOL_SOCKET as u64)],
            clear_bits: None,
        },
        allow(SYS_read, "read", "PostgreSQL's startup replies"),
        allow(SYS_write, "write", "the startup message and session settings; log lines"),
        allow(SYS_recvfrom, "recvfrom", "std's recv on the connection"),
        allow(SYS_sendto, "sendto", "std's send on the connection"),
        allow(SYS_recvmsg, "recvmsg", "the lane's requests"),
        allow(SYS_sendmsg, "sendmsg", "a connection to the lane (SCM_RIGHTS), or why not"),
        allow(SYS_poll, "poll", "waiting for the lane's next request"),
        allow(SYS_ppoll, "ppoll", "the same, where libc implements poll(2) with ppoll"),
        allow(SYS_close, "close", "closing the connection once handed over"),
        Allowed {
            syscall: SYS_ioctl,
            name: "ioctl",
            reason: "FIONBIO: the handed connection is non-blocking",
            only: &[(1, FIONBIO)],
            clear_bits: None,
        },
        Allowed {
            syscall: SYS_fcntl,
            name: "fcntl",
            reason: "descriptor flags (F_GETFD, F_SETFD, F_GETFL, F_SETFL); F_DUPFD_CLOEXEC: the connection is duplicated when handed over",
            only: &[
                (1, F_GETFD as u64),
                (1, F_SETFD as u64),
                (1, F_GETFL as u64),
                (1, F_SETFL as u64),
                (1, F_DUPFD_CLOEXEC as u64),
            ],
            clear_bits: None,
        },
        Allowed {
            syscall: SYS_mmap,
            name: "mmap",
            reason: "memory allocation; never executable (W^X)",
            only: &[],
            clear_bits: Some((2, PROT_EXEC as u64)),
        },
        Allowed {
            syscall: SYS_mprotect,
            name: "mprotect",
            reason: "allocator guard pages; never executable (W^X)",
            only: &[],
            clear_bits: Some((2, PROT_EXEC as u64)),
        },
        allow(SYS_munmap, "munmap", "memory release"),
        allow(SYS_mremap, "mremap", "growing buffers"),
        allow(SYS_madvise, "madvise", "allocator returns memory"),
        allow(SYS_brk, "brk", "heap growth"),
        allow(SYS_futex, "futex", "std's locks (stderr) when contended"),
        allow(SYS_getpid, "getpid", "std and tracing read the process id"),
        allow(SYS_clock_gettime, "clock_gettime", "time, when the vDSO falls back to the syscall"),
        allow(SYS_rt_sigreturn, "rt_sigreturn", "return from a signal handler"),
        allow(SYS_rt_sigprocmask, "rt_sigprocmask", "std at thread exit"),
        allow(SYS_sigaltstack, "sigaltstack", "std tears down its signal stack at exit"),
        allow(SYS_sched_yield, "sched_yield", "std's spin loops"),
        allow(SYS_exit, "exit", "thread exit"),
        allow(SYS_exit_group, "exit_group", "process exit"),
    ]
}

fn rules_for(entry: &Allowed) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    if let Some((index, mask)) = entry.clear_bits {
        let condition = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(mask), 0)?;
        return Ok(vec![SeccompRule::new(vec![condition])?]);
    }
    entry
        .only
        .iter()
        .map(|(index, value)| {
            // Every restricted argument is a C int: compare its low 32 bits.
            let condition = SeccompCondition::new(*index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *value)?;
            SeccompRule::new(vec![condition])
        })
        .collect()
}

/// Compile the allow-list into a BPF program that kills the process on
/// any other syscall.
pub fn compile(list: &[Allowed]) -> Result<BpfProgram, SandboxError> {
    let filter_error = |source| SandboxError::SeccompCompile { syscall: None, source };
    let mut rules = BTreeMap::new();
    for entry in list {
        let rule =
            rules_for(entry).map_err(|source| SandboxError::SeccompCompile { syscall: Some(entry.name), source })?;
        rules.insert(entry.syscall, rule);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(filter_error)?;
    let filter =
        SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch).map_err(filter_error)?;
    BpfProgram::try_from(filter).map_err(filter_error)
}
