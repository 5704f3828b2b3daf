//! Thin, safe wrappers over the few libc calls the appliance needs.
//!
//! This is the only module allowed to contain `unsafe` (STYLE S13). Each
//! block states the invariants it relies on. Everything here is a plain
//! syscall wrapper; policy lives in the callers.

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
    let name = unsafe { CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned();
    Account {
        name,
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    }
}

/// Buffer for getpw*_r; 16 KiB covers every entry glibc's own default
/// (sysconf(_SC_GETPW_R_SIZE_MAX) = 1024) would, with room for NSS modules.
const PASSWD_BUFFER_BYTES: usize = 16 * 1024;

/// Look up an account by name; `Ok(None)` if there is none.
pub fn account_by_name(name: &str) -> io::Result<Option<Account>> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in user name"))?;
    let mut buffer = vec![0 as libc::c_char; PASSWD_BUFFER_BYTES];
    // SAFETY: passwd is a plain C struct for which all-zero bytes are valid.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call: c_name is
    // NUL-terminated, buffer has the length passed, entry and result are
    // locals. getpwnam_r writes only into them.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
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
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
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

/// Whether a process with this pid exists (kill(pid, 0)).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Signals the supervisor handles synchronously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
    Child,
}

fn supervisor_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully and
    // sigaddset only sets bits of valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
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
