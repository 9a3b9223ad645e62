//! Reading bounded files, and writing private files: new ones never over anything, and the
//! login credentials replaced atomically.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// Reads a whole file of at most `max` bytes, so a mistaken argument such as `/dev/zero` fails
/// instead of filling memory.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::ErrorKind::FileTooLarge.into());
    }
    Ok(bytes)
}

/// Creates `dir` and its parents with mode 0700 where missing; an existing directory is left as
/// it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Replaces `path` with `bytes` (mode 0600) so that a reader sees the old file or the new one,
/// never a mix: the bytes go to a new file beside it, which is then renamed over it.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), certs::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    // Left over by a run of ours that died between write and rename (same pid reused): stale.
    let _ = fs::remove_file(&tmp);
    certs::write_new_private(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        certs::Error::Io {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_private_is_0600_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("login.pem");
        replace_private(&p, b"one").unwrap();
        replace_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_limited_refuses_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, [0u8; 11]).unwrap();
        assert_eq!(
            read_limited(&p, 10).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(read_limited(&p, 11).unwrap().len(), 11);
    }
}
