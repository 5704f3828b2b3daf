//! Re-executing this binary as a child: under another OS identity, with
//! exactly the descriptors it is given, whatever the path to the binary.
//!
//! The child is forked by `std::process::Command` (stdio, error reporting)
//! and then runs one `pre_exec` closure that does everything itself, with
//! async-signal-safe raw system calls only: place the descriptors, switch
//! the identity, set the parent-death signal (after the switch, which would
//! clear it), block SIGTERM/SIGINT, and `execveat(exe, "", AT_EMPTY_PATH)`
//! on a descriptor of this binary opened beforehand. Executing through the
//! descriptor needs execute permission on the file only, not search
//! permission on every directory of its path: a lane identity cannot
//! traverse a checkout under `/root`, yet must run the same binary.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The OS identity a child switches to before exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, exactly (setgroups).
    pub groups: Vec<u32>,
}

/// What a re-executed child gets.
#[derive(Debug, Default)]
pub struct ChildSpec {
    /// argv[0] as `ps` shows it.
    pub name: String,
    /// Arguments after argv[0].
    pub args: Vec<OsString>,
    /// The whole environment; nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// (descriptor in this process, number in the child), targets from 3 up.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Switch to this identity before exec; None keeps the caller's.
    pub identity: Option<Identity>,
}

/// A descriptor of this process's own executable (O_PATH), for
/// [`spawn_self`]. Opened once, before any identity change.
pub fn open_self_exe() -> io::Result<OwnedFd> {
    let path = CString::new("/proc/self/exe").map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: path is NUL-terminated; O_PATH opens no file contents.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// NUL-terminated strings and the pointer array execveat wants, built
/// before the fork (the child must not allocate).
struct CStrings {
    _strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and
// never mutated; moving the value to the forked child moves both together.
unsafe impl Send for CStrings {}
// SAFETY: as above; nothing is mutated through a shared reference.
unsafe impl Sync for CStrings {}

impl CStrings {
    fn new(items: Vec<Vec<u8>>) -> io::Result<CStrings> {
        let strings = items
            .into_iter()
            .map(|bytes| CString::new(bytes).map_err(|_| io::Error::other("NUL in an argument")))
            .collect::<io::Result<Vec<CString>>>()?;
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        Ok(CStrings { _strings: strings, pointers })
    }
}

/// Capability numbers (linux/capability.h).
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;

/// Spawn this binary (through `exe`, from [`open_self_exe`]) as described
/// by `spec`; stdin is /dev/null, stdout and stderr are inherited.
pub fn spawn_self(exe: &OwnedFd, spec: &ChildSpec) -> io::Result<Child> {
    let mut argv = vec![spec.name.as_bytes().to_vec()];
    argv.extend(spec.args.iter().map(|a| a.as_bytes().to_vec()));
    let argv = CStrings::new(argv)?;
    let envp = CStrings::new(spec.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect())?;
    let exe_fd = exe.as_raw_fd();
    let fds = spec.fds.clone();
    let identity = spec.identity.clone();
    let empty = CString::new("").map_err(|_| io::Error::other("NUL"))?;
    let highest_target = fds.iter().map(|(_, target)| *target).max().unwrap_or(2);
    let mut command = Command::new("/proc/self/exe");
    command.stdin(Stdio::null()).env_clear();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe system calls (fcntl, dup2, close_range,
    // setgroups, setresgid, setresuid, capget/capset, prctl, sigprocmask,
    // execveat) on memory allocated before the fork and moved into it.
    unsafe {
        command.pre_exec(move || {
            // Whole values, not their fields: CStrings is what is Send.
            let (argv, envp) = (&argv, &envp);
            // The executable's descriptor may sit on a target number: move it above them first.
            let exe_fd = libc::fcntl(exe_fd, libc::F_DUPFD_CLOEXEC, highest_target + 1);
            check(exe_fd)?;
            place_descriptors(&fds, highest_target)?;
            if let Some(identity) = &identity {
                switch_identity(identity)?;
            }
            // After the identity switch, which clears it: a child must not
            // outlive its parent; SIGTERM makes a lane drain and exit.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0))?;
            // The child starts with SIGTERM and SIGINT blocked (std resets
            // the mask before this closure runs): one sent while it is still
            // starting stays pending and is read from its signalfd once it
            // serves, so it drains instead of dying by the default action.
            let termination = super::termination_sigset();
            check(libc::sigprocmask(libc::SIG_BLOCK, &termination, std::ptr::null_mut()))?;
            libc::syscall(
                libc::SYS_execveat,
                exe_fd,
                empty.as_ptr(),
                argv.pointers.as_ptr(),
                envp.pointers.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            Err(io::Error::last_os_error())
        });
    }
    command.spawn()
}

/// Make `command`'s child switch to `identity` (groups, gid, uid) before
/// it executes its program: unlike `CommandExt::uid`, this keeps the
/// supplementary groups given, which the PostgreSQL server account needs
/// to give its socket the database group.
pub fn run_as(command: &mut Command, identity: Identity) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the async-signal-safe system calls of `switch_identity` on
    // memory moved into it before the fork.
    unsafe {
        command.pre_exec(move || switch_identity(&identity));
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn check_long(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Child side: put each source descriptor at its target number (first
/// moved above every target, so that no source is overwritten by another's
/// dup2), without CLOEXEC; mark everything above the targets close-on-exec.
///
/// # Safety
/// Only in a forked child before exec: changes the process's descriptor table.
unsafe fn place_descriptors(fds: &[(RawFd, RawFd)], highest_target: RawFd) -> io::Result<()> {
    let mut moved = [(-1, -1); 8];
    if fds.len() > moved.len() {
        return Err(io::Error::other("too many descriptors for a child"));
    }
    for (index, (source, target)) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor this process holds.
        let high = unsafe { libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, highest_target + 1) };
        check(high)?;
        moved[index] = (high, *target);
    }
    for (high, target) in moved.iter().take(fds.len()) {
        // SAFETY: dup2 of a descriptor we just duplicated; dup2 clears CLOEXEC on the target.
        check(unsafe { libc::dup2(*high, *target) })?;
    }
    // Descriptors above the targets that this process inherited without
    // CLOEXEC (from a shell, say) must not reach the child (Linux 5.11+).
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (highest_target + 1) as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    })
}

/// Child side: supplementary groups, gid, uid, in that order (each needs
/// the privilege the next one drops), with raw system calls that change
/// only the calling thread (the child has no other). From root the uid
/// change clears every capability; from a non-root holder of CAP_SETUID
/// and CAP_SETGID the ambient set is cleared so that exec leaves none.
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn switch_identity(identity: &Identity) -> io::Result<()> {
    // A supervisor that holds the capabilities in its permitted set only
    // (lowered after start) raises them in this child for the switch.
    // SAFETY: capget/capset on this thread with local structures.
    unsafe { raise_effective(&[CAP_SETUID, CAP_SETGID]) }?;
    let groups: &[u32] = &identity.groups;
    // SAFETY: groups points to `len` gid_t values owned by the closure.
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    let (gid, uid) = (identity.gid, identity.uid);
    // SAFETY: integer arguments only.
    check_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: integer arguments only.
    check_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are locals of the layout capget(2) documents for version 3.
    check_long(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: as in capget; the kernel only reads data.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })
}

fn has(data: &[CapData; 2], set: impl Fn(&CapData) -> u32, capability: u32) -> bool {
    set(&data[(capability / 32) as usize]) & (1 << (capability % 32)) != 0
}

/// Raise `capabilities` into the calling thread's effective set where its
/// permitted set holds them (nothing otherwise).
///
/// # Safety
/// Async-signal-safe; callable in a forked child.
unsafe fn raise_effective(capabilities: &[u32]) -> io::Result<()> {
    let mut data = capget()?;
    let mut changed = false;
    for &capability in capabilities {
        if has(&data, |d| d.permitted, capability) && !has(&data, |d| d.effective, capability) {
            data[(capability / 32) as usize].effective |= 1 << (capability % 32);
            changed = true;
        }
    }
    if changed { capset(&data) } else { Ok(()) }
}

/// Whether the calling thread holds `capability` in its permitted set.
pub fn has_permitted_capability(capability: u32) -> io::Result<bool> {
    Ok(has(&capget()?, |d| d.permitted, capability))
}

/// Whether the calling thread has `capability` in its effective set.
pub fn has_effective_capability(capability: u32) -> io::Result<bool> {
    Ok(has(&capget()?, |d| d.effective, capability))
}

/// Empty the calling thread's effective and inheritable sets and the
/// process's ambient set, keeping the permitted set: nothing this process
/// executes inherits a capability, and it uses one only where a forked
/// child raises it again ([`spawn_self`] with an identity).
pub fn lower_capabilities() -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })?;
    let mut data = capget()?;
    for word in &mut data {
        word.effective = 0;
        word.inheritable = 0;
    }
    capset(&data)
}

/// The supplementary groups of an account (getgrouplist), its primary gid included.
pub fn account_groups(name: &str, gid: u32) -> io::Result<Vec<u32>> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("NUL in user name"))?;
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: c_name is NUL-terminated; groups has room for `count` entries.
        let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if groups.len() >= 65_536 {
            return Err(io::Error::other("more than 65536 groups"));
        }
        groups.resize((count.max(0) as usize).max(groups.len() * 2), 0);
    }
}

/// A group's gid by name; `Ok(None)` if there is none.
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("NUL in group name"))?;
    let mut buffer = vec![0 as libc::c_char; super::PASSWD_BUFFER_BYTES];
    // SAFETY: group is a plain C struct for which all-zero bytes are valid.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getgrnam_r writes only into them.
    let rc = unsafe { libc::getgrnam_r(c_name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut result) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(entry.gr_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_cat_status(spec: ChildSpec) -> String {
        // /bin/cat through its own descriptor; its stdout is a pipe given as fd 1.
        let path = CString::new("/bin/cat").unwrap();
        // SAFETY: as in open_self_exe.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor we own.
        let exe = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut pipe = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the local array.
        assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new descriptors this test owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let mut spec = spec;
        spec.fds.push((write.as_raw_fd(), 1));
        let mut child = spawn_self(&exe, &spec).unwrap();
        drop(write);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut text).unwrap();
        assert!(child.wait().unwrap().success());
        text
    }

    /// The child gets exactly the descriptors it is given, SIGTERM and
    /// SIGINT blocked, and (as root) the identity asked for.
    #[test]
    fn a_child_starts_with_its_descriptors_signals_blocked_and_its_identity() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut spec = ChildSpec {
            name: "cat".into(),
            args: vec!["/proc/self/status".into()],
            fds: vec![(file.as_raw_fd(), 3)],
            ..ChildSpec::default()
        };
        if super::super::effective_uid() == 0 {
            spec.identity = Some(Identity { uid: 65534, gid: 65534, groups: vec![65534] });
        }
        let status = spawn_cat_status(spec);
        let line = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).expect("SigBlk line");
        let mask = u64::from_str_radix(line.trim(), 16).unwrap();
        for signal in [libc::SIGTERM, libc::SIGINT] {
            assert_ne!(mask & (1 << (signal - 1)), 0, "signal {signal} not blocked: SigBlk {line}");
        }
        if super::super::effective_uid() == 0 {
            let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().to_string();
            assert_eq!(field("Uid:").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
            assert_eq!(field("Gid:").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
            assert_eq!(field("Groups:"), "65534");
            assert_eq!(field("CapEff:"), "0000000000000000");
            assert_eq!(field("CapPrm:"), "0000000000000000");
        }
    }
}
