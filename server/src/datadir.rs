//! The data dir's permissions. The log and the snapshots hold every
//! campaign's key and the token file the tokens' hashes, so the dir is
//! `0700` and every file in it `0600` (API.md, Conventions). New files get
//! those modes where they are created; this module creates the dir and
//! the token file, and tightens a data dir an older version (or an
//! operator) left readable to others.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::tokens::TOKENS_FILE;

/// Mode of the data dir and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data dir.
pub const FILE_MODE: u32 = 0o600;
/// Directory levels below the data dir that are tightened (`wal/` and
/// anything a later version nests one level further); a bound, not a walk
/// of whatever an operator links in.
const DEPTH_MAX: usize = 2;

/// Creates `data_dir` (with missing parents, `0700`) and its token file
/// (`0600`, empty) when they are missing, and tightens every directory and
/// regular file in it to those modes. Returns the paths whose modes were
/// looser, for the caller to warn about. Symbolic links are left alone.
pub fn prepare(data_dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(data_dir)
        .map_err(|e| with_path(e, "create the data dir", data_dir))?;
    // Created here rather than by whoever first appends to it, so no
    // umask decides its mode.
    let tokens = data_dir.join(TOKENS_FILE);
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(&tokens)
        .map_err(|e| with_path(e, "create the token file", &tokens))?;
    let mut tightened = Vec::new();
    tighten(data_dir, 0, &mut tightened)?;
    Ok(tightened)
}

/// Sets `path` (and, for a directory, what is in it) to the data dir's
/// modes, recording each path that was looser.
fn tighten(path: &Path, depth: usize, tightened: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| with_path(e, "inspect", path))?;
    let wanted = if meta.is_dir() {
        DIR_MODE
    } else if meta.is_file() {
        FILE_MODE
    } else {
        return Ok(());
    };
    if meta.permissions().mode() & 0o777 != wanted {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted))
            .map_err(|e| with_path(e, "set the mode of", path))?;
        tightened.push(path.to_path_buf());
    }
    if meta.is_dir() && depth < DEPTH_MAX {
        for entry in fs::read_dir(path).map_err(|e| with_path(e, "list", path))? {
            let entry = entry.map_err(|e| with_path(e, "list", path))?;
            tighten(&entry.path(), depth + 1, tightened)?;
        }
    }
    Ok(())
}

fn with_path(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot {what} {}: {error}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_fresh_dir_is_private_and_a_loose_one_is_tightened() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("a/data");
        assert_eq!(prepare(&data).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(mode(&data), DIR_MODE);
        assert_eq!(mode(&data.join(TOKENS_FILE)), FILE_MODE);

        let wal = data.join("wal");
        fs::create_dir(&wal).unwrap();
        fs::write(wal.join("x.wal"), b"").unwrap();
        for (path, loose) in [(&data, 0o755), (&wal, 0o755), (&wal.join("x.wal"), 0o644)] {
            fs::set_permissions(path, fs::Permissions::from_mode(loose)).unwrap();
        }
        let tightened = prepare(&data).unwrap();
        assert_eq!(tightened.len(), 3, "{tightened:?}");
        assert_eq!(
            (mode(&data), mode(&wal), mode(&wal.join("x.wal"))),
            (DIR_MODE, DIR_MODE, FILE_MODE)
        );
    }
}
