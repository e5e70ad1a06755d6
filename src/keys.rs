//! The keys that keep subscriber identifiers out of the data directory in
//! clear (issue 5): the files they live in, the keys derived from them, and
//! the two things done with those keys: pseudonyms and sealed values.
//!
//! # Files
//!
//! Keys live in their own directory (`--keys DIR`), never in the data
//! directory, so a copy of the data is worth nothing without them; they are
//! backed up separately. The directory holds:
//!
//! - [`PSEUDONYM_FILE`] (`pseudonym.key`): the pseudonym master key.
//! - `seal-<ID>.key`, one per sealing-key generation, `<ID>` a decimal `u32`
//!   from 1 written without leading zeros. The highest ID seals new values;
//!   every ID present opens the values it sealed, so rotation
//!   ([`rotate`]) keeps old values readable. A file whose name starts with
//!   `seal-` and ends with `.key` but has no such ID is refused rather than
//!   ignored: a misnamed key would silently make values unreadable.
//!
//! Each file is 32 random bytes written as 64 hex digits and a newline
//! (`openssl rand -hex 32` writes one). Loading refuses, naming the file, a
//! missing or unreadable file, other contents, and a file readable or
//! writable by group or others (`mode & 0o077 != 0`): such a key may already
//! be copied. Files are written with mode 0600 from the start (never
//! widened then narrowed) and never replace an existing file. No key
//! material appears in an error, `Debug` or `Display`.
//!
//! Other files in the directory are ignored, so the development keys can sit
//! beside the development PKI (`portcullis certs dev --out DIR` writes both).
//!
//! # Derivation
//!
//! No master key is used directly: each purpose gets its own key, so a
//! weakness in one use cannot leak into another. With HKDF-SHA256 (RFC
//! 5869), an empty salt (the masters are uniformly random already) and a
//! 32-byte output:
//!
//! - the pseudonym key of identifier kind `<kind>` (`msisdn`, `imsi`, `imei`,
//!   `iccid`, `eid`, `account`) is HKDF(pseudonym master, info
//!   `portcullis/v1/pseudonym/<kind>`);
//! - the sealing key of generation `<ID>` is HKDF(`seal-<ID>.key`, info
//!   `portcullis/v1/seal`);
//! - the key of the line pseudonyms in logs is HKDF(pseudonym master, info
//!   `portcullis/v1/log`): a log line never carries a pseudonym the store
//!   keys state under.
//!
//! # Pseudonyms
//!
//! [`Keys::pseudonym`] is HMAC-SHA256 of the identifier's text under its
//! kind's key: deterministic (the store finds an entity by it), different
//! for the same text under two kinds, and useless without the key.
//!
//! # Sealed values
//!
//! [`Keys::seal`] encrypts with AES-256-GCM under the newest sealing key:
//!
//! ```text
//! version (1 byte, = 1) | key id (u32, big-endian) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The nonce is drawn from the system's generator for every value. The
//! associated data is the version byte, the key id and then the caller's
//! `aad` (the key of the record the value belongs to), so a sealed value
//! moved to another record, or with its header edited, does not open.

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The pseudonym master key's file name.
pub const PSEUDONYM_FILE: &str = "pseudonym.key";

/// The previous pseudonym master, while a migration to a new one runs
/// (`keys rotate-pseudonym`): lookups try the new key, then this one.
pub const PREVIOUS_PSEUDONYM_FILE: &str = "pseudonym-previous.key";

/// The master request records are keyed under, once a pseudonym rotation
/// has separated it from the pseudonym master (records hold no identifier
/// to re-key them by, so their key never changes).
pub const RECORDS_FILE: &str = "records.key";

/// The files [`write_dev_keys`] writes, in order.
pub const DEV_KEY_FILES: [&str; 2] = [PSEUDONYM_FILE, "seal-1.key"];

/// The format version of a sealed value: its first byte.
pub const SEALED_VERSION: u8 = 1;

const SEAL_PREFIX: &str = "seal-";
const KEY_SUFFIX: &str = ".key";
const KEY_MODE: u32 = 0o600;
/// Permission bits of group and others: a key file with any of them set is
/// refused.
const SHARED_BITS: u32 = 0o077;
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = aead::NONCE_LEN;
const TAG_BYTES: usize = 16;
/// Version byte and key id: the part of the header bound as associated data.
const PREFIX_BYTES: usize = 1 + 4;
const HEADER_BYTES: usize = PREFIX_BYTES + NONCE_BYTES;
/// The shortest sealed value: a header and the tag of an empty plaintext.
pub const SEALED_BYTES_MIN: usize = HEADER_BYTES + TAG_BYTES;
/// The most of a key file read: 64 digits and a newline, with room to tell
/// "too long" from "right length".
const KEY_FILE_BYTES_MAX: u64 = 2 * KEY_BYTES as u64 + 2;

const SEAL_INFO: &[u8] = b"portcullis/v1/seal";

/// The kinds of subscriber identifier; each gets its own pseudonym key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Msisdn,
    Imsi,
    Imei,
    Iccid,
    Eid,
    Account,
    /// A care agent: not a subscriber's identifier, but who worked whose
    /// line is kept under a pseudonym all the same.
    Agent,
    /// A retail store.
    Store,
    /// A value of a list (`NAME`, a 0 byte, the value's key in hex).
    ListValue,
}

impl IdKind {
    /// Every kind, in the order of their keys.
    pub const ALL: [IdKind; 9] = [
        IdKind::Msisdn,
        IdKind::Imsi,
        IdKind::Imei,
        IdKind::Iccid,
        IdKind::Eid,
        IdKind::Account,
        IdKind::Agent,
        IdKind::Store,
        IdKind::ListValue,
    ];

    /// The kind's name, as in the contract's field names and the HKDF info.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Msisdn => "msisdn",
            IdKind::Imsi => "imsi",
            IdKind::Imei => "imei",
            IdKind::Iccid => "iccid",
            IdKind::Eid => "eid",
            IdKind::Account => "account",
            IdKind::Agent => "agent",
            IdKind::Store => "store",
            IdKind::ListValue => "list_value",
        }
    }

    /// The HKDF info of the kind's pseudonym key.
    fn info(self) -> String {
        format!("portcullis/v1/pseudonym/{}", self.as_str())
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier's pseudonym: HMAC-SHA256 under its kind's key. Not secret
/// in itself (it is what the store keeps), so it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; 32]);

impl Pseudonym {
    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Everything that can go wrong with keys, naming the file or the field.
/// No variant holds key material or a plaintext.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// A file or directory could not be read (missing, unreadable).
    Read { path: PathBuf, source: io::Error },
    /// A file or directory could not be written.
    Write { path: PathBuf, source: io::Error },
    /// A key file that would be written already exists.
    Exists { path: PathBuf },
    /// A key file readable or writable by group or others.
    Shared { path: PathBuf, mode: u32 },
    /// A key path that is not a regular file.
    NotAFile { path: PathBuf },
    /// A key file whose contents are not 64 hex digits and a newline.
    Contents { path: PathBuf },
    /// A `seal-*.key` file without a valid generation ID.
    SealName { path: PathBuf },
    /// A keys directory with no sealing key.
    NoSealKey { dir: PathBuf },
    /// Sealing key IDs are used up (the newest is `u32::MAX`).
    IdsExhausted { dir: PathBuf },
    /// The system's random generator failed.
    Random,
    /// A value too long for AES-GCM to seal.
    TooLong { len: usize },
    /// A sealed value shorter than a header and a tag.
    TooShort { len: usize },
    /// A sealed value of a format version this build does not know.
    Version { version: u8 },
    /// A sealed value whose key is not loaded.
    UnknownKeyId { id: u32 },
    /// A sealed value that fails authentication: changed, or sealed for
    /// another record (wrong associated data). The two cannot be told apart.
    Unauthentic { id: u32 },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            KeyError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            KeyError::Exists { path } => write!(
                f,
                "{} already exists; refusing to replace a key (move it away or choose another directory)",
                path.display()
            ),
            KeyError::Shared { path, mode } => write!(
                f,
                "{p} is readable or writable by group or others (mode {mode:04o}); a key must be private: run `chmod 600 {p}`",
                p = path.display()
            ),
            KeyError::NotAFile { path } => {
                write!(f, "{}: a key must be a regular file", path.display())
            }
            KeyError::Contents { path } => write!(
                f,
                "{}: expected a 32-byte key written as 64 hex digits and a newline",
                path.display()
            ),
            KeyError::SealName { path } => write!(
                f,
                "{}: a sealing key is named seal-<ID>.key, <ID> a number from 1 to {} without leading zeros",
                path.display(),
                u32::MAX
            ),
            KeyError::NoSealKey { dir } => write!(
                f,
                "{}: no sealing key (seal-<ID>.key); write one with `portcullis keys rotate --keys {}`",
                dir.display(),
                dir.display()
            ),
            KeyError::IdsExhausted { dir } => write!(
                f,
                "{}: sealing key IDs are used up (seal-{}.key exists)",
                dir.display(),
                u32::MAX
            ),
            KeyError::Random => write!(f, "the system's random generator failed"),
            KeyError::TooLong { len } => write!(f, "value of {len} bytes is too long to seal"),
            KeyError::TooShort { len } => write!(
                f,
                "sealed value of {len} bytes is shorter than the {SEALED_BYTES_MIN} bytes of a header and tag"
            ),
            KeyError::Version { version } => write!(
                f,
                "sealed value has format version {version}; this build reads version {SEALED_VERSION}"
            ),
            KeyError::UnknownKeyId { id } => write!(
                f,
                "sealed value names key id {id}, and no seal-{id}.key is loaded"
            ),
            KeyError::Unauthentic { id } => write!(
                f,
                "sealed value under key id {id} does not authenticate: it was changed, or sealed for another record"
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } | KeyError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The derived keys of one keys directory. `Debug` shows which keys are
/// loaded, never their bytes.
pub struct Keys {
    /// One HMAC key per [`IdKind`], in the order of [`IdKind::ALL`].
    pseudonym: [hmac::Key; IdKind::ALL.len()],
    /// The previous master's, while a migration runs.
    previous: Option<[hmac::Key; IdKind::ALL.len()]>,
    /// The key request ids' records are keyed and fingerprinted under,
    /// derived from the pseudonym master: stable across restarts, so a
    /// retry after one finds its record.
    records: [u8; 16],
    /// The key of the line pseudonyms in logs: its own purpose, so a log
    /// line never carries the store's own pseudonym of a line (a reader of
    /// the logs cannot find that line's state in the data directory).
    log: hmac::Key,
    /// Sealing keys by generation ID.
    seal: BTreeMap<u32, aead::LessSafeKey>,
    /// The ID new values are sealed under: the highest loaded.
    seal_id: u32,
    rng: SystemRandom,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("pseudonym_kinds", &IdKind::ALL.map(IdKind::as_str))
            .field("seal_ids", &self.seal.keys().collect::<Vec<_>>())
            .field("sealing_with", &self.seal_id)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the keys of `dir`: [`PSEUDONYM_FILE`] and every
    /// `seal-<ID>.key`, at least one. See the module doc for what is
    /// refused.
    pub fn load(dir: &Path) -> Result<Keys, KeyError> {
        let pseudonym = read_key_file(&dir.join(PSEUDONYM_FILE))?;
        let mut seals = Vec::new();
        for (id, path) in seal_files(dir)? {
            seals.push((id, read_key_file(&path)?));
        }
        if seals.is_empty() {
            return Err(KeyError::NoSealKey {
                dir: dir.to_path_buf(),
            });
        }
        let mut keys = Keys::from_masters(&pseudonym, &seals);
        let previous = dir.join(PREVIOUS_PSEUDONYM_FILE);
        if previous.symlink_metadata().is_ok() {
            let master = read_key_file(&previous)?;
            keys.previous = Some(pseudonym_keys(&master));
        }
        let records = dir.join(RECORDS_FILE);
        if records.symlink_metadata().is_ok() {
            keys.records = records_key(&read_key_file(&records)?);
        }
        Ok(keys)
    }

    /// Keys in the middle of a pseudonym migration from `previous` to
    /// `pseudonym` (as `keys rotate-pseudonym` leaves a keys directory):
    /// record keys stay those of `previous`. For tests; `None` as for
    /// [`Keys::from_secrets`].
    pub fn from_secrets_migrating(
        pseudonym: &[u8; 32],
        previous: &[u8; 32],
        seals: &[(u32, [u8; 32])],
    ) -> Option<Keys> {
        let mut keys = Keys::from_secrets(pseudonym, seals)?;
        keys.previous = Some(pseudonym_keys(previous));
        keys.records = records_key(&records_master(previous));
        Some(keys)
    }

    /// Whether a pseudonym migration runs: the previous master is loaded.
    pub fn migrating(&self) -> bool {
        self.previous.is_some()
    }

    /// The pseudonym of `value` under the previous master, while a
    /// migration runs.
    pub fn previous_pseudonym(&self, kind: IdKind, value: &str) -> Option<Pseudonym> {
        let keys = self.previous.as_ref()?;
        Some(sign(&keys[kind as usize], value))
    }

    /// Keys from master keys held in memory (tests, and an in-memory store
    /// with per-process keys). `seals` pairs generation IDs with sealing
    /// masters; `None` when it is empty or an ID is 0.
    pub fn from_secrets(pseudonym: &[u8; 32], seals: &[(u32, [u8; 32])]) -> Option<Keys> {
        if seals.is_empty() || seals.iter().any(|&(id, _)| id == 0) {
            return None;
        }
        Some(Keys::from_masters(pseudonym, seals))
    }

    /// Keys from fresh random masters, one sealing generation (ID 1): for a
    /// process whose sealed values and pseudonyms need not outlive it.
    pub fn random() -> Result<Keys, KeyError> {
        let rng = SystemRandom::new();
        let pseudonym = random_key(&rng)?;
        let seal = random_key(&rng)?;
        Ok(Keys::from_masters(&pseudonym, &[(1, seal)]))
    }

    fn from_masters(pseudonym_master: &[u8; 32], seals: &[(u32, [u8; 32])]) -> Keys {
        let pseudonym = pseudonym_keys(pseudonym_master);
        let seal: BTreeMap<u32, aead::LessSafeKey> = seals
            .iter()
            .map(|(id, master)| {
                let key: aead::UnboundKey = expand(&extract(master), SEAL_INFO, &aead::AES_256_GCM);
                (*id, aead::LessSafeKey::new(key))
            })
            .collect();
        // Invariant: callers pass at least one sealing key (checked in
        // `load` and `from_secrets`; `random` makes one).
        let seal_id = *seal.keys().next_back().expect("a sealing key");
        Keys {
            pseudonym,
            previous: None,
            records: records_key(&records_master(pseudonym_master)),
            log: expand(&extract(pseudonym_master), LOG_INFO, hmac::HMAC_SHA256),
            seal,
            seal_id,
            rng: SystemRandom::new(),
        }
    }

    /// The key request ids' records are keyed and fingerprinted under
    /// (`engine::FingerprintKey`).
    pub fn records_key(&self) -> [u8; 16] {
        self.records
    }

    /// The pseudonym of `value` as an identifier of `kind`.
    pub fn pseudonym(&self, kind: IdKind, value: &str) -> Pseudonym {
        sign(&self.pseudonym[kind as usize], value)
    }

    /// The pseudonym of `value` as a line (MSISDN) in a log line: stable
    /// under the same master, so an operator can tie alerts of one line
    /// together, and under a key of its own, never the store's.
    pub fn log_pseudonym(&self, value: &str) -> Pseudonym {
        sign(&self.log, value)
    }

    /// The generation ID new values are sealed under (the highest loaded).
    pub fn seal_key_id(&self) -> u32 {
        self.seal_id
    }

    /// Every sealing generation ID loaded, ascending.
    pub fn seal_key_ids(&self) -> Vec<u32> {
        self.seal.keys().copied().collect()
    }

    /// Seals `plaintext` for the record whose key is `aad` under the newest
    /// sealing key, with a fresh random nonce (format in the module doc).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_BYTES];
        self.rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut out = Vec::with_capacity(HEADER_BYTES + plaintext.len() + TAG_BYTES);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&self.seal_id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let key = &self.seal[&self.seal_id];
        let ad = associated_data(&out[..PREFIX_BYTES], aad);
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(ad),
                &mut out[HEADER_BYTES..],
            )
            .map_err(|_| KeyError::TooLong {
                len: plaintext.len(),
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a value [`Keys::seal`] made for the record whose key is `aad`,
    /// under whichever loaded generation sealed it.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let id = sealed_key_id(sealed)?;
        let key = self.seal.get(&id).ok_or(KeyError::UnknownKeyId { id })?;
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&sealed[PREFIX_BYTES..HEADER_BYTES]);
        let ad = associated_data(&sealed[..PREFIX_BYTES], aad);
        let mut buf = sealed[HEADER_BYTES..].to_vec();
        let len = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(ad),
                &mut buf,
            )
            .map_err(|_| KeyError::Unauthentic { id })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The generation ID a sealed value names, after checking its length and
/// version: what a re-sealing pass after [`rotate`] asks of each value.
pub fn sealed_key_id(sealed: &[u8]) -> Result<u32, KeyError> {
    if sealed.len() < SEALED_BYTES_MIN {
        return Err(KeyError::TooShort { len: sealed.len() });
    }
    if sealed[0] != SEALED_VERSION {
        return Err(KeyError::Version { version: sealed[0] });
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&sealed[1..PREFIX_BYTES]);
    Ok(u32::from_be_bytes(id))
}

/// The AEAD's associated data: the sealed value's version and key id, then
/// the caller's record key.
fn associated_data(prefix: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(prefix.len() + aad.len());
    ad.extend_from_slice(prefix);
    ad.extend_from_slice(aad);
    ad
}

/// HKDF info of the records key, from the records master.
const RECORDS_INFO: &[u8] = b"portcullis/v1/records";

/// The HKDF info of the log pseudonym key, from the pseudonym master.
const LOG_INFO: &[u8] = b"portcullis/v1/log";

/// HKDF info of the records master, from the pseudonym master (until a
/// rotation writes it to [`RECORDS_FILE`]).
const RECORDS_MASTER_INFO: &[u8] = b"portcullis/v1/records-master";

/// The HMAC key of each identifier kind, from a pseudonym master.
fn pseudonym_keys(master: &[u8; 32]) -> [hmac::Key; IdKind::ALL.len()] {
    let prk = extract(master);
    IdKind::ALL.map(|kind| {
        let info = kind.info();
        expand::<_, hmac::Key>(&prk, info.as_bytes(), hmac::HMAC_SHA256)
    })
}

fn sign(key: &hmac::Key, value: &str) -> Pseudonym {
    let tag = hmac::sign(key, value.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    Pseudonym(out)
}

/// The records master derived from a pseudonym master: one way, so the
/// file a rotation writes does not give the old pseudonym master away.
fn records_master(pseudonym_master: &[u8; 32]) -> [u8; 32] {
    let mut m = [0u8; 32];
    let okm: Bytes32 = expand(&extract(pseudonym_master), RECORDS_MASTER_INFO, Bytes32Len);
    m.copy_from_slice(&okm.0);
    m
}

fn records_key(records_master: &[u8; 32]) -> [u8; 16] {
    let k: Bytes16 = expand(&extract(records_master), RECORDS_INFO, Bytes16Len);
    k.0
}

/// 32 bytes of HKDF output.
struct Bytes32([u8; 32]);
struct Bytes32Len;

impl hkdf::KeyType for Bytes32Len {
    fn len(&self) -> usize {
        32
    }
}

impl From<hkdf::Okm<'_, Bytes32Len>> for Bytes32 {
    fn from(okm: hkdf::Okm<'_, Bytes32Len>) -> Bytes32 {
        let mut b = [0u8; 32];
        // Invariant: the output length is the type's, 32.
        okm.fill(&mut b).expect("32 bytes of HKDF output");
        Bytes32(b)
    }
}

/// 16 bytes of HKDF output.
struct Bytes16([u8; 16]);
struct Bytes16Len;

impl hkdf::KeyType for Bytes16Len {
    fn len(&self) -> usize {
        16
    }
}

impl From<hkdf::Okm<'_, Bytes16Len>> for Bytes16 {
    fn from(okm: hkdf::Okm<'_, Bytes16Len>) -> Bytes16 {
        let mut b = [0u8; 16];
        // Invariant: the output length is the type's, 16.
        okm.fill(&mut b).expect("16 bytes of HKDF output");
        Bytes16(b)
    }
}

fn extract(master: &[u8; 32]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(master)
}

/// HKDF-Expand of `prk` with `info` into a key of type `K` (its length from
/// `len`).
fn expand<L, K>(prk: &hkdf::Prk, info: &[u8], len: L) -> K
where
    L: hkdf::KeyType,
    K: for<'a> From<hkdf::Okm<'a, L>>,
{
    let info = [info];
    // Invariant: ring refuses only outputs over 255 hash lengths; ours are 32 bytes.
    K::from(prk.expand(&info, len).expect("a 32-byte HKDF output"))
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// The generation ID in a sealing key's file name, if it is one:
/// `Some(Ok(id))` for `seal-<ID>.key`, `Some(Err(()))` for a name shaped
/// like one without a valid ID, `None` for any other file.
fn seal_id_of(name: &str) -> Option<Result<u32, ()>> {
    let digits = name.strip_prefix(SEAL_PREFIX)?.strip_suffix(KEY_SUFFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    Some(match digits.parse::<u32>() {
        Ok(id) if canonical => Ok(id),
        _ => Err(()),
    })
}

/// The sealing key files of `dir`, by ascending ID. A misnamed one is an
/// error.
fn seal_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match seal_id_of(name) {
            None => {}
            Some(Ok(id)) => found.push((id, entry.path())),
            Some(Err(())) => return Err(KeyError::SealName { path: entry.path() }),
        }
    }
    found.sort_unstable_by_key(|&(id, _)| id);
    Ok(found)
}

/// Reads one key file, refusing it if group or others may read or write it
/// (checked on the open file, so the file checked is the file read).
fn read_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & SHARED_BITS != 0 {
        return Err(KeyError::Shared {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Vec::with_capacity(KEY_FILE_BYTES_MAX as usize);
    file.take(KEY_FILE_BYTES_MAX)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    let key = parse_key(&text).ok_or_else(|| KeyError::Contents {
        path: path.to_path_buf(),
    });
    text.fill(0);
    key
}

/// 64 hex digits (either case), then one optional newline.
fn parse_key(text: &[u8]) -> Option<[u8; 32]> {
    let digits = text.strip_suffix(b"\n").unwrap_or(text);
    if digits.len() != 2 * KEY_BYTES {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(key)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn random_key(rng: &SystemRandom) -> Result<[u8; 32], KeyError> {
    let mut key = [0u8; KEY_BYTES];
    rng.fill(&mut key).map_err(|_| KeyError::Random)?;
    Ok(key)
}

/// Writes a fresh random key to `path`: created new with mode 0600 from
/// the start (never readable by others, not even for a moment), never
/// replacing an existing file, synced before it counts as written.
fn write_new_key(path: &Path, rng: &SystemRandom) -> Result<(), KeyError> {
    let mut key = random_key(rng)?;
    let mut text = hex(&key);
    key.fill(0);
    text.push('\n');
    let result = write_new(path, text.as_bytes());
    // Best effort (no zeroizing crate): overwrite the copy before it is freed.
    text.into_bytes().fill(0);
    result
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::files::create_new_file(path, bytes, KEY_MODE).map_err(|source| {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists { path },
            _ => KeyError::Write { path, source },
        }
    })
}

/// Refuses if any of [`DEV_KEY_FILES`] exists in `dir` (a dangling link
/// counts), so a command can check before it writes anything else.
pub fn refuse_existing_dev_keys(dir: &Path) -> Result<(), KeyError> {
    for name in DEV_KEY_FILES {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path });
        }
    }
    Ok(())
}

/// Writes development keys into `dir` (created if needed): a pseudonym
/// master and sealing generation 1 ([`DEV_KEY_FILES`]), mode 0600. Writes
/// nothing if either file exists: keys are never replaced (values sealed
/// under a replaced key would be lost). Returns the paths written.
pub fn write_dev_keys(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    refuse_existing_dev_keys(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let rng = SystemRandom::new();
    let mut written = Vec::with_capacity(DEV_KEY_FILES.len());
    for name in DEV_KEY_FILES {
        let path = dir.join(name);
        write_new_key(&path, &rng)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes the next sealing generation, `seal-<highest ID + 1>.key` (mode
/// 0600, never replacing a file), into the existing directory `dir`, and
/// returns its path. A service loading `dir` afterwards seals new values
/// under it and still opens the older ones.
pub fn rotate(dir: &Path) -> Result<PathBuf, KeyError> {
    let newest = seal_files(dir)?.last().map_or(0, |&(id, _)| id);
    let next = newest
        .checked_add(1)
        .ok_or_else(|| KeyError::IdsExhausted {
            dir: dir.to_path_buf(),
        })?;
    let path = dir.join(format!("{SEAL_PREFIX}{next}{KEY_SUFFIX}"));
    write_new_key(&path, &SystemRandom::new())?;
    Ok(path)
}

/// `portcullis keys rotate --keys DIR`: prints the new file's path, or the
/// error (exit 1).
/// Starts a pseudonym-key migration in `dir`: keeps the records master
/// apart ([`RECORDS_FILE`], if not yet), moves `pseudonym.key` to
/// [`PREVIOUS_PSEUDONYM_FILE`] and writes a new `pseudonym.key`. Refused
/// while an earlier migration's previous key is still there. Resumes a
/// rotation stopped after the move.
pub fn rotate_pseudonym(dir: &Path) -> Result<PathBuf, KeyError> {
    let current = dir.join(PSEUDONYM_FILE);
    let previous = dir.join(PREVIOUS_PSEUDONYM_FILE);
    let rng = SystemRandom::new();
    if previous.symlink_metadata().is_ok() {
        if current.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: previous });
        }
        write_new_key(&current, &rng)?;
        return Ok(current);
    }
    let master = read_key_file(&current)?;
    let records = dir.join(RECORDS_FILE);
    if records.symlink_metadata().is_err() {
        let mut text = hex(&records_master(&master));
        text.push('\n');
        write_new(&records, text.as_bytes())?;
        text.into_bytes().fill(0);
    }
    std::fs::rename(&current, &previous).map_err(|source| KeyError::Write {
        path: previous.clone(),
        source,
    })?;
    write_new_key(&current, &rng)?;
    Ok(current)
}

/// `portcullis keys rotate-pseudonym --keys DIR`.
pub fn rotate_pseudonym_command(dir: &Path) -> ExitCode {
    match rotate_pseudonym(dir) {
        Ok(path) => {
            println!("wrote {}", path.display());
            println!(
                "restart the service: it looks identifiers up under the new key, then under {PREVIOUS_PSEUDONYM_FILE}, and re-keys the store in the background; remove {PREVIOUS_PSEUDONYM_FILE} once it logs that the migration is done. Keep {RECORDS_FILE}."
            );
            ExitCode::SUCCESS
        }
        Err(KeyError::Exists { path }) if path.ends_with(PREVIOUS_PSEUDONYM_FILE) => {
            eprintln!(
                "keys rotate-pseudonym: {} exists: a migration is still running; remove it once the service logs that the migration is done",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("keys rotate-pseudonym: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn rotate_command(dir: &Path) -> ExitCode {
    match rotate(dir) {
        Ok(path) => {
            println!("wrote {}", path.display());
            println!(
                "new values are sealed under it once the service loads it; keep every older seal-<ID>.key: values sealed under it stay readable only with it"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keys rotate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_with(seals: &[u32]) -> Keys {
        let seals: Vec<(u32, [u8; 32])> = seals.iter().map(|&id| (id, [id as u8; 32])).collect();
        Keys::from_secrets(&[7; 32], &seals).expect("valid secrets")
    }

    #[test]
    fn seal_then_open_round_trips_and_binds_the_record() {
        let keys = keys_with(&[1]);
        let sealed = keys.seal(b"hold:client:s2", b"+447700900123").unwrap();
        assert_eq!(sealed.len(), SEALED_BYTES_MIN + 13);
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(sealed_key_id(&sealed).unwrap(), 1);
        assert_eq!(
            keys.open(b"hold:client:s2", &sealed).unwrap(),
            b"+447700900123"
        );
        assert!(matches!(
            keys.open(b"hold:client:s3", &sealed),
            Err(KeyError::Unauthentic { id: 1 })
        ));
        let empty = keys.seal(b"", b"").unwrap();
        assert_eq!(keys.open(b"", &empty).unwrap(), b"");
    }

    #[test]
    fn nonces_differ_between_seals_of_the_same_value() {
        let keys = keys_with(&[1]);
        let a = keys.seal(b"k", b"v").unwrap();
        let b = keys.seal(b"k", b"v").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_damaged_value_gives_its_own_error() {
        let keys = keys_with(&[1, 2]);
        let sealed = keys.seal(b"k", b"value").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = keys.open(b"k", &bad).expect_err("a flipped bit");
            match i {
                0 => assert!(matches!(err, KeyError::Version { version: 0 }), "{err}"),
                // The key id's low byte: 2 becomes 3, which is not loaded.
                4 => assert!(matches!(err, KeyError::UnknownKeyId { id: 3 }), "{err}"),
                1..=3 => assert!(matches!(err, KeyError::UnknownKeyId { .. }), "{err}"),
                _ => assert!(matches!(err, KeyError::Unauthentic { id: 2 }), "{err}"),
            }
        }
        for len in 0..SEALED_BYTES_MIN {
            assert!(matches!(
                keys.open(b"k", &sealed[..len]),
                Err(KeyError::TooShort { len: l }) if l == len
            ));
        }
        assert!(matches!(
            keys.open(b"k", &sealed[..sealed.len() - 1]),
            Err(KeyError::Unauthentic { .. })
        ));
    }

    #[test]
    fn a_value_sealed_under_a_key_id_another_key_holds_does_not_open() {
        let keys = keys_with(&[1, 2]);
        let mut sealed = keys.seal(b"k", b"value").unwrap();
        sealed[4] = 1;
        assert!(matches!(
            keys.open(b"k", &sealed),
            Err(KeyError::Unauthentic { id: 1 })
        ));
    }

    #[test]
    fn pseudonyms_are_deterministic_and_differ_by_kind_and_key() {
        let keys = keys_with(&[1]);
        let a = keys.pseudonym(IdKind::Msisdn, "447700900123");
        assert_eq!(a, keys.pseudonym(IdKind::Msisdn, "447700900123"));
        assert_eq!(a.to_hex().len(), 64);
        assert!(a.to_hex().bytes().all(|b| b.is_ascii_hexdigit()));
        let mut seen: Vec<Pseudonym> = IdKind::ALL
            .iter()
            .map(|&k| keys.pseudonym(k, "447700900123"))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), IdKind::ALL.len());
        let other = Keys::from_secrets(&[8; 32], &[(1, [1; 32])]).unwrap();
        assert_ne!(a, other.pseudonym(IdKind::Msisdn, "447700900123"));
        assert_ne!(a, keys.pseudonym(IdKind::Msisdn, "447700900124"));
    }

    #[test]
    fn log_pseudonyms_are_stable_and_never_the_stores() {
        let keys = keys_with(&[1]);
        let line = "+447700900123";
        let logged = keys.log_pseudonym(line);
        assert_eq!(logged, keys.log_pseudonym(line));
        assert_ne!(logged, keys.pseudonym(IdKind::Msisdn, line));
        assert_ne!(logged, keys.log_pseudonym("+447700900124"));
    }

    #[test]
    fn pseudonym_is_hmac_under_the_hkdf_derived_key() {
        let master = [7u8; 32];
        let keys = Keys::from_secrets(&master, &[(1, [1; 32])]).unwrap();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&master);
        let info = [b"portcullis/v1/pseudonym/imsi".as_slice()];
        let key: hmac::Key = prk.expand(&info, hmac::HMAC_SHA256).unwrap().into();
        let want = hmac::sign(&key, b"234150999999999");
        assert_eq!(
            keys.pseudonym(IdKind::Imsi, "234150999999999").0,
            want.as_ref()
        );
    }

    #[test]
    fn debug_shows_ids_and_no_key_bytes() {
        let keys = keys_with(&[1, 5]);
        let shown = format!("{keys:?}");
        assert!(shown.contains("sealing_with: 5"), "{shown}");
        assert!(
            !shown.contains("0707") && !shown.contains("[7, 7"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_need_a_sealing_key_with_a_nonzero_id() {
        assert!(Keys::from_secrets(&[0; 32], &[]).is_none());
        assert!(Keys::from_secrets(&[0; 32], &[(0, [0; 32])]).is_none());
        let keys = keys_with(&[3, 1, 2]);
        assert_eq!(keys.seal_key_id(), 3);
        assert_eq!(keys.seal_key_ids(), [1, 2, 3]);
    }

    #[test]
    fn key_files_parse_64_hex_digits_and_one_newline() {
        let good = "00".repeat(31) + "ff";
        assert_eq!(parse_key(good.as_bytes()).unwrap()[31], 0xff);
        assert!(parse_key(format!("{good}\n").as_bytes()).is_some());
        assert!(parse_key(good.to_uppercase().as_bytes()).is_some());
        assert!(parse_key(format!("{good}\n\n").as_bytes()).is_none());
        assert!(parse_key(&good.as_bytes()[..62]).is_none());
        assert!(parse_key(format!("{}zz", &good[..62]).as_bytes()).is_none());
        assert!(parse_key(b"").is_none());
        assert_eq!(hex(&[0x0a, 0xb1]), "0ab1");
    }

    #[test]
    fn seal_file_names_need_a_canonical_id() {
        assert_eq!(seal_id_of("seal-1.key"), Some(Ok(1)));
        assert_eq!(seal_id_of("seal-4294967295.key"), Some(Ok(u32::MAX)));
        for bad in [
            "seal-0.key",
            "seal-01.key",
            "seal-.key",
            "seal-x.key",
            "seal-+1.key",
            "seal-4294967296.key",
        ] {
            assert_eq!(seal_id_of(bad), Some(Err(())), "{bad}");
        }
        assert_eq!(seal_id_of("pseudonym.key"), None);
        assert_eq!(seal_id_of("server.key"), None);
        assert_eq!(seal_id_of("seal-1.key.bak"), None);
    }

    #[test]
    fn errors_name_what_was_wrong_without_key_material() {
        let e = KeyError::Shared {
            path: PathBuf::from("/k/seal-1.key"),
            mode: 0o640,
        };
        assert_eq!(
            e.to_string(),
            "/k/seal-1.key is readable or writable by group or others (mode 0640); a key must be private: run `chmod 600 /k/seal-1.key`"
        );
    }
}
