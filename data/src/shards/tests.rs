//! Format round trips, every corruption, and the window-dealing guarantees of `ShardSet`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::{Error, StreamId, TokenSource};

fn write_shard(dir: &Path, name: &str, vocab: u32, width: TokenWidth, tokens: &[u32]) -> PathBuf {
    let mut w = ShardWriter::create(dir.join(name), vocab, width).unwrap();
    w.extend(tokens).unwrap();
    w.finish().unwrap()
}

/// The error's message, after checking it is a file-level error that names `path`.
fn file_error(err: Error, path: &Path) -> String {
    assert!(
        matches!(err, Error::File { .. } | Error::Io { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    msg
}

fn open_err(path: &Path) -> String {
    file_error(Shard::open(path).unwrap_err(), path)
}

#[test]
fn round_trips_both_widths() {
    let dir = tempfile::tempdir().unwrap();
    let small: Vec<u32> = (0..1000).map(|i| (i * 7919) % 65536).collect();
    let p = write_shard(dir.path(), "a.bin", 65536, TokenWidth::U16, &small);
    let s = Shard::open(&p).unwrap();
    assert_eq!(
        (s.len(), s.vocab(), s.width()),
        (1000, 65536, TokenWidth::U16)
    );
    assert_eq!(s.tokens().collect::<Vec<_>>(), small);
    assert_eq!(s.get(999), Some(small[999]));
    assert_eq!(s.get(1000), None);
    assert_eq!(fs::metadata(&p).unwrap().len(), 32 + 2 * 1000);
    s.validate_tokens().unwrap();

    let big: Vec<u32> = vec![0, 1, 65536, 1 << 24, u32::MAX - 1];
    let p = write_shard(dir.path(), "b.bin", u32::MAX, TokenWidth::U32, &big);
    let s = Shard::open(&p).unwrap();
    assert_eq!(s.tokens().collect::<Vec<_>>(), big);
    let mut out = vec![];
    s.read_into(1, 3, &mut out).unwrap();
    assert_eq!(out, &big[1..4]);
    assert!(s.read_into(3, 3, &mut out).is_err());

    let p = write_shard(dir.path(), "empty.bin", 5, TokenWidth::U16, &[]);
    assert!(Shard::open(&p).unwrap().is_empty());
}

#[test]
fn header_layout_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_shard(dir.path(), "h.bin", 300, TokenWidth::U16, &[1, 299]);
    let bytes = fs::read(&p).unwrap();
    let mut expected = b"TRBTOKS\0".to_vec();
    expected.extend(1u16.to_le_bytes());
    expected.extend(2u16.to_le_bytes());
    expected.extend(300u32.to_le_bytes());
    expected.extend(2u64.to_le_bytes());
    expected.extend([0u8; 8]);
    expected.extend([1, 0, 43, 1]);
    assert_eq!(bytes, expected);
}

#[test]
fn writer_never_leaves_a_partial_shard_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.bin");
    let tmp = dir.path().join("s.bin.tmp");
    let mut w = ShardWriter::create(&path, 10, TokenWidth::U16).unwrap();
    w.extend(&[1, 2, 3]).unwrap();
    assert!(tmp.exists() && !path.exists());
    let err = w.push(10).unwrap_err();
    assert!(err.to_string().contains("token 10 at position 3"), "{err}");
    drop(w);
    assert!(!tmp.exists() && !path.exists());

    let mut w = ShardWriter::create(&path, 10, TokenWidth::U16).unwrap();
    w.push(9).unwrap();
    assert_eq!(w.finish().unwrap(), path);
    assert!(!tmp.exists() && path.exists());

    assert!(ShardWriter::create(&path, 65537, TokenWidth::U16).is_err());
    assert!(ShardWriter::create(&path, 0, TokenWidth::U32).is_err());
}

/// An edit of a shard's bytes.
type Corruption = fn(&mut Vec<u8>);

/// A valid 1000-token u16 shard whose bytes `corrupt` then edits.
fn corrupted(dir: &Path, corrupt: Corruption) -> PathBuf {
    let tokens: Vec<u32> = (0..1000).map(|i| i % 50).collect();
    let p = write_shard(dir, "c.bin", 50, TokenWidth::U16, &tokens);
    let mut bytes = fs::read(&p).unwrap();
    corrupt(&mut bytes);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_corruption_is_a_file_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(Corruption, &str)> = vec![
        (
            |b| b[0] = b'X',
            "not a token shard: magic is \"XRBTOKS\\x00\"",
        ),
        (|b| b[8] = 2, "unsupported format version 2"),
        (|b| b[10] = 3, "token width is 3 bytes but must be 2 or 4"),
        (
            |b| b[12..16].copy_from_slice(&0u32.to_le_bytes()),
            "vocab size is 0",
        ),
        (
            |b| b[12..16].copy_from_slice(&70_000u32.to_le_bytes()),
            "vocab size 70000 does not fit 2-byte tokens",
        ),
        (|b| b[30] = 1, "reserved header bytes"),
        (
            |b| b.truncate(1500),
            "truncated: header says 1000 tokens (2032 bytes) but the file has 1500 bytes",
        ),
        (
            |b| b.extend([0, 0]),
            "trailing bytes: header says 1000 tokens (2032 bytes) but the file has 2034 bytes",
        ),
        (|b| b.truncate(10), "too short for a shard header: 10 bytes"),
        (
            |b| b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()),
            "more than any file can hold",
        ),
    ];
    for (corrupt, expected) in cases {
        let p = corrupted(d, corrupt);
        let msg = open_err(&p);
        assert!(msg.contains(expected), "{msg} lacks {expected}");
    }
    let missing = d.join("missing.bin");
    assert!(matches!(Shard::open(&missing), Err(Error::Io { .. })));
    open_err(&missing);
}

#[test]
fn validate_tokens_finds_a_token_outside_the_vocab() {
    let dir = tempfile::tempdir().unwrap();
    // Token 7 (bytes 32 + 14..) becomes 50 = the vocab size.
    let p = corrupted(dir.path(), |b| {
        b[46..48].copy_from_slice(&50u16.to_le_bytes())
    });
    let s = Shard::open(&p).unwrap();
    let msg = file_error(s.validate_tokens().unwrap_err(), &p);
    assert!(
        msg.contains("token 50 at position 7 is not below the vocab size 50"),
        "{msg}"
    );
    let set = ShardSet::open(dir.path(), "*.bin").unwrap();
    file_error(set.validate_tokens().unwrap_err(), &p);
}

#[test]
fn shard_set_errors_name_the_dir_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg = file_error(ShardSet::open(d, "*.bin").unwrap_err(), d);
    assert!(msg.contains("no shard files match \"*.bin\""), "{msg}");
    file_error(
        ShardSet::open(d.join("nope"), "*.bin").unwrap_err(),
        &d.join("nope"),
    );
    file_error(ShardSet::open(d, "[").unwrap_err(), d);

    write_shard(d, "a.bin", 50, TokenWidth::U16, &[1, 2]);
    let b = write_shard(d, "b.bin", 51, TokenWidth::U16, &[1, 2]);
    let msg = file_error(ShardSet::open(d, "*.bin").unwrap_err(), &b);
    assert!(msg.contains("vocab size 51 differs from 50"), "{msg}");
    // Only matching names are read: a leftover .tmp or other file is ignored.
    fs::write(d.join("a.bin.tmp"), b"junk").unwrap();
    assert_eq!(ShardSet::open(d, "a*.bin").unwrap().shards().len(), 1);
}

/// Shards whose tokens are their global positions, so a row shows exactly where it came from.
fn positional_set(dir: &Path, lens: &[u64]) -> ShardSet {
    let mut next = 0u32;
    for (i, n) in lens.iter().enumerate() {
        let tokens: Vec<u32> = (next..next + *n as u32).collect();
        next += *n as u32;
        write_shard(
            dir,
            &format!("s-{i:03}.bin"),
            u32::MAX,
            TokenWidth::U32,
            &tokens,
        );
    }
    ShardSet::open(dir, "s-*.bin").unwrap()
}

fn id(seed: u64, peer: u32, round: u64, step: u32) -> StreamId {
    StreamId {
        seed,
        peer,
        round,
        step,
    }
}

#[test]
fn batches_are_deterministic_windows_of_consecutive_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let lens = [100u64, 37, 250];
    let set = positional_set(dir.path(), &lens)
        .with_schedule(2, 3)
        .unwrap();
    let a = set.batch(id(5, 1, 2, 1), 4, 9).unwrap();
    assert_eq!((a.sequences, a.len, a.tokens.len()), (4, 9, 40));
    let other_dir = tempfile::tempdir().unwrap();
    let again = positional_set(other_dir.path(), &lens)
        .with_schedule(2, 3)
        .unwrap();
    assert_eq!(a, again.batch(id(5, 1, 2, 1), 4, 9).unwrap());
    assert_ne!(a, set.batch(id(6, 1, 2, 1), 4, 9).unwrap());
    let starts = [0u32, 100, 137];
    for r in 0..4 {
        let row = a.row(r);
        assert!(row.windows(2).all(|p| p[1] == p[0] + 1), "{row:?}");
        // Windows start on a multiple of 10 within their shard, so they never cross one.
        let shard = starts.iter().rposition(|s| *s <= row[0]).unwrap();
        assert_eq!((row[0] - starts[shard]) % 10, 0, "{row:?}");
        assert!(row[9] < starts.get(shard + 1).copied().unwrap_or(387));
    }
}

#[test]
fn held_out_tail_is_never_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let set = positional_set(dir.path(), &[400, 400])
        .with_schedule(2, 2)
        .unwrap()
        .with_held_out_fraction(0.1)
        .unwrap();
    assert_eq!(set.held_out_tokens(), 80);
    let counts = set.windows(7).unwrap();
    assert_eq!(
        counts,
        WindowCount {
            training: 50 + 40,
            held_out: 10
        }
    );
    let mut trained = HashSet::new();
    for round in 0..12 {
        for step in 0..2 {
            for peer in 0..2 {
                let b = set.batch(id(3, peer, round, step), 4, 7).unwrap();
                trained.extend(b.tokens.iter().copied());
            }
        }
    }
    assert!(
        trained.iter().all(|t| *t < 720),
        "a training row reached the held-out tail"
    );
    let mut held = HashSet::new();
    for index in 0..5 {
        let b = set.batch(StreamId::held_out(3, index), 2, 7).unwrap();
        assert!(b.tokens.iter().all(|t| *t >= 720));
        held.extend(b.tokens.iter().copied());
    }
    // Five batches of two rows cover all ten held-out windows.
    assert_eq!(held.len(), 80);
    // Other lengths keep the same boundary.
    let b = set.batch(id(3, 1, 0, 1), 3, 30).unwrap();
    assert!(b.tokens.iter().all(|t| *t < 720));
}

#[test]
fn too_small_corpora_and_off_schedule_ids_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let set = positional_set(dir.path(), &[50]);
    let e = set.batch(id(0, 0, 0, 0), 1, 4).unwrap_err();
    assert!(matches!(e, Error::Schedule(_)), "{e}");
    let set = set.with_schedule(2, 2).unwrap();
    // 49 training tokens: 4 windows of 11.
    let msg = file_error(set.batch(id(0, 0, 0, 0), 5, 10).unwrap_err(), dir.path());
    assert!(
        msg.contains("has 4 training windows of 11 tokens but a batch needs 5"),
        "{msg}"
    );
    assert!(set.batch(StreamId::held_out(0, 0), 1, 10).is_err());
    assert!(matches!(
        set.batch(id(0, 2, 0, 0), 1, 4),
        Err(Error::Schedule(_))
    ));
    assert!(matches!(
        set.batch(id(0, 0, 0, 2), 1, 4),
        Err(Error::Schedule(_))
    ));
    assert!(set.batch(id(0, 1, u64::MAX, 1), usize::MAX, 0).is_err());
    assert!(set.batch(id(0, 0, 0, 0), 1, usize::MAX).is_err());
    assert_eq!(set.batch(id(0, 0, 0, 0), 0, 4).unwrap().tokens.len(), 0);
    assert!(
        ShardSet::open(dir.path(), "*.bin")
            .unwrap()
            .with_schedule(0, 1)
            .is_err()
    );
    assert!(
        ShardSet::open(dir.path(), "*.bin")
            .unwrap()
            .with_held_out_fraction(1.0)
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every row of every (peer, round, step) of the first epoch gets its own training window,
    /// and the first epoch uses each training window exactly once.
    #[test]
    fn one_epoch_deals_disjoint_windows(
        lens in proptest::collection::vec(0u64..120, 1..4),
        peers in 1u32..4,
        steps in 1u32..4,
        sequences in 1usize..4,
        len in 0usize..6,
        seed in any::<u64>(),
        held_out in 0.0f64..0.3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let set = positional_set(dir.path(), &lens)
            .with_schedule(peers, steps).unwrap()
            .with_held_out_fraction(held_out).unwrap();
        let t = set.windows(len).unwrap().training;
        prop_assume!(t >= sequences as u64);
        let b = sequences as u64;
        let mut seen = HashSet::new();
        let mut first_tokens = HashSet::new();
        // Ids in counter order (round, then step, then peer) up to the end of the first epoch.
        let mut c = 0u64;
        'epoch: for round in 0.. {
            for step in 0..steps {
                for peer in 0..peers {
                    if c + b > t {
                        break 'epoch;
                    }
                    let sid = id(seed, peer, round, step);
                    let windows = set.batch_windows(sid, sequences, len).unwrap();
                    let batch = set.batch(sid, sequences, len).unwrap();
                    for (i, w) in windows.iter().enumerate() {
                        prop_assert!(*w < t);
                        prop_assert!(seen.insert(*w), "window {} dealt twice", w);
                        prop_assert!(first_tokens.insert(batch.row(i)[0]));
                    }
                    c += b;
                }
            }
        }
        prop_assert!(t - c < b);
        if t.is_multiple_of(b) {
            prop_assert_eq!(seen.len() as u64, t, "an epoch uses every training window");
        }
        // Later epochs stay within the training windows.
        let late = set.batch_windows(id(seed, 0, 1000, 0), sequences, len).unwrap();
        prop_assert!(late.iter().all(|w| *w < t));
    }
}
