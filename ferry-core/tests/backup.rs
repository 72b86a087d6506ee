//! The backup envelope, through its public API: round trips, tampering, bad inputs, the
//! step-by-step (WebCrypto) path and known answers that pin the format.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::sync::OnceLock;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use ferry_core::backup::{
    self, BackupError, BackupHeader, BackupMetadata, KeySource, MAX_PBKDF2_ITERATIONS,
    MIN_PBKDF2_ITERATIONS, OpeningKey, Pair, SealingKey,
};
use ferry_core::lossless::LosslessString;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const DEVICE_KEY: [u8; 32] = [0x5A; 32];
const OTHER_DEVICE_KEY: [u8; 32] = [0xA5; 32];
const KEY_ID: &str = "device-1";
const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const SALT: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const PASSPHRASE: &str = "correct horse battery staple";

/// Offsets from the layout table in the module documentation.
const VERSION_AT: usize = 8;
const CREATED_AT: usize = 10;
const CIPHERTEXT_LEN_AT: usize = 42;
const KEY_SOURCE_AT: usize = 50;
const ITERATIONS_AT: usize = 51;
/// The device key id: its `u16` length, then its bytes.
const KEY_ID_AT: usize = 51;

fn metadata() -> BackupMetadata {
    BackupMetadata {
        backup_id: "bk-0001".to_owned(),
        created_at_ms: 1_700_000_000_123,
        origin: "https://app.example.com".to_owned(),
        spec_app: "todo".to_owned(),
        spec_version: "3".to_owned(),
    }
}

fn pair(key: &[u16], value: &[u16]) -> Pair {
    (
        LosslessString::from_utf16(key),
        LosslessString::from_utf16(value),
    )
}

fn utf16(text: &str) -> Vec<u16> {
    text.encode_utf16().collect()
}

/// A small snapshot with the awkward cases: NUL, a lone surrogate, U+FFFF, an empty value, emoji.
fn small_pairs() -> Vec<Pair> {
    vec![
        pair(&utf16("todo:1"), &utf16(r#"{"title":"milk","done":false}"#)),
        pair(&[0x6B, 0xD800, 0x00], &[0xFFFF, 0xDC00, 0x61]),
        pair(&utf16("empty"), &[]),
        pair(&utf16("🌍 clé"), &utf16("héllo 🌍")),
    ]
}

fn device_sealing_key() -> SealingKey<'static> {
    SealingKey::DeviceKey {
        key_id: KEY_ID,
        key: &DEVICE_KEY,
    }
}

fn device_opening_key() -> OpeningKey<'static> {
    OpeningKey::DeviceKey {
        key_id: KEY_ID,
        key: &DEVICE_KEY,
    }
}

fn device_file() -> Vec<u8> {
    backup::seal(&small_pairs(), metadata(), &device_sealing_key(), NONCE).expect("seals")
}

/// Sealed once per test binary: PBKDF2 with 600,000 iterations takes a noticeable moment.
fn passphrase_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let key = SealingKey::Passphrase {
            passphrase: PASSPHRASE,
            salt: SALT,
            iterations: MIN_PBKDF2_ITERATIONS,
        };
        backup::seal(&small_pairs(), metadata(), &key, NONCE).expect("seals")
    })
}

fn units(pairs: &[Pair]) -> Vec<(Vec<u16>, Vec<u16>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_utf16(), v.to_utf16()))
        .collect()
}

fn with_bytes(file: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).expect("ascii"), 16).expect("hex"))
        .collect()
}

// Round trips
mod backup_round_trips {
    use super::*;

    fn code_unit() -> impl Strategy<Value = u16> {
        // Bias towards the units the lossless rule escapes, and towards surrogates (paired or not).
        prop_oneof![
            4 => any::<u16>(),
            1 => Just(0x0000u16),
            1 => Just(0xFFFFu16),
            2 => 0xD800u16..=0xDFFF,
            2 => 0x20u16..0x7F,
        ]
    }

    fn text() -> impl Strategy<Value = Vec<u16>> {
        proptest::collection::vec(code_unit(), 0..24)
    }

    fn snapshot() -> impl Strategy<Value = Vec<(Vec<u16>, Vec<u16>)>> {
        proptest::collection::vec((text(), text()), 0..8)
    }

    fn fail(e: BackupError) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    proptest! {
        #[test]
        fn any_utf16_snapshot_round_trips_with_a_device_key(snap in snapshot(), nonce in any::<[u8; 12]>()) {
            prop_assume!(nonce != [0; 12]);
            let pairs: Vec<Pair> = snap.iter().map(|(k, v)| pair(k, v)).collect();
            let file = backup::seal(&pairs, metadata(), &device_sealing_key(), nonce).map_err(fail)?;
            let opened = backup::open(&file, &device_opening_key()).map_err(fail)?;
            prop_assert_eq!(units(&opened.pairs), snap.clone());
            prop_assert_eq!(opened.header.key_count as usize, snap.len());
            let size: usize = snap.iter().map(|(k, v)| 2 * (k.len() + v.len())).sum();
            prop_assert_eq!(opened.header.byte_size, size as u64);
            prop_assert_eq!(opened.header.metadata, metadata());
        }
    }

    proptest! {
        // Each case derives two keys with 600,000 PBKDF2 iterations: keep the count low.
        #![proptest_config(ProptestConfig::with_cases(3))]
        #[test]
        fn any_utf16_snapshot_round_trips_with_a_passphrase(snap in snapshot(), salt in any::<[u8; 16]>()) {
            prop_assume!(salt != [0; 16]);
            let pairs: Vec<Pair> = snap.iter().map(|(k, v)| pair(k, v)).collect();
            let key = SealingKey::Passphrase { passphrase: "ünïcode pass", salt, iterations: MIN_PBKDF2_ITERATIONS };
            let file = backup::seal(&pairs, metadata(), &key, NONCE).map_err(fail)?;
            let opened = backup::open(&file, &OpeningKey::Passphrase("ünïcode pass")).map_err(fail)?;
            prop_assert_eq!(units(&opened.pairs), snap);
        }
    }

    #[test]
    fn small_snapshot_round_trips_with_a_passphrase() {
        let opened =
            backup::open(passphrase_file(), &OpeningKey::Passphrase(PASSPHRASE)).expect("opens");
        assert_eq!(opened.pairs, small_pairs());
    }

    #[test]
    fn empty_snapshot_round_trips() {
        let file = backup::seal(&[], metadata(), &device_sealing_key(), NONCE).expect("seals");
        let opened = backup::open(&file, &device_opening_key()).expect("opens");
        assert!(opened.pairs.is_empty());
        assert_eq!((opened.header.key_count, opened.header.byte_size), (0, 0));
    }

    #[test]
    fn large_repetitive_snapshot_round_trips_and_compresses() {
        let pairs: Vec<Pair> = (0..2_000)
            .map(|i| {
                let value = format!(r#"{{"id":{i},"title":"Buy item {i}","done":false}}"#);
                pair(&utf16(&format!("todo:{i}")), &utf16(&value))
            })
            .collect();
        let file = backup::seal(&pairs, metadata(), &device_sealing_key(), NONCE).expect("seals");
        let header = backup::read_header(&file).expect("reads");
        assert!(
            (file.len() as u64) < header.byte_size / 4,
            "{} bytes for {} UTF-16 bytes: not compressed?",
            file.len(),
            header.byte_size
        );
        assert_eq!(
            backup::open(&file, &device_opening_key())
                .expect("opens")
                .pairs,
            pairs
        );
    }
}

// The header without a key
mod backup_header {
    use super::*;

    #[test]
    fn header_is_readable_without_the_key() {
        let header = backup::read_header(&device_file()).expect("reads");
        assert_eq!(header.metadata, metadata());
        assert_eq!(header.key_count, 4);
        // todo:1 (6) + JSON (29) + 3 + 3 + 5 + 0 + "🌍 clé" (6) + "héllo 🌍" (8) code units.
        assert_eq!(header.byte_size, 2 * (6 + 29 + 3 + 3 + 5 + 6 + 8));
        assert_eq!(header.byte_size, backup::utf16_byte_size(&small_pairs()));
        assert_eq!(header.nonce, NONCE);
        assert_eq!(
            header.key_source,
            KeySource::DeviceKey {
                key_id: KEY_ID.to_owned()
            }
        );

        let header = backup::read_header(passphrase_file()).expect("reads");
        assert_eq!(
            header.key_source,
            KeySource::Passphrase {
                salt: SALT,
                iterations: MIN_PBKDF2_ITERATIONS
            }
        );
    }

    #[test]
    fn header_encoding_round_trips_and_starts_the_file() {
        let file = device_file();
        let parsed = backup::parse(&file).expect("parses");
        assert_eq!(parsed.header.encode().expect("encodes"), parsed.aad);
        assert_eq!(&file[..8], b"FERRYBAK");
        assert_eq!(&file[VERSION_AT..VERSION_AT + 2], &[1, 0]);
        assert_eq!(parsed.aad.len() + parsed.ciphertext.len(), file.len());
    }
}

// Tampering, truncation, wrong keys
mod backup_tampering {
    use super::*;

    #[test]
    fn every_single_byte_flip_is_refused() {
        let file = device_file();
        for at in 0..file.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut flipped = file.clone();
                flipped[at] ^= mask;
                let result = backup::open(&flipped, &device_opening_key());
                assert!(
                    result.is_err(),
                    "flipping byte {at} with {mask:#04x} was accepted"
                );
            }
        }
    }

    #[test]
    fn every_flip_of_the_ciphertext_or_the_creation_date_is_an_authentication_error() {
        // Outside the structural fields (magic, version, lengths, key source), only AES-GCM can
        // notice a change, and it must.
        let file = device_file();
        let header_len = backup::parse(&file).expect("parses").aad.len();
        for at in header_len..file.len() {
            let mut flipped = file.clone();
            flipped[at] ^= 0x01;
            assert_eq!(
                backup::open(&flipped, &device_opening_key()),
                Err(BackupError::WrongKeyOrModified),
                "byte {at} of the ciphertext"
            );
        }
        for at in CREATED_AT..CREATED_AT + 8 {
            let mut flipped = file.clone();
            flipped[at] ^= 0x01;
            assert_eq!(
                backup::open(&flipped, &device_opening_key()),
                Err(BackupError::WrongKeyOrModified),
                "the creation date (byte {at}) is authenticated"
            );
        }
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let file = device_file();
        for len in 0..file.len() {
            let result = backup::open(&file[..len], &device_opening_key());
            assert!(
                matches!(result, Err(BackupError::Truncated { .. })),
                "truncated to {len} bytes: {result:?}"
            );
        }
    }

    #[test]
    fn appended_bytes_are_refused() {
        let file = device_file();
        for extra in [&[0u8][..], &[0xFF; 16], &file] {
            let mut longer = file.clone();
            longer.extend_from_slice(extra);
            let result = backup::open(&longer, &device_opening_key());
            assert_eq!(
                result,
                Err(BackupError::TrailingBytes {
                    expected: file.len() as u64,
                    extra: extra.len() as u64
                })
            );
        }
    }

    #[test]
    fn wrong_device_key_is_refused() {
        let key = OpeningKey::DeviceKey {
            key_id: KEY_ID,
            key: &OTHER_DEVICE_KEY,
        };
        assert_eq!(
            backup::open(&device_file(), &key),
            Err(BackupError::WrongKeyOrModified)
        );
    }

    #[test]
    fn device_key_with_another_id_is_refused() {
        let key = OpeningKey::DeviceKey {
            key_id: "device-2",
            key: &DEVICE_KEY,
        };
        assert!(matches!(
            backup::open(&device_file(), &key),
            Err(BackupError::WrongDeviceKey { .. })
        ));
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        assert_eq!(
            backup::open(
                passphrase_file(),
                &OpeningKey::Passphrase("Correct horse battery staple")
            ),
            Err(BackupError::WrongKeyOrModified)
        );
    }

    #[test]
    fn key_of_the_wrong_kind_is_refused() {
        assert!(matches!(
            backup::open(passphrase_file(), &device_opening_key()),
            Err(BackupError::WrongKeyKind {
                sealed_with: "passphrase",
                given: "device key"
            })
        ));
        assert!(matches!(
            backup::open(&device_file(), &OpeningKey::Passphrase(PASSPHRASE)),
            Err(BackupError::WrongKeyKind {
                sealed_with: "device key",
                given: "passphrase"
            })
        ));
    }

    #[test]
    fn iterations_below_the_minimum_are_refused_everywhere() {
        let below = MIN_PBKDF2_ITERATIONS - 1;
        assert_eq!(
            backup::derive_passphrase_key(PASSPHRASE, &SALT, below),
            Err(BackupError::TooFewIterations { iterations: below })
        );
        let key = SealingKey::Passphrase {
            passphrase: PASSPHRASE,
            salt: SALT,
            iterations: below,
        };
        assert_eq!(
            backup::seal(&small_pairs(), metadata(), &key, NONCE),
            Err(BackupError::TooFewIterations { iterations: below })
        );
        let weakened = with_bytes(passphrase_file(), ITERATIONS_AT, &below.to_le_bytes());
        assert_eq!(
            backup::open(&weakened, &OpeningKey::Passphrase(PASSPHRASE)),
            Err(BackupError::TooFewIterations { iterations: below })
        );
        assert_eq!(
            backup::read_header(&weakened),
            Err(BackupError::TooFewIterations { iterations: below })
        );
    }
}

// Tables of bad inputs
mod backup_bad_inputs {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_the_right_error() {
        let file = device_file();
        let pass = passphrase_file();
        let declared = backup::parse(&file).expect("parses").header.ciphertext_len;
        let header_len = backup::parse(&file).expect("parses").aad.len();
        let mut twice = file.clone();
        twice.extend_from_slice(&file);
        let is_truncated = |e: &BackupError| matches!(e, BackupError::Truncated { .. });
        let is_trailing = |e: &BackupError| matches!(e, BackupError::TrailingBytes { .. });
        let is_malformed = |e: &BackupError| matches!(e, BackupError::MalformedHeader { .. });
        let is_not_backup = |e: &BackupError| matches!(e, BackupError::NotABackup);
        let is_auth = |e: &BackupError| matches!(e, BackupError::WrongKeyOrModified);
        type Check<'a> = &'a dyn Fn(&BackupError) -> bool;
        #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Check<'_>)> = vec![
        ("an empty file is a backup cut at byte 0", vec![], &is_truncated),
        ("a prefix of the magic is a backup cut short", b"FERRY".to_vec(), &is_truncated),
        ("a zip archive is not a backup", b"PK\x03\x04\x14\x00\x00\x00".to_vec(), &is_not_backup),
        ("a JSON export is not a backup", br#"{"todo:1":"milk"}"#.to_vec(), &is_not_backup),
        ("the magic is case-sensitive", with_bytes(&file, 0, b"ferrybak"), &is_not_backup),
        ("format version 2 is from the future", with_bytes(&file, VERSION_AT, &[2, 0]),
            &|e| matches!(e, BackupError::UnsupportedVersion { found: 2 })),
        ("format version 0 never existed", with_bytes(&file, VERSION_AT, &[0, 0]),
            &|e| matches!(e, BackupError::UnsupportedVersion { found: 0 })),
        ("version 256 is not version 1 read big-endian", with_bytes(&file, VERSION_AT, &[0, 1]),
            &|e| matches!(e, BackupError::UnsupportedVersion { found: 256 })),
        ("key source 3 does not exist", with_bytes(&file, KEY_SOURCE_AT, &[3]), &is_malformed),
        ("key source 0 does not exist", with_bytes(&file, KEY_SOURCE_AT, &[0]), &is_malformed),
        ("a header string must be UTF-8", with_bytes(&file, KEY_ID_AT + 2, &[0xFF]), &is_malformed),
        ("a ciphertext too short to hold a tag", with_bytes(&file, CIPHERTEXT_LEN_AT, &0u64.to_le_bytes()), &is_malformed),
        ("a ciphertext length that overflows the file length", with_bytes(&file, CIPHERTEXT_LEN_AT, &u64::MAX.to_le_bytes()), &is_malformed),
        ("a header declaring one byte more than there is", with_bytes(&file, CIPHERTEXT_LEN_AT, &(declared + 1).to_le_bytes()), &is_truncated),
        ("a header declaring one byte less than there is", with_bytes(&file, CIPHERTEXT_LEN_AT, &(declared - 1).to_le_bytes()), &is_trailing),
        ("a key id length running past the end of the file", with_bytes(&file, KEY_ID_AT, &u16::MAX.to_le_bytes()), &is_truncated),
        ("the header alone, without its ciphertext", file[..header_len].to_vec(), &is_truncated),
        ("two backups glued together", twice, &is_trailing),
        ("another key id of the same length is a different key", with_bytes(&file, KEY_ID_AT + 2, b"device-2"),
            &|e| matches!(e, BackupError::WrongDeviceKey { .. })),
        ("a changed creation date is caught by the seal", with_bytes(&file, CREATED_AT, &0u64.to_le_bytes()), &is_auth),
        ("a changed last byte of the tag", { let mut f = file.clone(); let last = f.len() - 1; f[last] ^= 1; f }, &is_auth),
        ("a swapped nonce", with_bytes(&file, 30, &[9; 12]), &is_auth),
        ("0 PBKDF2 iterations", with_bytes(pass, ITERATIONS_AT, &0u32.to_le_bytes()),
            &|e| matches!(e, BackupError::TooFewIterations { iterations: 0 })),
        ("u32::MAX PBKDF2 iterations would stall the opener", with_bytes(pass, ITERATIONS_AT, &u32::MAX.to_le_bytes()),
            &|e| matches!(e, BackupError::TooManyIterations { .. })),
    ];
        for (reason, input, expected) in cases {
            let key = if input.get(KEY_SOURCE_AT) == Some(&1) {
                OpeningKey::Passphrase(PASSPHRASE)
            } else {
                device_opening_key()
            };
            match backup::open(&input, &key) {
                Ok(_) => panic!("{reason}: accepted"),
                Err(e) => assert!(expected(&e), "{reason}: wrong error {e:?}"),
            }
        }
    }

    #[test]
    fn bad_sealing_inputs_are_refused() {
        let long = "x".repeat(backup::MAX_FIELD_LEN + 1);
        let zero_key = [0u8; 32];
        let passphrase = |passphrase, salt, iterations| SealingKey::Passphrase {
            passphrase,
            salt,
            iterations,
        };
        #[rustfmt::skip]
    let cases: Vec<(&str, SealingKey<'_>, BackupMetadata, [u8; 12], BackupError)> = vec![
        ("an all-zero nonce was never filled", device_sealing_key(), metadata(), [0; 12],
            BackupError::NotRandom { what: "nonce" }),
        ("an all-zero salt was never filled", passphrase(PASSPHRASE, [0; 16], MIN_PBKDF2_ITERATIONS), metadata(), NONCE,
            BackupError::NotRandom { what: "salt" }),
        ("an all-zero device key was never filled", SealingKey::DeviceKey { key_id: KEY_ID, key: &zero_key }, metadata(), NONCE,
            BackupError::NotRandom { what: "device key" }),
        ("an empty passphrase protects nothing", passphrase("", SALT, MIN_PBKDF2_ITERATIONS), metadata(), NONCE,
            BackupError::EmptyPassphrase),
        ("one iteration fewer than the minimum", passphrase(PASSPHRASE, SALT, MIN_PBKDF2_ITERATIONS - 1), metadata(), NONCE,
            BackupError::TooFewIterations { iterations: MIN_PBKDF2_ITERATIONS - 1 }),
        ("more iterations than an opener will spend", passphrase(PASSPHRASE, SALT, MAX_PBKDF2_ITERATIONS + 1), metadata(), NONCE,
            BackupError::TooManyIterations { iterations: MAX_PBKDF2_ITERATIONS + 1 }),
        ("an origin longer than a u16 length", device_sealing_key(), BackupMetadata { origin: long.clone(), ..metadata() }, NONCE,
            BackupError::FieldTooLong { field: "origin", len: long.len() }),
        ("a backup id longer than a u16 length", device_sealing_key(), BackupMetadata { backup_id: long.clone(), ..metadata() }, NONCE,
            BackupError::FieldTooLong { field: "backup id", len: long.len() }),
        ("a key id longer than a u16 length", SealingKey::DeviceKey { key_id: &long, key: &DEVICE_KEY }, metadata(), NONCE,
            BackupError::FieldTooLong { field: "key id", len: long.len() }),
    ];
        for (reason, key, meta, nonce, expected) in cases {
            assert_eq!(
                backup::seal(&small_pairs(), meta, &key, nonce),
                Err(expected),
                "{reason}"
            );
        }
    }

    #[test]
    fn error_messages_are_distinct_and_say_what_to_do() {
        let errors = [
            BackupError::NotABackup,
            BackupError::UnsupportedVersion { found: 2 },
            BackupError::Truncated { len: 1, needed: 2 },
            BackupError::TrailingBytes {
                expected: 1,
                extra: 1,
            },
            BackupError::MalformedHeader { reason: "x".into() },
            BackupError::TooFewIterations { iterations: 1 },
            BackupError::TooManyIterations { iterations: 1 },
            BackupError::EmptyPassphrase,
            BackupError::NotRandom { what: "nonce" },
            BackupError::FieldTooLong {
                field: "origin",
                len: 1,
            },
            BackupError::SnapshotTooLarge { len: 1 },
            BackupError::WrongKeyKind {
                sealed_with: "passphrase",
                given: "device key",
            },
            BackupError::WrongDeviceKey {
                sealed_with: "a".into(),
                given: "b".into(),
            },
            BackupError::WrongKeyOrModified,
            BackupError::ChecksumMismatch,
            BackupError::OversizedContents { limit: 1 },
            BackupError::CorruptContents { reason: "x".into() },
            BackupError::CiphertextLengthMismatch {
                declared: 1,
                actual: 2,
            },
        ];
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for (i, message) in messages.iter().enumerate() {
            assert!(
                !messages[..i].contains(message),
                "two errors read the same: {message}"
            );
            assert!(
                message.contains(':'),
                "says what happened, then what to do: {message}"
            );
        }
        assert!(messages[13].starts_with("wrong passphrase"));
    }
}

// The step-by-step path a WebCrypto caller takes
mod backup_steps {
    use super::*;

    fn encrypt(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        Aes256Gcm::new(key.into())
            .encrypt(
                nonce.into(),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("encrypts")
    }

    #[test]
    fn steps_compose_to_seal_and_open() {
        let source = KeySource::DeviceKey {
            key_id: KEY_ID.to_owned(),
        };
        let prepared =
            backup::prepare(&small_pairs(), metadata(), source, NONCE).expect("prepares");
        let ciphertext = encrypt(&DEVICE_KEY, &NONCE, &prepared.aad, &prepared.plaintext);
        let file = backup::assemble(&prepared.aad, &ciphertext).expect("assembles");
        assert_eq!(
            file,
            device_file(),
            "the steps give exactly what seal gives"
        );

        let parsed = backup::parse(&file).expect("parses");
        assert_eq!(parsed.header, prepared.header);
        let key = backup::opening_key_bytes(&parsed.header, &device_opening_key()).expect("key");
        let plaintext = Aes256Gcm::new((&key).into())
            .decrypt(
                (&parsed.header.nonce).into(),
                Payload {
                    msg: parsed.ciphertext,
                    aad: parsed.aad,
                },
            )
            .expect("decrypts");
        assert_eq!(plaintext, prepared.plaintext);
        let pairs = backup::decode_plaintext(&parsed.header, &plaintext).expect("decodes");
        assert_eq!(pairs, small_pairs());
    }

    #[test]
    fn passphrase_steps_match_seal() {
        let header = backup::read_header(passphrase_file()).expect("reads");
        let KeySource::Passphrase { salt, iterations } = &header.key_source else {
            panic!("sealed with a passphrase");
        };
        let key = backup::derive_passphrase_key(PASSPHRASE, salt, *iterations).expect("derives");
        let prepared =
            backup::prepare(&small_pairs(), metadata(), header.key_source.clone(), NONCE)
                .expect("prepares");
        let ciphertext = encrypt(&key, &NONCE, &prepared.aad, &prepared.plaintext);
        assert_eq!(
            backup::assemble(&prepared.aad, &ciphertext).expect("assembles"),
            passphrase_file()
        );
    }

    #[test]
    fn assemble_refuses_a_ciphertext_of_the_wrong_length() {
        let source = KeySource::DeviceKey {
            key_id: KEY_ID.to_owned(),
        };
        let prepared =
            backup::prepare(&small_pairs(), metadata(), source, NONCE).expect("prepares");
        // Without the tag, as a WebCrypto wrapper that strips it would give.
        let untagged = &prepared.plaintext;
        assert!(matches!(
            backup::assemble(&prepared.aad, untagged),
            Err(BackupError::CiphertextLengthMismatch { .. })
        ));
        let mut longer_aad = prepared.aad.clone();
        longer_aad.push(0);
        let ciphertext = encrypt(&DEVICE_KEY, &NONCE, &prepared.aad, &prepared.plaintext);
        assert!(matches!(
            backup::assemble(&longer_aad, &ciphertext),
            Err(BackupError::MalformedHeader { .. })
        ));
    }

    /// A payload built by hand: snapshot length, SHA-256 of `checksummed`, DEFLATE of `compressed`.
    fn payload(declared_len: u64, checksummed: &[u8], compressed: &[u8]) -> Vec<u8> {
        let mut out = declared_len.to_le_bytes().to_vec();
        out.extend_from_slice(&Sha256::digest(checksummed));
        out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(compressed, 1));
        out
    }

    #[test]
    fn bad_plaintexts_are_refused() {
        let source = KeySource::DeviceKey {
            key_id: KEY_ID.to_owned(),
        };
        let prepared =
            backup::prepare(&small_pairs(), metadata(), source, NONCE).expect("prepares");
        let header = &prepared.header;
        let good = &prepared.plaintext;
        let snapshot_len = u64::from_le_bytes(good[..8].try_into().expect("8 bytes"));
        let bomb = vec![0u8; 4 << 20];
        let mut one_more_pair = header.clone();
        one_more_pair.key_count += 1;
        let mut one_less_pair = header.clone();
        one_less_pair.key_count -= 1;
        // One pair less, with the byte size of the pairs that remain: only the bytes left after the
        // last counted pair show the mismatch.
        let mut one_less_pair_same_size = one_less_pair.clone();
        one_less_pair_same_size.byte_size -= backup::utf16_byte_size(&small_pairs()[3..]);
        let mut bigger = header.clone();
        bigger.byte_size += 2;
        let mut flipped_checksum = good.clone();
        flipped_checksum[8] ^= 1;
        let mut trailing = good.clone();
        trailing.push(0);
        let is_corrupt = |e: &BackupError| matches!(e, BackupError::CorruptContents { .. });
        let is_oversized = |e: &BackupError| matches!(e, BackupError::OversizedContents { .. });
        type Check<'a> = &'a dyn Fn(&BackupError) -> bool;
        #[rustfmt::skip]
    let cases: Vec<(&str, &BackupHeader, Vec<u8>, Check<'_>)> = vec![
        ("an empty plaintext has no length or checksum", header, vec![], &is_corrupt),
        ("a plaintext cut inside the checksum", header, good[..20].to_vec(), &is_corrupt),
        ("a plaintext cut inside the DEFLATE stream", header, good[..good.len() - 1].to_vec(), &is_corrupt),
        ("bytes after the DEFLATE stream", header, trailing, &is_corrupt),
        ("a checksum that does not match", header, flipped_checksum, &|e| matches!(e, BackupError::ChecksumMismatch)),
        ("a zip bomb declaring its real size, far over the header's bound", header, payload(bomb.len() as u64, &bomb, &bomb), &is_oversized),
        ("a zip bomb declaring a small size but inflating further", header, payload(snapshot_len, &bomb, &bomb), &is_oversized),
        ("the header counts one pair more than the snapshot holds", &one_more_pair, good.clone(), &is_corrupt),
        ("the header counts one pair less than the snapshot holds", &one_less_pair, good.clone(), &is_corrupt),
        ("the header counts one pair less, and its byte size agrees", &one_less_pair_same_size, good.clone(), &is_corrupt),
        ("the header's byte size disagrees with the pairs", &bigger, good.clone(), &is_corrupt),
        ("a snapshot whose text is not UTF-8", header, payload(10, &[2, 0, 0, 0, 0xC3, 0x28, 0, 0, 0, 0], &[2, 0, 0, 0, 0xC3, 0x28, 0, 0, 0, 0]), &is_corrupt),
        ("a snapshot with a raw NUL, which the escaped form never holds", header, payload(10, &[2, 0, 0, 0, b'a', 0, 0, 0, 0, 0], &[2, 0, 0, 0, b'a', 0, 0, 0, 0, 0]), &is_corrupt),
    ];
        for (reason, header, plaintext, expected) in cases {
            match backup::decode_plaintext(header, &plaintext) {
                Ok(_) => panic!("{reason}: accepted"),
                Err(e) => assert!(expected(&e), "{reason}: wrong error {e:?}"),
            }
        }
    }

    #[test]
    fn a_sealed_zip_bomb_is_refused_when_opening() {
        // A hostile tool holding the key seals a payload that inflates to 64 MiB under a header that
        // declares one tiny pair: opening must refuse it before inflating more than the header allows.
        let bomb = vec![b'a'; 64 << 20];
        let plaintext = payload(bomb.len() as u64, &bomb, &bomb);
        let header = BackupHeader {
            metadata: metadata(),
            key_count: 1,
            byte_size: 4,
            nonce: NONCE,
            ciphertext_len: (plaintext.len() + backup::TAG_LEN) as u64,
            key_source: KeySource::DeviceKey {
                key_id: KEY_ID.to_owned(),
            },
        };
        let aad = header.encode().expect("encodes");
        let file = backup::assemble(&aad, &encrypt(&DEVICE_KEY, &NONCE, &aad, &plaintext))
            .expect("assembles");
        assert_eq!(
            backup::open(&file, &device_opening_key()),
            Err(BackupError::OversizedContents { limit: 8 + 2 * 7 })
        );
    }
}

// Known answers: a change to any of these is a format change (bump FORMAT_VERSION).
mod backup_known_answers {
    use super::*;

    /// PBKDF2-HMAC-SHA256("correct horse battery staple", 01..10, 600000), computed independently
    /// with Python's `hashlib.pbkdf2_hmac`.
    const PASSPHRASE_KEY: &str = "0008e69b89ffac1aa7bb1f44289ba65afaa711dd450f0aab6c322e4cd57bb216";

    /// SHA-256 of `device_file()`. Pins the writer: a change here means the bytes written changed
    /// (format, field order, or the DEFLATE output of a new miniz_oxide).
    const DEVICE_FILE_SHA256: &str =
        "1fec3bedfb344b815eb9bbbc51e45ae79d6ec439c6e6f9be3fe9cd4bc03dd9b6";

    /// A version-1 backup of `small_pairs()` sealed with `DEVICE_KEY`, as written when the format
    /// was fixed. Pins the reader: it must open forever.
    const DEVICE_FILE_V1: &str = "\
    464552525942414b01007b68e5cf8b0100000400000078000000000000000102\
    030405060708090a0b0cac000000000000000208006465766963652d31070062\
    6b2d30303031170068747470733a2f2f6170702e6578616d706c652e636f6d04\
    00746f646f010033a8e3816312b272a4ade0a26d40cf3200d9cb537f3dbc2a2e\
    b6039aa9d0e5edd45577b24addecf7ca3dcf5c88f864832b346bf2455b0f5571\
    948dd74539835f0af2eb71b43171106d62336f173c620c85ad0be3bf5e168094\
    0f9af38a34e792206e42f1ea26c4012b212eb7653fcfd67b8653695073a85740\
    743d89505105aaf7abfdf4cad2a8db85286670e443a056037d308a14dbe31a3f\
    b82bb57273544edc166d0eef5f4fee3d89119e67\
";

    #[test]
    fn passphrase_key_matches_an_independent_pbkdf2() {
        let key = backup::derive_passphrase_key(PASSPHRASE, &SALT, MIN_PBKDF2_ITERATIONS)
            .expect("derives");
        assert_eq!(hex(&key), PASSPHRASE_KEY);
    }

    #[test]
    fn sealed_file_is_pinned() {
        let file = device_file();
        assert_eq!(
            hex(&Sha256::digest(&file)),
            DEVICE_FILE_SHA256,
            "file: {}",
            hex(&file)
        );
    }

    #[test]
    fn version_1_file_still_opens() {
        let opened = backup::open(&unhex(DEVICE_FILE_V1), &device_opening_key()).expect("opens");
        assert_eq!(opened.pairs, small_pairs());
        assert_eq!(opened.header.metadata, metadata());
    }
}
