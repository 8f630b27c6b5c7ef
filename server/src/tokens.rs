//! API tokens: random secrets shown once, stored only as SHA-256 hashes in
//! `DATA_DIR/tokens`, one `role name hash` line each.
//!
//! `redeemd token add` may write the file while the server runs; the server
//! re-reads it when a presented token is unknown and the file has changed,
//! checking the file at most once a [`RELOAD_INTERVAL_MS`].
//!
//! A known token is found under a read lock only, which is never held
//! across file I/O: a flood of unknown tokens costs each of them a hash and
//! a scan, and the server one `stat()` a second, but never makes an honest
//! request wait.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Checkout,
    Issuer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "checkout" => Some(Role::Checkout),
            "issuer" => Some(Role::Issuer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Checkout => "checkout",
            Role::Issuer => "issuer",
        }
    }
}

/// File name of the token list inside the data dir.
pub const TOKENS_FILE: &str = "tokens";
/// Bytes of randomness in a token.
const TOKEN_RANDOM_BYTES: usize = 24;
/// Least time between two checks of the token file prompted by unknown
/// tokens: a token added while the server runs works within about this.
pub const RELOAD_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Clone)]
struct Entry {
    role: Role,
    name: String,
    hash: [u8; 32],
    /// The token's own failed-attempt budget, when it has one.
    failed_attempts_per_minute: Option<u32>,
}

/// The tokens a server accepts.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    /// The entries in force. Requests only read-lock it to clone the `Arc`;
    /// a reload write-locks it only to swap the pointer.
    entries: parking_lot::RwLock<Arc<[Entry]>>,
    /// When the file was last checked and its modification time then.
    /// Only a miss takes it, with `try_lock`: while one miss checks the
    /// file, the others answer 401 at once instead of queueing behind it.
    reload: parking_lot::Mutex<Reload>,
}

#[derive(Debug)]
struct Reload {
    /// When the file was last checked; `None` before the first miss.
    checked_at: Option<Instant>,
    /// The file's modification time when it was last read.
    modified: Option<SystemTime>,
}

/// Who a request is from.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    pub name: String,
    /// Scopes idempotency keys and the token's failed-attempt budget: the
    /// first 16 hex digits of the token's hash.
    pub scope: String,
    /// The token's own failed-attempt budget a minute; `None` takes the
    /// server's `--failed-attempts-per-token-per-minute`.
    pub failed_attempts_per_minute: Option<u32>,
}

fn hash(token: &str) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Compares two hashes in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_entries(path: &Path) -> std::io::Result<(Vec<Entry>, Option<SystemTime>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(e),
    };
    let modified = std::fs::metadata(path)?.modified().ok();
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(' ');
        let parsed = (|| {
            let role = Role::parse(parts.next()?)?;
            let name = parts.next()?.to_owned();
            let hash = unhex(parts.next()?)?;
            let failed_attempts_per_minute = match parts.next() {
                None => None,
                Some(budget) => Some(budget.parse().ok()?),
            };
            parts.next().is_none().then_some(Entry {
                role,
                name,
                hash,
                failed_attempts_per_minute,
            })
        })();
        match parsed {
            Some(entry) => entries.push(entry),
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: line {} is not `role name sha256hex [failed_attempts_per_minute]`",
                        path.display(),
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok((entries, modified))
}

impl TokenStore {
    pub fn open(data_dir: &Path) -> std::io::Result<TokenStore> {
        let path = data_dir.join(TOKENS_FILE);
        let (entries, modified) = read_entries(&path)?;
        Ok(TokenStore {
            path,
            entries: parking_lot::RwLock::new(entries.into()),
            reload: parking_lot::Mutex::new(Reload {
                checked_at: None,
                modified,
            }),
        })
    }

    pub fn has_admin(&self) -> bool {
        self.entries.read().iter().any(|e| e.role == Role::Admin)
    }

    /// The principal a bearer token stands for. An unknown token re-reads
    /// the file if it changed, at most once a [`RELOAD_INTERVAL_MS`].
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.authenticate_at(token, Instant::now())
    }

    /// [`TokenStore::authenticate`] at `now`, so tests can step the clock.
    fn authenticate_at(&self, token: &str, now: Instant) -> Option<Principal> {
        let presented = hash(token);
        let find = |entries: &[Entry]| {
            // Every entry is compared, so timing tells nothing about which.
            let mut found = None;
            for entry in entries {
                if constant_time_eq(&entry.hash, &presented) {
                    found = Some(entry.clone());
                }
            }
            found
        };
        // The read guard is dropped at the end of the statement: nothing
        // below runs under it.
        let entries = self.entries.read().clone();
        let found = find(&entries).or_else(|| self.reload(now).and_then(|e| find(&e)));
        found.map(|e| Principal {
            role: e.role,
            name: e.name,
            scope: hex(&e.hash[..8]),
            failed_attempts_per_minute: e.failed_attempts_per_minute,
        })
    }

    /// Re-reads the file if it is due for a check and changed since it was
    /// read; returns the new entries if it did. Returns `None` at once when
    /// another miss is checking or the last check was under
    /// [`RELOAD_INTERVAL_MS`] ago.
    fn reload(&self, now: Instant) -> Option<Arc<[Entry]>> {
        let mut reload = self.reload.try_lock()?;
        let interval = Duration::from_millis(RELOAD_INTERVAL_MS);
        if reload
            .checked_at
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return None;
        }
        reload.checked_at = Some(now);
        let modified = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| m.modified().ok());
        if modified == reload.modified {
            return None;
        }
        // A damaged file keeps the entries in force; the next check tries
        // again.
        let (fresh, modified) = read_entries(&self.path).ok()?;
        reload.modified = modified;
        let fresh: Arc<[Entry]> = fresh.into();
        *self.entries.write() = fresh.clone();
        Some(fresh)
    }
}

/// Creates a token for `role`, appends its hash to the data dir's token
/// file (creating the dir), and returns the token. Safe while a server
/// runs: lines are appended whole under an exclusive lock.
/// `failed_attempts_per_minute` gives the token its own budget.
pub fn add(
    data_dir: &Path,
    role: Role,
    name: &str,
    failed_attempts_per_minute: Option<u32>,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic()),
        "a token name is 1 to 64 visible ASCII characters without spaces"
    );
    std::fs::create_dir_all(data_dir)?;
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let token = format!("rdm_{}_{}", role.as_str(), hex(&random));
    let path = data_dir.join(TOKENS_FILE);
    // 0600 when this call creates it: the hashes are for the owner alone.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    lock_exclusive(&file)?;
    let budget = failed_attempts_per_minute.map_or(String::new(), |n| format!(" {n}"));
    writeln!(
        file,
        "{} {} {}{budget}",
        role.as_str(),
        name,
        hex(&hash(&token))
    )?;
    file.sync_all()?;
    Ok(token)
}

use std::os::unix::fs::OpenOptionsExt;

fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open descriptor owned by `file`; the lock is
    // released when the file is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_authenticate_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(!store.has_admin());
        let t0 = Instant::now();
        assert!(store.authenticate_at("nope", t0).is_none());
        let token = add(dir.path(), Role::Checkout, "shop", Some(5)).unwrap();
        // The store picks up a token added after it was opened, at its next
        // check of the file.
        let next_check = t0 + Duration::from_millis(RELOAD_INTERVAL_MS);
        let principal = store.authenticate_at(&token, next_check).unwrap();
        assert_eq!(
            (principal.role, principal.name.as_str()),
            (Role::Checkout, "shop")
        );
        assert_eq!(principal.failed_attempts_per_minute, Some(5));
        assert!(store.authenticate(&format!("{token}x")).is_none());
        let stored = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&token), "only the hash is kept");
        assert!(add(dir.path(), Role::Admin, "has space", None).is_err());
    }

    #[test]
    fn unknown_tokens_check_the_file_at_most_once_an_interval() {
        let dir = tempfile::tempdir().unwrap();
        let first = add(dir.path(), Role::Admin, "first", None).unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A miss checks the file (unchanged: nothing is read).
        assert!(store.authenticate_at("bogus", at(0)).is_none());
        let late = add(dir.path(), Role::Checkout, "late", None).unwrap();
        // A flood of misses within the interval never reaches the file, so
        // the token added meanwhile is not seen yet...
        for ms in 0..RELOAD_INTERVAL_MS {
            assert!(store.authenticate_at("bogus", at(ms)).is_none());
            assert!(store.authenticate_at(&late, at(ms)).is_none(), "at {ms} ms");
        }
        // ...and known tokens are answered throughout.
        assert!(store.authenticate_at(&first, at(1)).is_some());
        // Once the interval has passed, the next miss reads it.
        let principal = store
            .authenticate_at(&late, at(RELOAD_INTERVAL_MS))
            .unwrap();
        assert_eq!(principal.name, "late");
        assert!(
            store
                .authenticate_at(&first, at(RELOAD_INTERVAL_MS))
                .is_some()
        );
    }

    #[test]
    fn a_damaged_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_FILE), "admin x nothex\n").unwrap();
        let err = TokenStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
