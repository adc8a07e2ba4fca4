//! Raw dm devices and scripts: replay vs. the kernel's images, inspect, export, offline merge.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// `cowsnap replay` of the shared script `case` into the scratch folder: (script, output folder).
fn replay(s: &Scratch, v: &Path, case: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = v.join("scripts").join(format!("{case}.json"));
    let out = s.join(case);
    ok(
        s.path(),
        &[
            "-q",
            "replay",
            script.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ],
    );
    (script, out)
}

fn status_of(p: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
    v["status"].clone()
}

/// Every script replays to the kernel's bytes: origin, COW and snapshot images, and statuses.
#[test]
fn replay_matches_kernel_images() {
    let v = vectors();
    let s = Scratch::new("replay");
    let mut checked = 0;
    for case in kernel_cases() {
        let (_, out) = replay(&s, &v, &case);
        let k = v.join("kernel").join(&case);
        for e in fs::read_dir(&k).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let Some(file) = name.strip_suffix(".gz") else {
                continue;
            };
            let ours = fs::read(out.join(file))
                .unwrap_or_else(|e| panic!("{case}: replay did not write {file}: {e}"));
            assert!(
                ours == gunzip(&p),
                "{case}/{file} differs from the kernel's"
            );
            checked += 1;
        }
        // No snapshot image where the kernel had none (invalid, merged, deleted).
        for e in fs::read_dir(&out).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".img") {
                assert!(
                    k.join(format!("{name}.gz")).exists(),
                    "{case}: extra {name}"
                );
            }
        }
        assert_eq!(
            status_of(&out.join("status.json")),
            status_of(&k.join("status.json")),
            "{case}"
        );
    }
    assert!(checked >= 19, "only {checked} images compared");
}

/// Replay -> inspect -> export: the exported image is the replayed snapshot image, and inspect
/// reports the replay's status.
#[test]
fn replay_inspect_export_round_trip() {
    let v = vectors();
    let s = Scratch::new("roundtrip");
    let mut exported = 0;
    for case in kernel_cases() {
        let (script, out) = replay(&s, &v, &case);
        let status = status_of(&out.join("status.json"));
        let sc: serde_json::Value = serde_json::from_slice(&fs::read(&script).unwrap()).unwrap();
        for snap in sc["snapshots"].as_array().unwrap() {
            let name = snap["name"].as_str().unwrap();
            let img = out.join(format!("{name}.img"));
            if snap["store"] == "N" || !img.exists() {
                continue;
            }
            let cow = out.join(format!("{name}.cow"));
            let j: serde_json::Value = serde_json::from_str(&ok_str(
                s.path(),
                &["inspect", cow.to_str().unwrap(), "--json", "--exceptions"],
            ))
            .unwrap();
            assert_eq!(j["dm_status"], status[name], "{case}/{name}");
            assert_eq!(
                j["chunk_size"].as_u64().unwrap(),
                snap["chunk_sectors"].as_u64().unwrap() * 512
            );
            assert_eq!(j["header"]["magic_hex"], "0x70416e53");
            assert_eq!(
                j["exceptions"].as_array().unwrap().len() as u64,
                j["exception_count"].as_u64().unwrap()
            );
            let x = out.join(format!("{name}.exported"));
            ok(
                s.path(),
                &[
                    "-q",
                    "export",
                    "--origin",
                    out.join("origin.img").to_str().unwrap(),
                    "--cow",
                    cow.to_str().unwrap(),
                    "--out",
                    x.to_str().unwrap(),
                ],
            );
            assert!(
                fs::read(&x).unwrap() == fs::read(&img).unwrap(),
                "{case}/{name}"
            );
            exported += 1;
        }
    }
    assert!(exported >= 4, "{exported}");
}

/// Kernel origin + kernel COW, exported, equals the kernel's snapshot image; inspect agrees with the
/// kernel's status; nothing is modified.
#[test]
fn export_and_inspect_kernel_images() {
    let v = vectors();
    let s = Scratch::new("kexport");
    let mut n = 0;
    for case in kernel_cases() {
        let k = v.join("kernel").join(&case);
        let status = status_of(&k.join("status.json"));
        let origin = s.join(&format!("{case}-origin.img"));
        fs::write(&origin, gunzip(&k.join("origin.img.gz"))).unwrap();
        for (name, st) in status.as_object().unwrap() {
            let img = k.join(format!("{name}.img.gz"));
            let cow_gz = k.join(format!("{name}.cow.gz"));
            if !img.exists() || !cow_gz.exists() {
                continue;
            }
            let cow = s.join(&format!("{case}-{name}.cow"));
            let cow_bytes = gunzip(&cow_gz);
            fs::write(&cow, &cow_bytes).unwrap();
            let origin_bytes = fs::read(&origin).unwrap();
            let out = s.join(&format!("{case}-{name}.img"));
            let r = run(
                s.path(),
                &[
                    "-q",
                    "export",
                    "--origin",
                    origin.to_str().unwrap(),
                    "--cow",
                    cow.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
            );
            if r.status.success() {
                assert!(fs::read(&out).unwrap() == gunzip(&img), "{case}/{name}");
                let j: serde_json::Value = serde_json::from_str(&ok_str(
                    s.path(),
                    &["inspect", cow.to_str().unwrap(), "--json"],
                ))
                .unwrap();
                assert_eq!(&j["dm_status"], st, "{case}/{name}");
                n += 1;
            } else {
                // Only a transient store (no metadata) may be refused.
                let sc: serde_json::Value =
                    serde_json::from_slice(&fs::read(k.join("script.json")).unwrap()).unwrap();
                let decl = sc["snapshots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["name"] == name.as_str())
                    .unwrap();
                assert_eq!(decl["store"], "N", "{case}/{name} refused");
            }
            assert!(
                fs::read(&cow).unwrap() == cow_bytes,
                "export modified the COW"
            );
            assert!(
                fs::read(&origin).unwrap() == origin_bytes,
                "export modified the origin"
            );
        }
    }
    assert!(n >= 4, "{n}");
}

#[test]
fn inspect_text_and_invalid_kernel_cow() {
    let v = vectors();
    let s = Scratch::new("inspect");
    let k = v.join("kernel/basic-4k");
    let cow = s.join("s0.cow");
    fs::write(&cow, gunzip(&k.join("s0.cow.gz"))).unwrap();
    let t = ok_str(s.path(), &["inspect", "s0.cow", "--exceptions"]);
    assert!(t.contains("magic:          0x70416e53 (SnAp)"), "{t}");
    assert!(t.contains("chunk size:     8 sectors (4.00k)"), "{t}");
    assert!(t.contains("dm status:      160/8192 16"), "{t}");
    assert!(
        t.lines()
            .filter(|l| l.starts_with("  ") && l.contains(" -> "))
            .count()
            == 18,
        "{t}"
    );
    // A kernel-invalidated COW: inspect says so, export refuses.
    let k = v.join("kernel/overflow-4k");
    fs::write(s.join("o.cow"), gunzip(&k.join("s0.cow.gz"))).unwrap();
    fs::write(s.join("o.img"), gunzip(&k.join("origin.img.gz"))).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&ok_str(s.path(), &["inspect", "o.cow", "--json"])).unwrap();
    assert_eq!(j["header"]["valid"], 0);
    assert_eq!(j["dm_status"], "Invalid");
    assert_eq!(j["data_percent"], serde_json::Value::Null);
    let e = fails(
        s.path(),
        &[
            "export", "--origin", "o.img", "--cow", "o.cow", "--out", "x.img",
        ],
    );
    assert!(e.contains("invalid"), "{e}");
    assert!(!s.join("x.img").exists());
}

#[test]
fn corrupt_and_foreign_cows_are_refused() {
    let v = vectors();
    let s = Scratch::new("corrupt");
    let d = s.path();
    let k = v.join("kernel/basic-4k");
    let good = gunzip(&k.join("s0.cow.gz"));
    fs::write(s.join("origin.img"), gunzip(&k.join("origin.img.gz"))).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("foreign", vec![0x55u8; 1 << 16], "bad magic"),
        ("empty", vec![], "smaller than a header"),
        ("zero", vec![0u8; 1 << 16], "magic is 0"),
        (
            "version",
            {
                let mut b = good.clone();
                b[8] = 2;
                b
            },
            "version",
        ),
        (
            "chunk",
            {
                let mut b = good.clone();
                b[12] = 3;
                b
            },
            "chunk size",
        ),
        // First record of area 0 (chunk 1) points at COW chunk 1 (metadata).
        (
            "record",
            {
                let mut b = good.clone();
                b[4096 + 8..4096 + 16].copy_from_slice(&1u64.to_le_bytes());
                b
            },
            "not a data chunk",
        ),
        // A record naming an origin chunk far past the origin.
        (
            "beyond",
            {
                let mut b = good.clone();
                b[4096..4096 + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "beyond the origin",
        ),
    ];
    for (name, bytes, why) in cases {
        let p = s.join(&format!("{name}.cow"));
        fs::write(&p, &bytes).unwrap();
        let e = fails(
            d,
            &[
                "export",
                "--origin",
                "origin.img",
                "--cow",
                p.to_str().unwrap(),
                "--out",
                "x.img",
            ],
        );
        assert!(e.contains(why), "{name}: {e}");
        assert!(!s.join("x.img").exists(), "{name}: partial output left");
        let e = fails(
            d,
            &[
                "merge",
                "--origin",
                "origin.img",
                "--cow",
                p.to_str().unwrap(),
            ],
        );
        assert!(e.contains(why), "{name}: {e}");
        if name != "beyond" {
            // inspect has no origin, so it cannot see records beyond it.
            let e = fails(d, &["inspect", p.to_str().unwrap()]);
            assert!(e.contains(why), "{name}: {e}");
        }
        assert_eq!(fs::read(&p).unwrap(), bytes, "{name}: COW modified");
    }
    assert!(fs::read(s.join("origin.img")).unwrap() == gunzip(&k.join("origin.img.gz")));
    fails(d, &["inspect", "missing.cow"]);
    fails(
        d,
        &[
            "export", "--origin", "nope.img", "--cow", "zero.cow", "--out", "x.img",
        ],
    );
    // Raw merge needs both.
    let o = run(d, &["merge", "--origin", "origin.img"]);
    assert_eq!(o.status.code(), Some(2));
    // Bad scripts.
    fs::write(s.join("bad.json"), b"{\"origin_size\": 1}").unwrap();
    let e = fails(d, &["replay", "bad.json", "--out-dir", "o"]);
    assert!(e.contains("bad script"), "{e}");
    fails(d, &["replay", "nope.json", "--out-dir", "o"]);
}

/// Offline merge of a kernel COW into its origin: the origin becomes the snapshot image; running it
/// again is a no-op (the merge is resumable: the records are gone).
#[test]
fn offline_merge_of_kernel_cow() {
    let v = vectors();
    let s = Scratch::new("kmerge");
    let d = s.path();
    for (case, name) in [
        ("writable-two-snaps-64k", "a"),
        ("basic-4k", "s0"),
        ("area-crossing-4k", "s0"),
    ] {
        let k = v.join("kernel").join(case);
        fs::write(s.join("o.img"), gunzip(&k.join("origin.img.gz"))).unwrap();
        fs::write(s.join("c.cow"), gunzip(&k.join(format!("{name}.cow.gz")))).unwrap();
        let out = ok_str(d, &["merge", "--origin", "o.img", "--cow", "c.cow"]);
        assert!(out.starts_with("merged "), "{out}");
        let want = gunzip(&k.join(format!("{name}.img.gz")));
        assert!(fs::read(s.join("o.img")).unwrap() == want, "{case}");
        let j: serde_json::Value =
            serde_json::from_str(&ok_str(d, &["inspect", "c.cow", "--json"])).unwrap();
        assert_eq!(j["exception_count"], 0, "{case}");
        let out = ok_str(d, &["merge", "--origin", "o.img", "--cow", "c.cow"]);
        assert!(out.starts_with("merged 0 chunks"), "{out}");
        assert!(fs::read(s.join("o.img")).unwrap() == want, "{case}");
    }
}

/// Writes a dm persistent COW (4 KiB chunks) holding `olds`, in allocation order.
fn dm_cow(path: &Path, olds: &[u64], spare_chunks: u64) {
    let epa = 256u64;
    let loc = |a: u64| 1 + a * (epa + 1);
    let n = olds.len() as u64;
    let chunks = loc(n / epa) + 1 + n % epa + spare_chunks;
    let mut img = vec![0u8; (chunks * 4096) as usize];
    img[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    img[12..16].copy_from_slice(&8u32.to_le_bytes());
    for (p, &old) in olds.iter().enumerate() {
        let p = p as u64;
        let at = (loc(p / epa) * 4096 + p % epa * 16) as usize;
        img[at..at + 8].copy_from_slice(&old.to_le_bytes());
        img[at + 8..at + 16].copy_from_slice(&(loc(p / epa) + 1 + p % epa).to_le_bytes());
    }
    fs::write(path, img).unwrap();
}

/// `inspect --exceptions` streams the records of every area in on-disk order (text and JSON), with
/// the counts and status of the one checking pass; a repeat in a later area is still refused
/// before anything is printed.
#[test]
fn inspect_streams_every_area_in_disk_order() {
    let s = Scratch::new("inspect-stream");
    let olds: Vec<u64> = (0..700u64).map(|p| p * 7919 % 10007).collect();
    dm_cow(&s.join("c.cow"), &olds, 5);
    let j: serde_json::Value = serde_json::from_str(&ok_str(
        s.path(),
        &["inspect", "c.cow", "--json", "--exceptions"],
    ))
    .unwrap();
    assert_eq!(j["exception_count"], 700);
    assert_eq!(j["areas"], 3);
    let got: Vec<u64> = j["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(got, olds);
    assert_eq!(j["exceptions"][699][1], 1 + 2 * 257 + 1 + 699 % 256);
    let t = ok_str(s.path(), &["inspect", "c.cow", "--exceptions"]);
    let listed: Vec<&str> = t.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(listed.len(), 700, "{t}");
    assert_eq!(listed[256], format!("  {} -> 259", olds[256]));
    assert!(t.contains("exceptions:     700"), "{t}");
    // No records: an empty list, as serde_json prints it.
    dm_cow(&s.join("e.cow"), &[], 3);
    let e = ok_str(s.path(), &["inspect", "e.cow", "--json", "--exceptions"]);
    assert!(e.trim_end().ends_with("\"exceptions\": []\n}"), "{e}");
    let j: serde_json::Value = serde_json::from_str(&e).unwrap();
    assert_eq!(j["exception_count"], 0);
    // A repeat in the third area: refused, nothing listed.
    let mut bad = olds.clone();
    bad[650] = olds[3];
    dm_cow(&s.join("d.cow"), &bad, 5);
    let e = fails(s.path(), &["inspect", "d.cow", "--exceptions"]);
    assert!(run(s.path(), &["inspect", "d.cow", "--exceptions"])
        .stdout
        .is_empty());
    assert!(
        e.contains(&format!(
            "record 138 of area 2: origin chunk {} appears twice",
            olds[3]
        )),
        "{e}"
    );
}

/// `inspect` runs the checker: a damaged COW is refused with every problem and its place (exit 4,
/// nothing on stdout; with `--json`, the list as JSON), and warnings (records after an end marker)
/// are shown on a COW that activates.
#[test]
fn inspect_lists_every_problem_with_its_place() {
    let s = Scratch::new("inspect-check");
    let d = s.path();
    let olds: Vec<u64> = (0..300).collect();
    dm_cow(&s.join("c.cow"), &olds, 2);
    let mut img = fs::read(s.join("c.cow")).unwrap();
    let rec = |img: &mut Vec<u8>, area: usize, i: usize, old: u64, new: u64| {
        let at = (1 + area * 257) * 4096 + i * 16;
        img[at..at + 8].copy_from_slice(&old.to_le_bytes());
        img[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
    };
    rec(&mut img, 0, 7, 7, 258); // area 1's chunk
    rec(&mut img, 0, 9, 2, 11); // origin chunk 2 again
    rec(&mut img, 1, 3, 900, 1 << 40); // outside the device
    fs::write(s.join("bad.cow"), &img).unwrap();
    let e = fails_with(d, &["inspect", "bad.cow"], 4);
    for want in [
        "3 problems:",
        "record 7 of area 0: COW chunk 258 is not a data chunk of this device",
        "record 9 of area 0: origin chunk 2 appears twice (first at record 2 of area 0)",
        "record 3 of area 1: COW chunk 1099511627776 is not a data chunk of this device",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    assert!(run(d, &["inspect", "bad.cow"]).stdout.is_empty());
    let o = run(d, &["inspect", "bad.cow", "--json"]);
    assert_eq!(o.status.code(), Some(4));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = j["problems"].as_array().unwrap();
    assert_eq!(p.len(), 3, "{j}");
    assert_eq!(p[1]["location"], "record 9 of area 0");
    assert_eq!(p[1]["damage"], true);
    // A record zeroed in the last area: the kernel reads the store (and loses the records after
    // it); inspect shows it with a warning and succeeds.
    let mut img = fs::read(s.join("c.cow")).unwrap();
    rec(&mut img, 1, 10, 0, 0);
    fs::write(s.join("torn.cow"), &img).unwrap();
    let t = ok_str(d, &["inspect", "torn.cow"]);
    assert!(t.contains("exceptions:     266"), "{t}");
    assert!(
        t.contains(
            "metadata area 1 (chunk 258): warning: 33 non-zero records after the end marker"
        ),
        "{t}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok_str(d, &["inspect", "torn.cow", "--json"])).unwrap();
    assert_eq!(j["problems"][0]["damage"], false);
    let j: serde_json::Value =
        serde_json::from_str(&ok_str(d, &["inspect", "c.cow", "--json"])).unwrap();
    assert_eq!(j["problems"], serde_json::json!([]));
}
