//! Reading the one configuration file, bounded: a regular file of at most [`MAX_BYTES`] of
//! UTF-8 text.

use std::io::Read;
use std::path::Path;

use crate::error::ErrorKind;

/// Larger files are not configuration files.
pub const MAX_BYTES: u64 = 1 << 20;

/// The text of the file at `path`.
pub(crate) fn read(path: &Path) -> Result<String, ErrorKind> {
    // Asked before opening: opening a pipe would wait for a writer.
    if !std::fs::metadata(path).map_err(ErrorKind::Read)?.is_file() {
        return Err(ErrorKind::NotRegular);
    }
    let file = std::fs::File::open(path).map_err(ErrorKind::Read)?;
    // Asked again of what was opened, in case the path changed in between.
    if !file.metadata().map_err(ErrorKind::Read)?.is_file() {
        return Err(ErrorKind::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ErrorKind::Read)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ErrorKind::TooLarge { limit: MAX_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| ErrorKind::NotUtf8)
}
