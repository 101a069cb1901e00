//! Adopting file descriptors inherited from the supervisor.
//!
//! The pre-fork supervisor owns the one listening socket and the shared metrics file and
//! passes both to each worker process it execs, by leaving them open across `exec` and
//! naming their numbers on the worker's command line. Turning such a number back into an
//! owned Rust handle has no safe API in std (`FromRawFd` is `unsafe` because the caller must
//! guarantee nothing else owns the descriptor), so this is the crate's only `unsafe` module.
//! The descriptors are validated (open, of the expected kind) before they are adopted.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// What an inherited descriptor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A socket (the listener).
    Socket,
    /// A regular file (the metrics memfd).
    File,
}

/// Takes ownership of descriptor `fd`, inherited from the supervisor.
///
/// Call at most once per descriptor, at worker start-up, before anything else could have
/// opened or closed descriptors by number.
pub fn adopt(fd: RawFd, kind: Kind) -> std::io::Result<OwnedFd> {
    if fd < 3 {
        return Err(std::io::Error::other(format!(
            "inherited descriptor {fd} is a standard stream"
        )));
    }
    // SAFETY: `fstat` only writes into the zeroed `stat` buffer we own; an invalid `fd`
    // makes it fail with EBADF, which we report.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fmt = st.st_mode & libc::S_IFMT;
    let ok = match kind {
        Kind::Socket => fmt == libc::S_IFSOCK,
        Kind::File => fmt == libc::S_IFREG,
    };
    if !ok {
        return Err(std::io::Error::other(format!(
            "inherited descriptor {fd} is not a {kind:?}"
        )));
    }
    // SAFETY: the descriptor is open (fstat succeeded) and of the expected kind; it was
    // created by the supervisor for this process alone and named on our command line, and
    // no other handle in this process refers to it, so ownership can be taken exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
