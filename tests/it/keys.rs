//! The keys directory (`portcullis::keys`) through its files: loading and
//! what it refuses, development keys that are never overwritten, rotation
//! that keeps old sealed values readable, and the `keys rotate` and `certs
//! dev` commands through the binary.

use crate::support::scratch_dir;
use portcullis::keys::{self, IdKind, KeyError, Keys};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn dev_dir(test: &str) -> std::path::PathBuf {
    let dir = scratch_dir("keys", test);
    keys::write_dev_keys(&dir).expect("dev keys");
    dir
}

#[test]
fn dev_keys_are_private_loadable_and_never_overwritten() {
    let dir = dev_dir("dev");
    for f in keys::DEV_KEY_FILES {
        let path = dir.join(f);
        assert_eq!(mode_of(&path), 0o600, "{f}");
        let text = std::fs::read_to_string(&path).expect("key file");
        assert_eq!(text.len(), 65, "{f}");
        assert!(text.ends_with('\n'));
        assert!(
            text[..64]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    let before = std::fs::read(dir.join("seal-1.key")).expect("seal-1.key");
    let err = keys::write_dev_keys(&dir).expect_err("dev keys twice");
    assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("pseudonym.key"), "{err}");
    assert_eq!(std::fs::read(dir.join("seal-1.key")).unwrap(), before);

    // Only the seal key left: still refused, and the pseudonym key is not written.
    std::fs::remove_file(dir.join("pseudonym.key")).unwrap();
    let err = keys::write_dev_keys(&dir).expect_err("seal-1.key exists");
    assert!(err.to_string().contains("seal-1.key"), "{err}");
    assert!(!dir.join("pseudonym.key").exists());

    let keys = Keys::load(&dev_dir("dev-load")).expect("load dev keys");
    assert_eq!(keys.seal_key_ids(), [1]);
}

#[test]
fn rotation_keeps_old_values_readable_and_seals_under_the_new_id() {
    let dir = dev_dir("rotate");
    let before = Keys::load(&dir).expect("load");
    let old = before.seal(b"hold:client:s1", b"+447700900123").unwrap();
    let p_before = before.pseudonym(IdKind::Msisdn, "447700900123");

    let path = keys::rotate(&dir).expect("rotate");
    assert_eq!(path, dir.join("seal-2.key"));
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(keys::rotate(&dir).unwrap(), dir.join("seal-3.key"));

    let after = Keys::load(&dir).expect("load after rotation");
    assert_eq!(after.seal_key_ids(), [1, 2, 3]);
    assert_eq!(after.seal_key_id(), 3);
    assert_eq!(
        after.open(b"hold:client:s1", &old).unwrap(),
        b"+447700900123"
    );
    let new = after.seal(b"hold:client:s2", b"+447700900124").unwrap();
    assert_eq!(keys::sealed_key_id(&new).unwrap(), 3);
    assert_eq!(
        after.open(b"hold:client:s2", &new).unwrap(),
        b"+447700900124"
    );
    // The keys before the rotation do not know the new generation.
    assert!(matches!(
        before.open(b"hold:client:s2", &new),
        Err(KeyError::UnknownKeyId { id: 3 })
    ));
    // Rotation changes sealing only: pseudonyms stay the same.
    assert_eq!(after.pseudonym(IdKind::Msisdn, "447700900123"), p_before);

    // A value whose generation's file is gone cannot be opened.
    std::fs::remove_file(dir.join("seal-1.key")).unwrap();
    let without = Keys::load(&dir).expect("load without seal-1");
    assert!(matches!(
        without.open(b"hold:client:s1", &old),
        Err(KeyError::UnknownKeyId { id: 1 })
    ));
}

#[test]
fn damaged_sealed_values_give_typed_errors() {
    let keys = Keys::load(&dev_dir("damaged")).expect("load");
    let sealed = keys.seal(b"record-1", b"8944110000000000008").unwrap();
    assert!(matches!(
        keys.open(b"record-2", &sealed),
        Err(KeyError::Unauthentic { id: 1 })
    ));
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    assert!(matches!(
        keys.open(b"record-1", &flipped),
        Err(KeyError::Unauthentic { id: 1 })
    ));
    assert!(matches!(
        keys.open(b"record-1", &sealed[..10]),
        Err(KeyError::TooShort { len: 10 })
    ));
    let mut unknown = sealed.clone();
    unknown[1..5].copy_from_slice(&9u32.to_be_bytes());
    assert!(matches!(
        keys.open(b"record-1", &unknown),
        Err(KeyError::UnknownKeyId { id: 9 })
    ));
    let mut version = sealed;
    version[0] = 2;
    assert!(matches!(
        keys.open(b"record-1", &version),
        Err(KeyError::Version { version: 2 })
    ));
}

#[test]
fn shared_key_files_are_refused_naming_the_file() {
    for (file, mode) in [
        ("seal-1.key", 0o640),
        ("seal-1.key", 0o604),
        ("pseudonym.key", 0o640),
        ("pseudonym.key", 0o602),
    ] {
        let dir = dev_dir(&format!("shared-{mode:o}-{file}"));
        let path = dir.join(file);
        chmod(&path, mode);
        let err = Keys::load(&dir).expect_err("a shared key");
        assert!(matches!(err, KeyError::Shared { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        chmod(&path, 0o600);
        assert!(Keys::load(&dir).is_ok());
    }
}

#[test]
fn bad_missing_and_misnamed_key_files_are_refused_naming_the_file() {
    let dir = dev_dir("bad");
    let seal = dir.join("seal-1.key");
    let secret = std::fs::read_to_string(&seal).unwrap();
    std::fs::write(&seal, &secret[..40]).unwrap();
    let err = Keys::load(&dir).expect_err("a short key");
    assert!(matches!(err, KeyError::Contents { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("seal-1.key"), "{msg}");
    assert!(!msg.contains(&secret[..40]), "no key material: {msg}");
    assert!(!format!("{err:?}").contains(&secret[..40]));

    std::fs::remove_file(&seal).unwrap();
    let err = Keys::load(&dir).expect_err("no seal key");
    assert!(matches!(err, KeyError::NoSealKey { .. }), "{err}");
    assert!(err.to_string().contains("keys rotate"), "{err}");

    keys::rotate(&dir).expect("rotate into an empty generation list");
    assert!(Keys::load(&dir).is_ok());
    std::fs::write(dir.join("seal-01.key"), "x").unwrap();
    let err = Keys::load(&dir).expect_err("a misnamed seal key");
    assert!(matches!(err, KeyError::SealName { .. }), "{err}");
    assert!(err.to_string().contains("seal-01.key"), "{err}");
    assert!(keys::rotate(&dir).is_err());
    std::fs::remove_file(dir.join("seal-01.key")).unwrap();

    std::fs::remove_file(dir.join("pseudonym.key")).unwrap();
    let err = Keys::load(&dir).expect_err("no pseudonym key");
    assert!(matches!(err, KeyError::Read { .. }), "{err}");
    assert!(err.to_string().contains("pseudonym.key"), "{err}");

    let err = Keys::load(&dir.join("absent")).expect_err("no directory");
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn keys_print_no_key_bytes_and_pseudonyms_depend_on_the_key() {
    let a_dir = dev_dir("debug-a");
    let a = Keys::load(&a_dir).expect("load");
    let b = Keys::load(&dev_dir("debug-b")).expect("load");
    let shown = format!("{a:?}");
    for f in keys::DEV_KEY_FILES {
        let secret = std::fs::read_to_string(a_dir.join(f)).unwrap();
        assert!(!shown.contains(secret.trim()), "{shown}");
        assert!(!shown.contains(&secret[..8]), "{shown}");
    }
    let p = a.pseudonym(IdKind::Imei, "356938035643809");
    assert_eq!(p, a.pseudonym(IdKind::Imei, "356938035643809"));
    assert_ne!(p, b.pseudonym(IdKind::Imei, "356938035643809"));
    assert_ne!(p, a.pseudonym(IdKind::Iccid, "356938035643809"));
}

#[test]
fn keys_rotate_command_prints_the_new_file_and_fails_clearly() {
    let dir = dev_dir("cmd");
    let run = |dir: &Path| {
        Command::new(BIN)
            .args(["keys", "rotate", "--keys"])
            .arg(dir)
            .output()
            .expect("run keys rotate")
    };
    let ok = run(&dir);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("seal-2.key"));
    assert_eq!(mode_of(&dir.join("seal-2.key")), 0o600);
    assert_eq!(Keys::load(&dir).expect("load").seal_key_id(), 2);

    let missing = run(&dir.join("absent"));
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("keys rotate: cannot read"), "{stderr}");
    assert!(stderr.contains("absent"), "{stderr}");
}

#[test]
fn certs_dev_writes_keys_after_the_pki_and_refuses_existing_keys() {
    let out = scratch_dir("keys", "certs-dev").join("tls");
    let dev = Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(&out)
        .output()
        .expect("run certs dev");
    assert!(dev.status.success(), "{dev:?}");
    let stdout = String::from_utf8_lossy(&dev.stdout);
    let wrote: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .collect();
    assert_eq!(
        wrote.len(),
        portcullis::tls::DEV_FILES.len() + 2,
        "{stdout}"
    );
    assert!(
        wrote[wrote.len() - 2].ends_with("pseudonym.key"),
        "{stdout}"
    );
    assert!(wrote[wrote.len() - 1].ends_with("seal-1.key"), "{stdout}");
    assert!(Keys::load(&out).is_ok());

    // Keys already there: refused before any certificate is written.
    let other = scratch_dir("keys", "certs-dev-existing");
    keys::write_dev_keys(&other).expect("dev keys");
    let again = Command::new(BIN)
        .args(["certs", "dev", "--out"])
        .arg(&other)
        .output()
        .expect("run certs dev");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("pseudonym.key"));
    assert!(!other.join("ca.pem").exists());
}
