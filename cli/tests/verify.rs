//! `backup` checksum sidecars and `cowsnap verify`: an untouched snapshot passes (also after the origin
//! moves on); each change of the snapshot's view that the dm format cannot see is caught (a zeroed
//! record, a wrong old-chunk number, a zeroed later metadata area, an origin chunk changed behind the
//! engine, a changed COW data chunk), and a damaged sidecar is told apart from damaged data.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: u64 = 4096;
/// Exceptions per metadata area with 4 KiB chunks (16-byte records).
const PER_AREA: u64 = CHUNK / 16;
const BLOCK: u64 = 65536;

/// A 16 MiB volume of 'A', snapshot `s1` (4 KiB chunks), 'B' over the first 4 MiB: 1024 exceptions
/// in 4 metadata areas (origin chunk k -> COW data chunk in area k / 256). Backed up to `b.img` with
/// its sidecar `b.img.sums`.
fn setup(s: &Scratch) {
    let d = s.path();
    ok(d, &["-q", "create", "v", "--size", "16M"]);
    ok(
        d,
        &[
            "-q", "write", "v", "--offset", "0", "--fill", "0x41", "--len", "16M",
        ],
    );
    ok(d, &["-q", "snapshot", "v", "--name", "s1", "--size", "8M"]);
    ok(
        d,
        &[
            "-q", "write", "v", "--offset", "0", "--fill", "0x42", "--len", "4M",
        ],
    );
    let out = ok_str(d, &["backup", "v/s1", "b.img"]);
    assert!(out.contains("checksums"), "{out}");
    assert!(s.join("b.img.sums").exists());
}

/// Byte offset of metadata area `k` in the COW (header chunk, then area k's metadata chunk followed
/// by its data chunks).
fn area(k: u64) -> u64 {
    (1 + k * (PER_AREA + 1)) * CHUNK
}

fn patch(p: &Path, at: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

fn read_u64(p: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_le_bytes(b)
}

/// Runs verify, which must fail: non-zero exit (not a crash), one error line. (stdout, stderr)
fn verify_fails(d: &Path, args: &[&str]) -> (String, String) {
    let o = run(d, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        matches!(o.status.code(), Some(c) if c != 0 && c != 101),
        "{args:?} passed: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

fn files(s: &Scratch) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(s.join("v"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), fs::read(&p).unwrap_or_default())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn untouched_snapshot_and_backup_pass() {
    let s = Scratch::new("verify-ok");
    let d = s.path();
    setup(&s);
    let before = files(&s);
    let out = ok_str(d, &["verify", "v/s1", "--sums", "b.img.sums"]);
    assert!(out.contains("256 blocks match"), "{out}");
    assert_eq!(files(&s), before, "verify changed the volume");
    ok(d, &["verify", "--image", "b.img", "--sums", "b.img.sums"]);
    // The origin moves on; the snapshot's view does not.
    ok(
        d,
        &[
            "-q", "write", "v", "--offset", "6M", "--fill", "0x43", "--len", "2M",
        ],
    );
    ok(d, &["verify", "v/s1", "--sums", "b.img.sums"]);
    // The sidecar is text: header, one line per 64 KiB block, end line.
    let text = fs::read_to_string(s.join("b.img.sums")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "cowsnap-sums 1");
    assert_eq!(lines.len(), 5 + 256 + 1);
    assert!(lines[261].starts_with("end "));
    // --no-sums writes none; --sums puts it where asked, also for a device output.
    ok(d, &["-q", "backup", "v/s1", "c.img", "--no-sums"]);
    assert!(s.join("c.img").exists() && !s.join("c.img.sums").exists());
    ok(
        d,
        &["-q", "backup", "v/s1", "/dev/null", "--sums", "null.sums"],
    );
    assert!(!Path::new("/dev/null.sums").exists());
    ok(d, &["verify", "v/s1", "--sums", "null.sums"]);
}

/// Each corruption the dm format cannot detect passes activation and changes what the snapshot
/// reads; verify catches it and names the first block.
#[test]
fn verify_catches_what_the_format_cannot() {
    type Corrupt = fn(&Scratch);
    let cases: [(&str, Corrupt, u64); 5] = [
        (
            "zeroed record mid-area",
            |s| patch(&s.join("v/s1.cow"), area(0) + 100 * 16, &[0; 16]),
            // Records 100.. of area 0 (and the areas after it) are lost: chunk 100 reads 'B'.
            100 * CHUNK / BLOCK,
        ),
        (
            "wrong old-chunk number",
            |s| {
                let cow = s.join("v/s1.cow");
                assert_eq!(read_u64(&cow, area(0) + 5 * 16), 5);
                patch(&cow, area(0) + 5 * 16, &3000u64.to_le_bytes());
            },
            0,
        ),
        (
            "zeroed later area",
            |s| patch(&s.join("v/s1.cow"), area(2), &[0; CHUNK as usize]),
            2 * PER_AREA * CHUNK / BLOCK,
        ),
        (
            "origin chunk changed behind the engine",
            |s| patch(&s.join("v/origin.img"), 2000 * CHUNK, b"Z"),
            2000 * CHUNK / BLOCK,
        ),
        (
            "COW data chunk changed",
            |s| {
                let cow = s.join("v/s1.cow");
                // Area 1's first record: origin chunk 256 -> its data chunk.
                assert_eq!(read_u64(&cow, area(1)), 256);
                let new = read_u64(&cow, area(1) + 8);
                patch(&cow, new * CHUNK + 17, b"x");
            },
            256 * CHUNK / BLOCK,
        ),
    ];
    for (what, corrupt, first) in cases {
        let s = Scratch::new("verify-bad");
        let d = s.path();
        setup(&s);
        corrupt(&s);
        // The engine does not notice: the snapshot still reads, with rc 0.
        ok(d, &["-q", "read", "v/s1", "--offset", "0", "--len", "4K"]);
        let before = files(&s);
        let (out, err) = verify_fails(d, &["verify", "v/s1", "--sums", "b.img.sums"]);
        assert!(
            err.contains(&format!("the first at byte {}", first * BLOCK)),
            "{what}: {err}"
        );
        assert!(
            out.lines().next().unwrap_or("").starts_with(&format!(
                "mismatch: block {first}, bytes {}..",
                first * BLOCK
            )),
            "{what}: {out}"
        );
        assert_eq!(files(&s), before, "{what}: verify changed the volume");
        // The backup itself is fine.
        ok(d, &["verify", "--image", "b.img", "--sums", "b.img.sums"]);
    }
}

/// A changed backup image is caught; a damaged or foreign sidecar is reported as such.
#[test]
fn damaged_images_and_sidecars() {
    let s = Scratch::new("verify-side");
    let d = s.path();
    setup(&s);
    patch(&s.join("b.img"), 5 * BLOCK + 3, b"?");
    let (out, err) = verify_fails(d, &["verify", "--image", "b.img", "--sums", "b.img.sums"]);
    assert!(err.contains("1 of 256 blocks differ"), "{err}");
    assert!(out.starts_with("mismatch: block 5,"), "{out}");

    let good = fs::read_to_string(s.join("b.img.sums")).unwrap();
    let flip = |t: &str, line: usize| {
        let mut l: Vec<String> = t.lines().map(String::from).collect();
        let c = if l[line].starts_with('0') { "1" } else { "0" };
        l[line].replace_range(0..1, c);
        l.join("\n") + "\n"
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("hash line", flip(&good, 7), "damaged sums file"),
        (
            "end line",
            good.replace("end ", "end 0"),
            "damaged sums file",
        ),
        (
            "truncated",
            good.lines().take(100).collect::<Vec<_>>().join("\n"),
            "damaged sums file",
        ),
        (
            "not a sums file",
            "hello\n".into(),
            "not a cowsnap sums file",
        ),
        (
            "size edited",
            good.replace("size 16777216", "size 8388608"),
            "damaged sums file",
        ),
        ("empty", String::new(), "damaged sums file"),
        ("trailing bytes", good.clone() + "x", "damaged sums file"),
        (
            "long line",
            good.replacen("hash blake3", &"h".repeat(1 << 20), 1),
            "damaged",
        ),
    ];
    for (what, text, why) in cases {
        fs::write(s.join("x.sums"), text).unwrap();
        let (_, err) = verify_fails(d, &["verify", "v/s1", "--sums", "x.sums"]);
        assert!(err.contains(why), "{what}: {err}");
    }
    // The sidecar of another, smaller snapshot.
    ok(d, &["-q", "create", "w", "--size", "8M"]);
    ok(d, &["-q", "snapshot", "w", "--name", "t", "--size", "1M"]);
    ok(d, &["-q", "backup", "w/t", "w.img"]);
    let (_, err) = verify_fails(d, &["verify", "v/s1", "--sums", "w.img.sums"]);
    assert!(err.contains("lists 8388608 bytes"), "{err}");
    verify_fails(d, &["verify", "v/s1", "--sums", "missing.sums"]);
    verify_fails(d, &["verify", "v", "--sums", "b.img.sums"]);
}
