//! The conformance table (`tests/conformance/cases.json`) through the Rust API, as a Rust front end
//! uses it: the core's own checks before allocating ([`limits::check_origin_len`],
//! [`SnapshotOptions::check_cow_len`]), then the engine. The C, Python, JavaScript and CLI runners
//! read the same table and must give the same answers.

use cowsnap_core::{
    limits, Autoextend, ChunkSize, Error, MemDevice, MergeEvent, MergeStepper, OverflowMode,
    SnapshotId, SnapshotOptions, StoreKind, Volume,
};
use serde_json::Value;

fn table() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/conformance/cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read tests/conformance/cases.json");
    let v: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    v["cases"].as_array().expect("cases").clone()
}

fn u(step: &Value, key: &str) -> u64 {
    step[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {step}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A COW image: zeros with the patches of the table written over them.
fn image(spec: &Value) -> Vec<u8> {
    let mut img = vec![0u8; u(spec, "size") as usize];
    for p in spec["patches"].as_array().unwrap() {
        let at = p[0].as_u64().unwrap() as usize;
        let bytes = hex(p[1].as_str().unwrap());
        img[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    img
}

fn options(step: &Value) -> Result<SnapshotOptions, Error> {
    let (store, overflow) = match step["store"].as_str().unwrap_or("P") {
        "P" => (StoreKind::Persistent, OverflowMode::Invalidate),
        "PO" => (StoreKind::Persistent, OverflowMode::Report),
        "N" => (StoreKind::Transient, OverflowMode::Invalidate),
        "NO" => (StoreKind::Transient, OverflowMode::Report),
        s => panic!("store {s}"),
    };
    Ok(SnapshotOptions {
        chunk_size: ChunkSize::new(step["chunk"].as_u64().unwrap_or(4096))?,
        store,
        overflow,
        autoextend: policy(&step["autoextend"]),
    })
}

fn policy(v: &Value) -> Option<Autoextend> {
    v.as_array().map(|a| Autoextend {
        threshold_percent: a[0].as_u64().unwrap() as u32,
        extend_percent: a[1].as_u64().unwrap() as u32,
    })
}

struct Run {
    vol: Option<Volume>,
    snaps: Vec<SnapshotId>,
}

impl Run {
    fn vol(&mut self) -> &mut Volume {
        self.vol.as_mut().expect("a volume step first")
    }

    fn snap(&self, step: &Value, key: &str) -> SnapshotId {
        self.snaps[u(step, key) as usize]
    }

    /// Runs one step; `Ok` carries nothing, the checks of values are asserted here.
    fn step(&mut self, step: &Value, ctx: &str) -> Result<(), Error> {
        match step["op"].as_str().unwrap() {
            "volume" => {
                let size = u(step, "size");
                limits::check_origin_len(size)?;
                self.vol = Some(Volume::new(MemDevice::try_new(size)?));
            }
            "images" => {
                let size = u(step, "size");
                limits::check_origin_len(size)?;
                let mut vol = Volume::new(MemDevice::try_new(size)?);
                for c in step["cows"].as_array().unwrap() {
                    let id = vol.activate_snapshot(
                        MemDevice::from_vec(image(c)),
                        SnapshotOptions::default(),
                    )?;
                    self.snaps.push(id);
                }
                self.vol = Some(vol);
            }
            "snapshot" => {
                let opts = options(step)?.validate()?;
                let cow = u(step, "cow");
                opts.check_cow_len(cow)?;
                let id = self.vol().create_snapshot(MemDevice::try_new(cow)?, opts)?;
                self.snaps.push(id);
            }
            "write" | "read" => {
                let (offset, len) = (u(step, "offset"), u(step, "len") as usize);
                let target = &step["target"];
                let fill = step["fill"].as_u64().map(|f| f as u8);
                let snap = target.as_u64().map(|i| self.snaps[i as usize]);
                if step["op"] == "write" {
                    let data = vec![fill.unwrap(); len];
                    match snap {
                        None => self.vol().write_at(offset, &data)?,
                        Some(id) => self.vol().snapshot_write_at(id, offset, &data)?,
                    }
                } else {
                    let mut buf = vec![0xEEu8; len];
                    match snap {
                        None => self.vol().read_at(offset, &mut buf)?,
                        Some(id) => self.vol().snapshot_read_at(id, offset, &mut buf)?,
                    }
                    if let Some(f) = fill {
                        assert!(buf.iter().all(|b| *b == f), "{ctx}: read bytes are not {f}");
                    }
                }
            }
            "status" => {
                let id = self.snap(step, "snap");
                let st = self.vol().snapshot_status(id)?;
                if let Some(s) = step["state"].as_str() {
                    assert_eq!(st.state.name(), s, "{ctx}: state");
                }
                if let Some(s) = step["dm_status"].as_str() {
                    assert_eq!(st.dm_status(), s, "{ctx}: dm_status");
                }
                if let Some(s) = step["lvs_attr"].as_str() {
                    assert_eq!(st.lvs_attr(), s, "{ctx}: lvs_attr");
                }
                if let Some(n) = step["exceptions"].as_u64() {
                    assert_eq!(st.exceptions, n, "{ctx}: exceptions");
                }
                match &step["data_percent"] {
                    Value::Null if step.get("data_percent").is_some() => {
                        assert_eq!(st.data_percent(), None, "{ctx}: data_percent")
                    }
                    Value::Number(n) => {
                        assert_eq!(st.data_percent(), n.as_f64(), "{ctx}: data_percent")
                    }
                    _ => {}
                }
            }
            "delete" => {
                let id = self.snap(step, "snap");
                self.vol().delete_snapshot(id)?;
            }
            "merge" | "merge_start" => {
                let id = self.snap(step, "snap");
                let stop_at_first = step["op"] == "merge_start";
                let mut m = MergeStepper::new(id);
                loop {
                    match m.step(self.vol())? {
                        // As the C ABI's callback stopping the merge: the snapshot stays merging.
                        MergeEvent::Progress(p) if stop_at_first && !p.done => break,
                        MergeEvent::Progress(_) => {}
                        MergeEvent::Finished(_) => break,
                    }
                }
            }
            "extend" => {
                let id = self.snap(step, "snap");
                let size = step["size"].as_u64().unwrap();
                limits::check_cow_growth(size)?;
                self.vol().extend_snapshot(id, size)?;
            }
            "autoextend" => {
                let id = self.snap(step, "snap");
                let p = policy(&step["policy"]);
                self.vol().set_autoextend(id, p)?;
            }
            "origin_attr" => {
                let want = step["value"].as_str().unwrap();
                assert_eq!(self.vol().origin_lvs_attr(), want, "{ctx}: origin lvs_attr");
            }
            "count" => {
                assert_eq!(
                    self.vol().snapshot_ids().len() as u64,
                    u(step, "count"),
                    "{ctx}: snapshot count"
                );
            }
            op => panic!("{ctx}: unknown op {op}"),
        }
        Ok(())
    }
}

/// Ops the Rust API cannot express: a `Volume` is dropped, never used after a close.
const UNSUPPORTED: &[&str] = &["close"];

#[test]
fn conformance_table() {
    let cases = table();
    let (mut ran, mut skipped) = (0, Vec::new());
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_array().unwrap();
        if steps
            .iter()
            .any(|s| UNSUPPORTED.contains(&s["op"].as_str().unwrap()))
        {
            skipped.push(name);
            continue;
        }
        let mut run = Run {
            vol: None,
            snaps: Vec::new(),
        };
        for (i, step) in steps.iter().enumerate() {
            let ctx = format!("case {name:?}, step {i} {step}");
            let want = step["expect"].as_str().unwrap_or("OK");
            let got = match run.step(step, &ctx) {
                Ok(()) => "OK",
                Err(e) => e.code().name(),
            };
            assert_eq!(got, want, "{ctx}");
        }
        ran += 1;
    }
    eprintln!("conformance: {ran} cases run, skipped {skipped:?}");
    assert!(ran >= 40 && ran + skipped.len() == cases.len());
}
