//! Writing keys and certificates to disk without ever overwriting anything.
//!
//! Both helpers create the file with `O_CREAT | O_EXCL`, so an existing file (or a symlink an
//! attacker planted there) is never followed, truncated or replaced. The mode is set on the open
//! descriptor before any byte is written. If writing fails half-way, the new file is removed, so
//! a crash never leaves a truncated key behind that a later run would refuse to replace.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::Error;

/// Mode of private key files: owner read/write only.
pub const PRIVATE_MODE: u32 = 0o600;

/// Mode of certificate files: world-readable, owner-writable.
pub const PUBLIC_MODE: u32 = 0o644;

/// Creates `path` with mode 0600 and writes `bytes` (a private key) to it.
///
/// Fails with [`Error::FileExists`] if anything exists at `path`, leaving it untouched.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_new(path, bytes, PRIVATE_MODE)
}

/// Creates `path` with mode 0644 and writes `bytes` (a certificate) to it.
///
/// Fails with [`Error::FileExists`] if anything exists at `path`, leaving it untouched.
pub fn write_new_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_new(path, bytes, PUBLIC_MODE)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never wider than `mode`, even for a moment; the umask can only narrow it.
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::FileExists(path.to_owned()),
        _ => io(e),
    })?;
    let written = set_mode(&file, mode)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        // We created this file a moment ago (O_EXCL), so removing it cannot destroy anything
        // that was there before. A failure to remove is secondary to the error we report.
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    Ok(())
}

/// Sets the exact mode, whatever the process umask made of it at creation.
#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_new_files_with_exact_modes() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        let cert = dir.path().join("c.pem");
        write_new_private(&key, b"secret").unwrap();
        write_new_public(&cert, b"public").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert_eq!(std::fs::read(&cert).unwrap(), b"public");
        #[cfg(unix)]
        {
            assert_eq!(mode(&key), 0o600);
            assert_eq!(mode(&cert), 0o644);
        }
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"original").unwrap();
        for result in [
            write_new_private(&path, b"new"),
            write_new_public(&path, b"new"),
        ] {
            match result {
                Err(Error::FileExists(p)) => assert_eq!(p, path),
                other => panic!("expected FileExists, got {other:?}"),
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"original");
        let message = write_new_private(&path, b"new").unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("already exists"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"original").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write_new_private(&link, b"new"),
            Err(Error::FileExists(_))
        ));
        // A dangling symlink is refused too, not used to create its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            write_new_private(&dangling, b"new"),
            Err(Error::FileExists(_))
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"original");
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("k.key");
        let err = write_new_private(&path, b"x").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("no-such-dir"));
    }
}
