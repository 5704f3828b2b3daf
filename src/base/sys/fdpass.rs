//! Message sockets between the appliance's own processes, and passing one
//! descriptor over them (SCM_RIGHTS).
//!
//! `SOCK_SEQPACKET` socket pairs keep message boundaries, so a message is
//! one `sendmsg` and one `recvmsg`, never split or merged. Received
//! descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`); room is made for
//! exactly one, so a peer that sends more has the rest closed by the kernel
//! and the message is refused (`MSG_CTRUNC`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds is a local array of two ints, as socketpair(2) requires.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success both are new descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Control-message buffer for one descriptor, aligned as cmsghdr needs.
#[repr(C, align(8))]
struct OneFdControl([u8; 24]);

// CMSG_SPACE(sizeof(int)) is 24 on every 64-bit Linux.
const _: () = assert!(size_of::<libc::cmsghdr>() + 8 == 24);

/// Send one message, with `fd` attached when given. Never blocks for long
/// on a message socket with room; `MSG_NOSIGNAL`: a closed peer is an error, not SIGPIPE.
pub fn send_message(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    send_message_flags(socket, bytes, fd, libc::MSG_NOSIGNAL)
}

/// Send one message without waiting: `WouldBlock` when the peer's queue
/// is full (`MSG_DONTWAIT`), nothing sent.
pub fn send_message_nowait(socket: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    send_message_flags(socket, bytes, None, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
}

fn send_message_flags(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>, flags: i32) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut control = OneFdControl([0; 24]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    if let Some(fd) = fd {
        header.msg_control = control.0.as_mut_ptr().cast();
        header.msg_controllen = control.0.len();
        // SAFETY: msg_control points to a buffer of CMSG_SPACE(sizeof(int))
        // bytes, so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for one int.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
        }
    }
    // SAFETY: header and everything it points to are alive for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, flags) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::other("message sent in part"));
    }
    Ok(())
}

/// One received message: its length in the caller's buffer, and the descriptor it carried.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fd: Option<OwnedFd>,
}

/// Receive one message into `buffer` without waiting (`MSG_DONTWAIT`).
/// `Ok(None)`: nothing there now. `Ok(Some(len 0))`: the peer closed.
/// A message longer than `buffer`, or carrying more than one descriptor,
/// is an error (what it carried is closed).
pub fn receive_message(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<Option<Received>> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    let mut control = OneFdControl([0; 24]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = control.0.len();
    // SAFETY: header and the buffers it points to are alive for the call.
    let received =
        unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(error),
        };
    }
    let mut fd = None;
    // SAFETY: the kernel filled msg_control with msg_controllen valid bytes;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk only inside them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                // A second descriptor would be a protocol error; own it so it closes.
                let owned = OwnedFd::from_raw_fd(raw);
                if fd.replace(owned).is_some() {
                    return Err(io::Error::other("more than one descriptor in a message"));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if header.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other("message or its descriptors truncated"));
    }
    Ok(Some(Received { len: received as usize, fd }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_carries_one_descriptor_and_end_of_stream_is_empty() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut buffer = [0u8; 16];
        assert!(receive_message(b.as_fd(), &mut buffer).unwrap().is_none(), "nothing sent yet");
        let file = std::fs::File::open("/dev/null").unwrap();
        send_message(a.as_fd(), b"fd", Some(file.as_fd())).unwrap();
        send_message(a.as_fd(), b"plain", None).unwrap();
        let first = receive_message(b.as_fd(), &mut buffer).unwrap().unwrap();
        assert_eq!(&buffer[..first.len], b"fd");
        let passed = first.fd.expect("a descriptor");
        // SAFETY: F_GETFD on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(passed.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let second = receive_message(b.as_fd(), &mut buffer).unwrap().unwrap();
        assert_eq!((&buffer[..second.len], second.fd.is_none()), (&b"plain"[..], true));
        // A message longer than the buffer is refused, not cut.
        send_message(a.as_fd(), &[7u8; 32], None).unwrap();
        assert!(receive_message(b.as_fd(), &mut buffer).is_err());
        drop(a);
        // A child forked by another test between its fork and its exec holds
        // a copy of `a` (close-on-exec closes it only at the exec): wait for
        // the end of stream rather than expect it at once.
        let mut fds = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        while crate::base::sys::poll(&mut fds, -1).unwrap() == 0 {}
        assert_eq!(receive_message(b.as_fd(), &mut buffer).unwrap().map(|r| r.len), Some(0));
    }
}
