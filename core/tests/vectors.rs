//! The shared operation scripts, replayed by the Rust core and compared with the images the real Linux
//! kernel wrote for them (`shared/vectors/kernel/`), and the kernel's images activated and read back.

mod common;

use common::{first_diff, gunzip, shared_dir};
use cowsnap_core::testkit::replay::{replay, Script};
use cowsnap_core::{Error, MemDevice, SnapshotOptions, Volume};

/// Kernel image folders: the shared ones, and cowsnap's own (`tests/vectors/kernel`, made with the
/// shared generator from `tests/vectors/scripts`).
fn kernel_dirs() -> Vec<std::path::PathBuf> {
    let own = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/kernel");
    let mut all = Vec::new();
    for (dir, at_least) in [(shared_dir().join("vectors/kernel"), 6), (own, 4)] {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        assert!(
            v.len() >= at_least,
            "expected kernel vectors in {}",
            dir.display()
        );
        all.extend(v);
    }
    all
}

fn load_script(p: &std::path::Path) -> Script {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn replay_matches_kernel_images_byte_for_byte() {
    for dir in kernel_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let script = load_script(&dir.join("script.json"));
        let out = replay(&script).unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
        let origin = gunzip(&dir.join("origin.img.gz"));
        assert_eq!(
            first_diff(&out.origin, &origin),
            None,
            "{name}: origin differs"
        );
        assert_eq!(out.snapshots.len(), script.snapshots.len(), "{name}");
        for s in &out.snapshots {
            let cow_path = dir.join(format!("{}.cow.gz", s.name));
            let kcow = gunzip(&cow_path);
            assert_eq!(
                first_diff(&s.cow, &kcow),
                None,
                "{name}: COW of {} differs",
                s.name
            );
            let img_path = dir.join(format!("{}.img.gz", s.name));
            match (&s.image, img_path.exists()) {
                (Some(img), true) => assert_eq!(
                    first_diff(img, &gunzip(&img_path)),
                    None,
                    "{name}: image of {} differs",
                    s.name
                ),
                (None, false) => {}
                (mine, kernel) => panic!(
                    "{name}: snapshot {} readable here: {}, kernel image present: {kernel}",
                    s.name,
                    mine.is_some()
                ),
            }
            // The kernel lists the status of live and merged snapshots (not deleted ones).
            if let Some(k) = status["status"][&s.name].as_str() {
                assert_eq!(k, s.status, "{name}: status of {}", s.name);
            }
        }
        // The kernel's refusals (WRITE-FAILED lines are the writer's own echo of WRITE-ERR).
        let kerr: Vec<String> = status["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .filter(|e| !e.starts_with("WRITE-FAILED"))
            .collect();
        assert_eq!(out.errors, kerr, "{name}: refused operations");
    }
}

#[test]
fn kernel_images_activate_and_read_back_exactly() {
    for dir in kernel_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let script = load_script(&dir.join("script.json"));
        for decl in &script.snapshots {
            if decl.store == "N" {
                continue; // transient stores do not survive deactivation
            }
            let cow_path = dir.join(format!("{}.cow.gz", decl.name));
            let img_path = dir.join(format!("{}.img.gz", decl.name));
            let mut vol = Volume::new(MemDevice::from_vec(gunzip(&dir.join("origin.img.gz"))));
            let merged = script.ops.iter().any(
                |op| matches!(op, cowsnap_core::testkit::replay::Op::Merge { name } if *name == decl.name),
            );
            let deleted = script.ops.iter().any(
                |op| matches!(op, cowsnap_core::testkit::replay::Op::Delete { name } if *name == decl.name),
            );
            let id = vol
                .activate_snapshot(
                    MemDevice::from_vec(gunzip(&cow_path)),
                    SnapshotOptions::default(),
                )
                .unwrap_or_else(|e| panic!("{name}/{}: activation failed: {e}", decl.name));
            let mut img = vec![0u8; vol.len() as usize];
            let r = vol.snapshot_read_at(id, 0, &mut img);
            if img_path.exists() {
                r.unwrap();
                assert_eq!(
                    first_diff(&img, &gunzip(&img_path)),
                    None,
                    "{name}/{}: activated image differs",
                    decl.name
                );
            } else if merged {
                // A merged COW has no records left: the snapshot reads as the origin.
                r.unwrap();
                assert_eq!(vol.snapshot_status(id).unwrap().exceptions, 0);
            } else if deleted {
                // Deleted while the origin went on changing: its COW still activates (the kernel
                // left it valid), but its view over today's origin means nothing.
                assert!(
                    vol.snapshot_status(id).unwrap().exceptions > 0,
                    "{name}/{}",
                    decl.name
                );
            } else {
                assert_eq!(r, Err(Error::SnapshotInvalid), "{name}/{}", decl.name);
            }
        }
    }
}

/// The checker (`cowsnap_core::check`) finds nothing at all, not even a warning, in any persistent
/// COW the kernel wrote, with the origin bound of its origin.
#[test]
fn the_checker_finds_kernel_images_clean() {
    let mut n = 0;
    for dir in kernel_dirs() {
        let origin_len = gunzip(&dir.join("origin.img.gz")).len() as u64;
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            if !p.to_string_lossy().ends_with(".cow.gz") {
                continue;
            }
            let cow = MemDevice::from_vec(gunzip(&p));
            let r = cowsnap_core::check::check(&cow, None).unwrap();
            if r.header.is_some_and(|h| h.magic == 0) {
                continue; // a transient store's COW: no header at all
            }
            let bound = r.chunk.map(|c| c.chunks_in(origin_len));
            let r = cowsnap_core::check::check(&cow, bound).unwrap();
            assert!(r.is_clean(), "{}: {:?}", p.display(), r.problems);
            n += 1;
        }
    }
    assert!(n >= 10, "{n} kernel COWs checked");
}
