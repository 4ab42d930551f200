//! The daemon's socket: root's and the `observer` group's, nobody else's. A socket left by a
//! daemon that was killed is replaced; one a live daemon answers on is not.

use std::{
    ffi::CString,
    io::ErrorKind,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::Path,
};

use anyhow::{Context as _, bail};

/// The group's id, when it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getgrnam takes a NUL-terminated name and returns a static entry or NULL;
    // the daemon reads it before any other thread could call it.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// A group's name, when it exists.
pub fn group_name(gid: u32) -> Option<String> {
    // SAFETY: getgrgid returns a static entry or NULL; the name is copied at once.
    let g = unsafe { libc::getgrgid(gid) };
    if g.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr((*g).gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Bind PATH for the daemon. Returns the listener and a line to say about access.
pub fn bind(path: &Path, group: &str) -> anyhow::Result<(UnixListener, String)> {
    let gid = group_id(group);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Only root and the group may reach the socket at all.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(if gid.is_some() { 0o750 } else { 0o700 }))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(dir, Some(0), Some(gid))?;
        }
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!("an observer daemon already listens on {} (stop it first: systemctl stop observer)", path.display()),
        // A socket file nobody listens on: the last daemon was killed. Replace it.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Err(_) => {}
    }
    if path.symlink_metadata().is_ok() {
        bail!("{} exists and is not a socket observer can replace; remove it", path.display());
    }
    // Created 0600, then opened to the group: never readable by others, not for a moment.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
    let said = match gid {
        Some(gid) => {
            std::os::unix::fs::chown(path, Some(0), Some(gid)).with_context(|| format!("cannot give {} to the group {group}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            format!("listening on {} (root and the group {group})", path.display())
        }
        None => format!(
            "listening on {} (root only: there is no group {group}; `groupadd --system {group}` and a restart let its members attach without sudo)",
            path.display()
        ),
    };
    listener.set_nonblocking(true)?;
    Ok((listener, said))
}
