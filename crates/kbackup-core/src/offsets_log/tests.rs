//! Group-offsets log: round trips, torn tails, damage in both versions, the append lock.

use super::*;
use crate::format::frame;
use crate::perms::OWNER_ONLY;

fn entry(group: &str, offset: i64) -> GroupOffsetEntry {
    GroupOffsetEntry {
        capture_time_ms: 1_700_000_000_000 + offset,
        group: group.to_string(),
        committed_offset: offset,
        metadata: format!("meta-{offset}"),
    }
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A version 1 file as kbackup 0.1 wrote it (8-byte header, frames without length CRC).
fn v1_image(entries: &[GroupOffsetEntry]) -> Vec<u8> {
    let mut out = b"KBGO\0\x01\0\0".to_vec();
    for e in entries {
        let framed = encode_frame(e, Path::new("x")).unwrap();
        let body = &framed[frame::PREFIX_LEN..];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// Positions of the frames of a current-version log.
fn frame_positions(data: &[u8]) -> Vec<usize> {
    let mut out = vec![];
    let mut pos = 12;
    while let frame::Check::Complete { next, .. } =
        frame::check(data, pos, BODY_FIXED as u32, MAX_BODY_LEN as u32)
    {
        out.push(pos);
        pos = next;
    }
    out
}

fn corrupt_at(r: Result<Vec<GroupOffsetEntry>>) -> u64 {
    match r {
        Err(Error::Corrupt { position, .. }) => position,
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn round_trips_and_keeps_append_order() {
    let d = dir();
    let p = d.path().join("sub").join("group-offsets.log");
    append(&p, &[entry("a", 1), entry("b", 2)], OWNER_ONLY).unwrap();
    append(&p, &[entry("a", 5)], OWNER_ONLY).unwrap();
    assert_eq!(
        read_all(&p).unwrap(),
        vec![entry("a", 1), entry("b", 2), entry("a", 5)]
    );
    let latest = latest_per_group(&p).unwrap();
    assert_eq!(latest["a"].committed_offset, 5);
    assert_eq!(latest["b"].committed_offset, 2);
    let data = std::fs::read(&p).unwrap();
    assert_eq!(&data[..6], b"KBGO\0\x02");
    assert_eq!(data, encode(&p, &read_all(&p).unwrap()).unwrap());
}

#[test]
fn missing_file_reads_as_empty() {
    let d = dir();
    assert!(read_all(&d.path().join("nope")).unwrap().is_empty());
}

#[test]
fn odd_group_ids_are_data_not_paths() {
    let d = dir();
    let p = d.path().join("log");
    let odd = [
        "with space",
        "../../etc/passwd",
        "a/b\\c",
        "ünïcødé ✓ 組",
        "",
        "nul\0byte",
        "\n",
    ];
    let entries: Vec<_> = odd
        .iter()
        .enumerate()
        .map(|(i, g)| entry(g, i as i64))
        .collect();
    append(&p, &entries, OWNER_ONLY).unwrap();
    assert_eq!(read_all(&p).unwrap(), entries);
    // Nothing but the log and its lock file was created.
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![LOCK_FILE.to_string(), "log".to_string()]);
}

#[test]
fn torn_tail_is_ignored_on_read_and_cut_on_append() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
    let full = std::fs::read(&p).unwrap();
    let last = *frame_positions(&full).last().unwrap();
    for cut in 1..full.len() - last {
        // Every partial last frame (prefix or body) is a torn tail.
        std::fs::write(&p, &full[..full.len() - cut]).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1)], "cut {cut}");
        let s = check(&p).unwrap().unwrap();
        assert_eq!(s.torn.unwrap().0, last as u64);
    }
    append(&p, &[entry("g", 3)], OWNER_ONLY).unwrap();
    assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1), entry("g", 3)]);
}

#[test]
fn zero_fill_after_the_last_entry_is_a_torn_tail() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
    let mut data = std::fs::read(&p).unwrap();
    let end = data.len() as u64;
    data.extend_from_slice(&[0; 300]);
    std::fs::write(&p, &data).unwrap();
    assert_eq!(check(&p).unwrap().unwrap().torn.unwrap().0, end);
    append(&p, &[entry("g", 2)], OWNER_ONLY).unwrap();
    assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1), entry("g", 2)]);
}

/// Defect 5 for the offsets log: a complete last entry with a damaged body was a torn tail.
#[test]
fn bit_flip_in_the_last_entry_is_corruption_not_a_torn_tail() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
    let mut data = std::fs::read(&p).unwrap();
    let last = *frame_positions(&data).last().unwrap();
    let n = data.len();
    data[n - 3] ^= 0x01;
    std::fs::write(&p, &data).unwrap();
    assert_eq!(corrupt_at(read_all(&p)), last as u64);
    assert!(matches!(
        append(&p, &[entry("g", 3)], OWNER_ONLY),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        std::fs::read(&p).unwrap(),
        data,
        "nothing cut, nothing added"
    );
}

#[test]
fn torn_header_of_new_file_reads_empty_and_is_rewritten() {
    let d = dir();
    let p = d.path().join("log");
    std::fs::write(&p, b"KB").unwrap();
    assert!(read_all(&p).unwrap().is_empty());
    append(&p, &[entry("g", 9)], OWNER_ONLY).unwrap();
    assert_eq!(read_all(&p).unwrap(), vec![entry("g", 9)]);
}

#[test]
fn bit_flip_in_the_middle_is_corruption_with_position() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
    let mut data = std::fs::read(&p).unwrap();
    data[12 + frame::PREFIX_LEN + 3] ^= 0x10; // inside the first body
    std::fs::write(&p, &data).unwrap();
    let err = read_all(&p).unwrap_err();
    match &err {
        Error::Corrupt {
            path,
            position,
            detail,
        } => {
            assert_eq!(path, &p);
            assert_eq!(*position, 12);
            assert!(detail.contains("CRC"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Appending to a damaged log refuses instead of burying the damage.
    assert!(matches!(
        append(&p, &[entry("g", 3)], OWNER_ONLY),
        Err(Error::Corrupt { .. })
    ));
}

/// Defect 8 (b): a damaged length of a middle entry made every later entry a "torn tail"
/// that the next append cut off. Version 2 detects it, at every bit of the length field.
#[test]
fn defect8_damaged_length_is_detected_and_never_truncates_later_entries() {
    let d = dir();
    let p = d.path().join("log");
    append(
        &p,
        &[entry("a", 1), entry("b", 2), entry("c", 3)],
        OWNER_ONLY,
    )
    .unwrap();
    let good = std::fs::read(&p).unwrap();
    let second = frame_positions(&good)[1];
    for at in second..second + 8 {
        for bit in 0..8 {
            let mut data = good.clone();
            data[at] ^= 1 << bit;
            std::fs::write(&p, &data).unwrap();
            assert_eq!(
                corrupt_at(read_all(&p)),
                second as u64,
                "byte {at} bit {bit}"
            );
            assert!(append(&p, &[entry("d", 4)], OWNER_ONLY).is_err());
            assert_eq!(std::fs::read(&p).unwrap(), data, "byte {at} bit {bit}");
        }
    }
}

/// Defect 8 (b) in files written before version 2: a length that runs past the end of the
/// file while valid entries follow is damage, not a torn tail, so nothing is cut.
#[test]
fn defect8_damaged_length_in_a_version_1_file_is_detected() {
    let d = dir();
    let p = d.path().join("log");
    let entries = [entry("a", 1), entry("b", 2), entry("c", 3)];
    let good = v1_image(&entries);
    std::fs::write(&p, &good).unwrap();
    assert_eq!(read_all(&p).unwrap(), entries);
    let second = 8 + (good.len() - 8) / 3;
    // The length grows by 256 (past the end of the file, below the 4 MiB limit), or is
    // impossible.
    for (at, mask) in [(second + 2, 0x01), (second + 3, 0x80), (second, 0x40)] {
        let mut data = good.clone();
        data[at] ^= mask;
        std::fs::write(&p, &data).unwrap();
        assert_eq!(corrupt_at(read_all(&p)), second as u64, "byte {at}");
        assert!(append(&p, &[entry("d", 4)], OWNER_ONLY).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }
    // A really torn last append of a version 1 file is still cut, and the file becomes v2.
    std::fs::write(&p, &good[..good.len() - 5]).unwrap();
    assert_eq!(read_all(&p).unwrap(), entries[..2]);
    assert_eq!(append(&p, &[entry("d", 4)], OWNER_ONLY).unwrap(), 1);
    let after = std::fs::read(&p).unwrap();
    assert_eq!(&after[4..6], &[0, 2]);
    assert_eq!(
        read_all(&p).unwrap(),
        vec![entries[0].clone(), entries[1].clone(), entry("d", 4)]
    );
}

#[test]
fn first_append_to_a_version_1_file_rewrites_it_as_version_2() {
    let d = dir();
    let p = d.path().join("log");
    let old = [entry("a", 1), entry("b", 2)];
    std::fs::write(&p, v1_image(&old)).unwrap();
    assert_eq!(append(&p, &[entry("a", 7)], OWNER_ONLY).unwrap(), 1);
    let want = [old[0].clone(), old[1].clone(), entry("a", 7)];
    assert_eq!(std::fs::read(&p).unwrap(), encode(&p, &want).unwrap());
    assert_eq!(check(&p).unwrap().unwrap().version, Some(2));
}

#[test]
fn header_damage_and_unknown_versions_are_corruption() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
    let good = std::fs::read(&p).unwrap();
    for at in 0..12 {
        for bit in 0..8 {
            let mut data = good.clone();
            data[at] ^= 1 << bit;
            std::fs::write(&p, &data).unwrap();
            let pos = corrupt_at(read_all(&p));
            assert!(pos == 0 || pos == 4, "byte {at} bit {bit}: {pos}");
        }
    }
    std::fs::write(&p, b"NOPE\0\x01\0\0").unwrap();
    assert_eq!(corrupt_at(read_all(&p)), 0);
    std::fs::write(&p, b"KBGO\0\x09\0\0\0\0\0\0").unwrap();
    let m = read_all(&p).unwrap_err().to_string();
    assert!(
        m.contains("version 9") && m.contains("newer kbackup"),
        "{m}"
    );
}

/// Defect 8 (a): appends were not locked; two writers (two capture loops, an old owner's
/// capture after a rebalance) could interleave or cut each other's frames.
#[test]
fn defect8_concurrent_appenders_never_lose_or_tear_an_entry() {
    let d = dir();
    let p = d.path().join("log");
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let g = format!("group-{w}");
                    append(&p, &[entry(&g, i)], OWNER_ONLY).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let all = read_all(&p).unwrap();
    assert_eq!(all.len(), 200);
    for w in 0..4 {
        let mine: Vec<i64> = all
            .iter()
            .filter(|e| e.group == format!("group-{w}"))
            .map(|e| e.committed_offset)
            .collect();
        assert_eq!(mine, (0..50).collect::<Vec<_>>());
    }
    assert!(check(&p).unwrap().unwrap().torn.is_none());
}

#[test]
fn a_second_writer_waits_for_the_lock() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
    let held = lock(&p, OWNER_ONLY).unwrap();
    let p2 = p.clone();
    let started = std::time::Instant::now();
    let t = std::thread::spawn(move || append(&p2, &[entry("g", 2)], OWNER_ONLY).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_all(&p).unwrap().len(),
        1,
        "appended under another writer's lock"
    );
    drop(held);
    assert_eq!(t.join().unwrap(), 1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(read_all(&p).unwrap().len(), 2);
}

#[test]
fn stale_and_repeated_captures_are_not_appended() {
    let d = dir();
    let p = d.path().join("log");
    append(&p, &[entry("g", 10)], OWNER_ONLY).unwrap();
    // Another capture of the same position, and an older capture losing the race.
    let same = GroupOffsetEntry {
        capture_time_ms: entry("g", 10).capture_time_ms + 5,
        ..entry("g", 10)
    };
    let stale = GroupOffsetEntry {
        capture_time_ms: entry("g", 10).capture_time_ms - 1,
        ..entry("g", 9)
    };
    assert_eq!(append(&p, &[same, stale], OWNER_ONLY).unwrap(), 0);
    assert_eq!(read_all(&p).unwrap(), vec![entry("g", 10)]);
    assert_eq!(append(&p, &[entry("g", 11)], OWNER_ONLY).unwrap(), 1);
}

/// A frame whose CRCs match but whose body does not parse is damage at the frame, with the
/// field named (the body is decoded with the byte primitives of `format::bytes`).
#[test]
fn a_complete_frame_with_a_malformed_body_is_corruption() {
    let d = dir();
    let p = d.path().join("log");
    let mut body = encode_frame(&entry("g", 1), &p).unwrap()[frame::PREFIX_LEN..].to_vec();
    body.push(0); // a byte after the metadata
    let mut bad_utf8 = body[..body.len() - 1].to_vec();
    bad_utf8[18] = 0xFF; // the group id's only byte
    for (b, what) in [(body, "trailing"), (bad_utf8, "UTF-8")] {
        let mut data = encode(&p, &[entry("g", 0)]).unwrap();
        let at = data.len();
        data.extend_from_slice(&frame::prefix(&b));
        data.extend_from_slice(&b);
        std::fs::write(&p, &data).unwrap();
        match read_all(&p) {
            Err(Error::Corrupt {
                position, detail, ..
            }) => {
                assert_eq!(position, at as u64);
                assert!(detail.contains(what), "{detail}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn store_chunks_append_in_order_and_never_overwrite_another_writers_chunk() {
    use crate::storage::{LocalStore, Store};
    let d = dir();
    let store = LocalStore::new(d.path(), OWNER_ONLY);
    let prefix = "topics/t/0/";
    // a single log from a directory backup copied here comes first
    let single = encode(Path::new("x"), &[entry("g", 1)]).unwrap();
    store.put("topics/t/0/group-offsets.log", &single).unwrap();
    let parts = store_parts(store.list(prefix).unwrap().iter().map(|m| m.key.as_str()));
    let mut next = parts.last().map_or(0, |(p, _)| p + 1);
    assert_eq!(
        append_store(&store, prefix, &mut next, &[entry("g", 2)]).unwrap(),
        1
    );
    // another writer takes the next chunk first: this one moves past it, never over it
    let theirs = encode(Path::new("x"), &[entry("h", 9)]).unwrap();
    store
        .put_if_absent(
            &format!("{prefix}{}", layout::group_offsets_chunk_name(1)),
            &theirs,
        )
        .unwrap();
    append_store(&store, prefix, &mut next, &[entry("g", 3), entry("h", 4)]).unwrap();
    assert_eq!(append_store(&store, prefix, &mut next, &[]).unwrap(), 0);
    let parts = store_parts(store.list(prefix).unwrap().iter().map(|m| m.key.as_str()));
    assert_eq!(
        parts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let all = read_store_parts(&store, &parts).unwrap();
    let offsets: Vec<(String, i64)> = all
        .iter()
        .map(|e| (e.group.clone(), e.committed_offset))
        .collect();
    assert_eq!(
        offsets,
        [("g", 1), ("g", 2), ("h", 9), ("g", 3), ("h", 4)]
            .map(|(g, o)| (g.to_string(), o))
            .to_vec()
    );
    assert_eq!(
        store.get(&parts[2].1).unwrap(),
        theirs,
        "their chunk is intact"
    );
    let latest = latest(all);
    assert_eq!(latest["g"].committed_offset, 3);
    assert_eq!(latest["h"].committed_offset, 4);
}
