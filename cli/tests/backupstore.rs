//! Backups to object storage, against a real S3 API: a local moto server (`moto[server]` from PyPI,
//! installed into `target/moto-venv` when missing) on 127.0.0.1, started once for this test binary
//! and killed with it (`PR_SET_PDEATHSIG`); each test has its own bucket.
//!
//! Full backup → restore is the snapshot byte for byte; 1 % rewritten → incremental backup reads and
//! uploads only that and restores the new snapshot; verify; prune keeps exactly the objects of the
//! kept backups; a damaged, swapped or deleted object (or manifest) is found by verify and refused
//! by restore, which leaves no output; a backup killed mid-way leaves no backup and its rerun
//! uploads only what is missing; two volumes sharing data store it once; prune deletes no object
//! while a backup runs. Without Python or PyPI the S3 tests are skipped with a message, unless
//! `COWSNAP_REQUIRE_S3=1`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// The local S3 server.

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("moto-venv")
}

/// `moto_server` from the venv, installed if missing; `Err` says why it cannot be had.
fn moto_server() -> Result<PathBuf, String> {
    let server = venv().join("bin").join("moto_server");
    let py = venv().join("bin").join("python");
    let has_moto = |py: &Path| {
        Command::new(py)
            .args(["-c", "import moto.server, flask, werkzeug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if server.exists() && has_moto(&py) {
        return Ok(server);
    }
    eprintln!("installing moto[server] into {}", venv().display());
    if !py.exists() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv())
            .status()
            .map_err(|e| format!("python3: {e}"))?;
        if !st.success() {
            return Err("python3 -m venv failed (python3-venv missing?)".into());
        }
    }
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "moto[server]"])
        .status()
        .map_err(|e| format!("pip: {e}"))?;
    if !st.success() || !has_moto(&py) {
        return Err("pip install moto[server] failed".into());
    }
    Ok(server)
}

/// The port of the shared moto server, or why there is none.
fn server_port() -> Result<u16, String> {
    static PORT: OnceLock<Result<u16, String>> = OnceLock::new();
    PORT.get_or_init(|| {
        let server = moto_server()?;
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        // The server is started by a thread that lives as long as this process: its death signal
        // (PR_SET_PDEATHSIG, sent when the creating thread ends) then comes only when the test
        // binary ends, however it ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new(&server);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let _ = tx.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            if let Ok(mut c) = child {
                let _ = c.wait();
            }
            loop {
                std::thread::park();
            }
        });
        rx.recv().map_err(|e| e.to_string())??;
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("moto_server did not listen on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(port)
    })
    .clone()
}

/// One test's bucket on the shared server.
struct S3 {
    port: u16,
    bucket: String,
}

impl S3 {
    /// A new bucket, or `None` (with a message) when no S3 server can be had here.
    fn new(tag: &str) -> Option<S3> {
        match server_port() {
            Ok(port) => {
                let s3 = S3 {
                    port,
                    bucket: format!("t-{tag}-{}", std::process::id()),
                };
                let (st, body) = s3.http("PUT", &format!("/{}", s3.bucket), b"");
                assert_eq!(st, 200, "create bucket: {}", String::from_utf8_lossy(&body));
                Some(s3)
            }
            Err(e) if std::env::var_os("COWSNAP_REQUIRE_S3").is_some() => {
                panic!("no S3 server for the tests: {e}")
            }
            Err(e) => {
                eprintln!("skipping the S3 backup test {tag}: {e}");
                None
            }
        }
    }

    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// `cowsnap args...` with the AWS environment of this server.
    fn run(&self, cwd: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = bin();
        c.current_dir(cwd)
            .args(args)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("spawn cowsnap")
    }

    fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let o = self.run(cwd, args, &[]);
        assert!(
            o.status.success(),
            "cowsnap {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs, expects a refusal (exit 3, nothing changed) without a panic; returns stderr.
    fn fails(&self, cwd: &Path, args: &[&str]) -> String {
        self.fails_with(3, cwd, args)
    }

    /// Runs, expects damaged or missing data found (exit 4); returns stderr.
    fn damaged(&self, cwd: &Path, args: &[&str]) -> String {
        self.fails_with(4, cwd, args)
    }

    fn fails_with(&self, code: i32, cwd: &Path, args: &[&str]) -> String {
        let o = self.run(cwd, args, &[]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "cowsnap {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("cowsnap: error: "), "{err}");
        err
    }

    /// A plain HTTP request to the server (moto does not check signatures): status and body.
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        // An Authorization header names the access key (moto does not check the signature);
        // without one, moto answers as to an anonymous client (403 on objects).
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text_end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP header");
        let status_line = String::from_utf8_lossy(&resp[..text_end]).into_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, resp[text_end + 4..].to_vec())
    }

    /// Keys under `prefix` in the bucket.
    fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let (st, body) = self.http(
            "GET",
            &format!("/{}?list-type=2&max-keys=1000&prefix={prefix}", self.bucket),
            b"",
        );
        assert_eq!(st, 200);
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("<IsTruncated>true"), "listing truncated");
        body.split("<Key>")
            .skip(1)
            .map(|s| s.split("</Key>").next().unwrap().to_string())
            .collect()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let (st, body) = self.http("GET", &format!("/{}/{key}", self.bucket), b"");
        assert_eq!(st, 200, "GET {key}");
        body
    }

    fn put(&self, key: &str, data: &[u8]) {
        let (st, _) = self.http("PUT", &format!("/{}/{key}", self.bucket), data);
        assert_eq!(st, 200, "PUT {key}");
    }

    fn delete(&self, key: &str) {
        let (st, _) = self.http("DELETE", &format!("/{}/{key}", self.bucket), b"");
        assert_eq!(st, 204, "DELETE {key}");
    }
}

// ---------------------------------------------------------------------------------------------
// Volumes and data.

const MIB: u64 = 1 << 20;
/// Test volumes: 16 MiB, 64 KiB chunks, backed up in 64 KiB blocks (256 of them), the first
/// `DATA` bytes (`BLOCKS` blocks) noise, the rest a sparse hole.
const VOL: u64 = 16 * MIB;
const CHUNK: u64 = 64 << 10;
const DATA: u64 = 4 * MIB;
const BLOCKS: u64 = DATA / CHUNK;

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len as usize + 8);
    while (v.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len as usize);
    v
}

/// Writes `data` at `offset` of `target` (DIR or DIR/NAME).
fn write(d: &Path, target: &str, offset: u64, data: &[u8]) {
    let f = d.join(format!("in-{}", std::process::id()));
    std::fs::write(&f, data).unwrap();
    ok(
        d,
        &[
            "-q",
            "write",
            target,
            "--offset",
            &offset.to_string(),
            "--from",
            f.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(f).unwrap();
}

/// A volume `name` whose first `DATA` bytes are noise of `seed` (the rest stays a sparse hole).
fn volume(d: &Path, name: &str, seed: u64) {
    ok(
        d,
        &["-q", "create", name, "--size", "16M", "--chunk-size", "64K"],
    );
    write(d, name, 0, &noise(seed, DATA));
}

fn snapshot(d: &Path, vol: &str, snap: &str) {
    ok(d, &["-q", "snapshot", vol, "--name", snap, "--size", "12M"]);
}

/// The snapshot's bytes as `cowsnap read` shows them.
fn image(d: &Path, target: &str) -> Vec<u8> {
    ok(
        d,
        &["read", target, "--offset", "0", "--len", &VOL.to_string()],
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("JSON {s:?}: {e}"))
}

/// `backup --to --json`, 64 KiB blocks.
fn backup(s3: &S3, d: &Path, target: &str, url: &str, base: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "backup",
        target,
        "--to",
        url,
        "--json",
        "--block-size",
        "64K",
    ];
    if let Some(b) = base {
        args.extend(["--base", b]);
    }
    let j = json(&s3.ok(d, &args));
    for k in ["id", "bytes_read", "bytes_uploaded", "chunks", "seconds"] {
        assert!(j.get(k).is_some(), "{k} missing from {j}");
    }
    j
}

fn id(j: &serde_json::Value) -> String {
    j["id"].as_str().unwrap().to_string()
}

fn restore(s3: &S3, d: &Path, url: &str, id: &str, out: &str) -> Vec<u8> {
    s3.ok(d, &["-q", "restore", url, "--id", id, "--out", out]);
    std::fs::read(d.join(out)).unwrap()
}

/// The object keys a store under `prefix` must hold for these images: one per distinct non-zero
/// 64 KiB block, named by its BLAKE3.
fn expected_objects(prefix: &str, images: &[&[u8]]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for img in images {
        for b in img.chunks(CHUNK as usize) {
            if b.iter().any(|&x| x != 0) {
                let h = blake3::hash(b).to_hex().to_string();
                keys.insert(format!("{prefix}/chunks/{}/{h}", &h[..2]));
            }
        }
    }
    keys
}

fn ids_listed(s3: &S3, d: &Path, url: &str) -> Vec<String> {
    let v = json(&s3.ok(d, &["backups", "list", url, "--json"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn full_then_incremental_backups_restore_byte_for_byte() {
    let Some(s3) = S3::new("roundtrip") else {
        return;
    };
    let s = Scratch::new("s3-roundtrip");
    let d = s.path();
    let url = s3.url("pre");
    volume(d, "v", 1);
    snapshot(d, "v", "s1");
    let full = backup(&s3, d, "v/s1", &url, None);
    let img1 = image(d, "v/s1");
    // The hole of the sparse origin is neither read nor stored.
    assert_eq!(full["bytes_read"], DATA);
    assert_eq!(full["chunks"], BLOCKS);
    assert_eq!(full["chunks_uploaded"], BLOCKS);
    assert!(full["bytes_uploaded"].as_u64().unwrap() >= DATA); // noise does not compress
    assert_eq!(restore(&s3, d, &url, &id(&full), "full.img"), img1);

    // 1 % of the chunks rewritten (3 of 256, one of them in the hole), then a new snapshot.
    for (i, c) in [5u64, 40, 250].iter().enumerate() {
        write(d, "v", c * CHUNK, &noise(100 + i as u64, CHUNK));
    }
    snapshot(d, "v", "s2");
    let inc = backup(&s3, d, "v/s2", &url, Some(&id(&full)));
    assert_eq!(inc["base"], id(&full));
    assert_eq!(inc["bytes_read"], 3 * CHUNK, "{inc}");
    assert_eq!(inc["chunks_uploaded"], 3);
    assert!(inc["bytes_uploaded"].as_u64().unwrap() <= 3 * CHUNK + 1024);
    assert_eq!(inc["chunks"], BLOCKS + 1);
    let img2 = image(d, "v/s2");
    assert_ne!(img1, img2);
    assert_eq!(restore(&s3, d, &url, &id(&inc), "inc.img"), img2);
    // The base still restores as it was.
    assert_eq!(restore(&s3, d, &url, &id(&full), "full2.img"), img1);
    // Into a new managed volume, and onward from there.
    s3.ok(
        d,
        &["-q", "restore", &url, "--id", &id(&inc), "--volume", "w"],
    );
    assert_eq!(
        ok(
            d,
            &["read", "w", "--offset", "0", "--len", &VOL.to_string()]
        ),
        img2
    );

    let out = s3.ok(d, &["backups", "verify", &url]);
    assert!(out.contains("verified 2 backup"), "{out}");
    let list = json(&s3.ok(d, &["backups", "list", &url, "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["base"], id(&full));
    assert_eq!(list[1]["volume"], "v");
    assert_eq!(list[1]["size"], VOL);
    assert_eq!(list[1]["new_bytes"], inc["bytes_uploaded"]);
    // Exactly one object per distinct data block of the two snapshots.
    assert_eq!(
        s3.keys("pre/chunks/"),
        expected_objects("pre", &[&img1, &img2])
    );
}

#[test]
fn prune_keeps_exactly_what_the_kept_backups_need() {
    let Some(s3) = S3::new("prune") else {
        return;
    };
    let s = Scratch::new("s3-prune");
    let d = s.path();
    let url = s3.url("p");
    volume(d, "v", 2);
    snapshot(d, "v", "a");
    let a = backup(&s3, d, "v/a", &url, None);
    write(d, "v", 0, &noise(20, 2 * MIB));
    snapshot(d, "v", "b");
    let b = backup(&s3, d, "v/b", &url, Some(&id(&a)));
    write(d, "v", 4 * MIB, &noise(21, MIB));
    snapshot(d, "v", "c");
    let c = backup(&s3, d, "v/c", &url, Some(&id(&b)));
    let img_b = image(d, "v/b");
    let img_c = image(d, "v/c");
    let before = s3.keys("p/chunks/");
    assert_eq!(before.len() as u64, BLOCKS + 32 + 16);

    // --keep 0 is refused, and changes nothing.
    s3.fails(d, &["backups", "prune", &url, "--keep", "0"]);
    assert_eq!(ids_listed(&s3, d, &url).len(), 3);

    // The default grace period keeps young unreferenced objects: only the manifest goes.
    let out = s3.ok(d, &["backups", "prune", &url, "--keep", "2"]);
    assert!(out.contains(&format!("dropped backup {}", id(&a))), "{out}");
    assert_eq!(ids_listed(&s3, d, &url), vec![id(&b), id(&c)]);
    assert_eq!(s3.keys("p/chunks/"), before);

    // Without it: exactly the objects of b and c stay.
    s3.ok(
        d,
        &["backups", "prune", &url, "--keep", "2", "--grace", "0"],
    );
    assert_eq!(
        s3.keys("p/chunks/"),
        expected_objects("p", &[&img_b, &img_c])
    );
    s3.ok(
        d,
        &["backups", "prune", &url, "--keep", "1", "--grace", "0"],
    );
    assert_eq!(ids_listed(&s3, d, &url), vec![id(&c)]);
    assert_eq!(s3.keys("p/chunks/"), expected_objects("p", &[&img_c]));
    s3.ok(d, &["backups", "verify", &url]);
    assert_eq!(restore(&s3, d, &url, &id(&c), "c.img"), img_c);
    assert!(s3.keys("p/locks/").is_empty(), "locks left behind");
}

#[test]
fn prune_deletes_no_object_while_a_backup_runs() {
    let Some(s3) = S3::new("prune-busy") else {
        return;
    };
    let s = Scratch::new("s3-prune-busy");
    let d = s.path();
    let url = s3.url("q");
    volume(d, "v", 3);
    snapshot(d, "v", "a");
    backup(&s3, d, "v/a", &url, None);
    write(d, "v", 0, &noise(30, DATA));
    snapshot(d, "v", "b");
    backup(&s3, d, "v/b", &url, None);
    let before = s3.keys("q/chunks/");
    // A backup in progress (its lock, freshly written): the objects of a may be reused by it.
    s3.put("q/locks/backup-20990101-000000-000-running", b"{}");
    let out = s3.ok(
        d,
        &["backups", "prune", &url, "--keep", "1", "--grace", "0"],
    );
    assert!(out.contains("no object deleted"), "{out}");
    assert_eq!(ids_listed(&s3, d, &url).len(), 1);
    assert_eq!(s3.keys("q/chunks/"), before);
    // Once it is gone, the sweep happens.
    s3.delete("q/locks/backup-20990101-000000-000-running");
    s3.ok(
        d,
        &["backups", "prune", &url, "--keep", "1", "--grace", "0"],
    );
    assert_eq!(s3.keys("q/chunks/").len() as u64, BLOCKS);
}

#[test]
fn damaged_swapped_or_deleted_objects_are_found_and_never_restored() {
    let Some(s3) = S3::new("damage") else {
        return;
    };
    let s = Scratch::new("s3-damage");
    let d = s.path();
    let url = s3.url("x");
    volume(d, "v", 4);
    snapshot(d, "v", "s");
    let b = id(&backup(&s3, d, "v/s", &url, None));
    s3.ok(d, &["backups", "verify", &url, "--id", &b]);
    let keys: Vec<String> = s3.keys("x/chunks/").into_iter().collect();

    // One flipped byte in an object.
    let good0 = s3.get(&keys[0]);
    let mut bad = good0.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    s3.put(&keys[0], &bad);
    let err = s3.damaged(d, &["backups", "verify", &url]);
    assert!(
        err.contains(&keys[0]["x/".len()..]) && err.contains("damaged"),
        "{err}"
    );
    let err = s3.damaged(d, &["restore", &url, "--id", &b, "--out", "r.img"]);
    assert!(err.contains("damaged"), "{err}");
    assert!(!d.join("r.img").exists() && !d.join("r.img.cowsnap-tmp").exists());
    s3.put(&keys[0], &good0);
    s3.ok(d, &["backups", "verify", &url]);

    // Another block's valid object under this name: it decompresses, but is not these bytes.
    s3.put(&keys[0], &s3.get(&keys[1]));
    let err = s3.damaged(d, &["backups", "verify", &url]);
    assert!(err.contains("does not match"), "{err}");
    s3.damaged(d, &["restore", &url, "--id", &b, "--out", "r.img"]);
    assert!(!d.join("r.img").exists());
    s3.put(&keys[0], &good0);

    // A deleted object; restore into a volume leaves no volume.
    s3.delete(&keys[2]);
    let err = s3.damaged(d, &["backups", "verify", &url]);
    assert!(err.contains("missing"), "{err}");
    let err = s3.damaged(d, &["restore", &url, "--id", &b, "--volume", "w"]);
    assert!(err.contains("missing"), "{err}");
    assert!(!d.join("w").exists());
    s3.damaged(d, &["restore", &url, "--id", &b, "--out", "r.img"]);
    assert!(!d.join("r.img").exists());

    // A damaged manifest: list, verify, restore and prune refuse; prune deletes nothing.
    let m = format!("x/backups/{b}");
    let good = s3.get(&m);
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    s3.put(&m, &bad);
    let before = s3.keys("x/");
    s3.damaged(d, &["backups", "list", &url]);
    s3.damaged(d, &["backups", "verify", &url]);
    s3.damaged(d, &["restore", &url, "--id", &b, "--out", "r.img"]);
    s3.damaged(
        d,
        &["backups", "prune", &url, "--keep", "1", "--grace", "0"],
    );
    let after: BTreeSet<String> = s3
        .keys("x/")
        .into_iter()
        .filter(|k| !k.starts_with("x/locks/"))
        .collect();
    assert_eq!(after, before);
    assert!(!d.join("r.img").exists());
}

/// Kills a backup in `block`-byte blocks of a volume with `blocks` of them holding data after its
/// 40th upload, then reruns it.
fn killed_then_resumed(tag: &str, block: u64, blocks: u64) {
    let Some(s3) = S3::new(tag) else {
        return;
    };
    let s = Scratch::new(tag);
    let d = s.path();
    let url = s3.url("k");
    ok(
        d,
        &["-q", "create", "v", "--size", "16M", "--chunk-size", "64K"],
    );
    write(d, "v", 0, &noise(5, blocks * block));
    snapshot(d, "v", "s");
    let block = block.to_string();
    let args = [
        "-q",
        "backup",
        "v/s",
        "--to",
        &url,
        "--json",
        "--block-size",
        &block,
    ];
    // Dies (SIGABRT, as abruptly as SIGKILL) after its 40th upload.
    let o = s3.run(d, &args, &[("COWSNAP_TEST_ABORT_AFTER_PUTS", "40")]);
    assert!(!o.status.success());
    assert!(
        ids_listed(&s3, d, &url).is_empty(),
        "a killed backup is visible"
    );
    let err = s3.fails(
        d,
        &[
            "backups",
            "verify",
            &url,
            "--id",
            "20000101-000000-000-00000000",
        ],
    );
    assert!(err.contains("no backup"), "{err}");
    let stored = s3.keys("k/chunks/").len() as u64;
    assert!(
        (40..blocks).contains(&stored),
        "{stored} objects after the kill"
    );

    let j = json(&s3.ok(d, &args));
    assert_eq!(j["chunks"], blocks);
    assert_eq!(j["chunks_uploaded"], blocks - stored, "{j}");
    assert_eq!(ids_listed(&s3, d, &url), vec![id(&j)]);
    assert_eq!(restore(&s3, d, &url, &id(&j), "r.img"), image(d, "v/s"));
}

#[test]
fn a_killed_backup_leaves_no_backup_and_its_rerun_uploads_only_the_rest() {
    // 100 blocks: each object is looked for with HEAD.
    killed_then_resumed("killed", 64 << 10, 100);
}

#[test]
fn a_killed_large_backup_resumes_from_a_listing_of_the_store() {
    // 1100 blocks: the stored objects are listed once instead.
    killed_then_resumed("killed-list", 4096, 1100);
}

#[test]
fn two_volumes_sharing_data_store_it_once() {
    let Some(s3) = S3::new("dedup") else {
        return;
    };
    let s = Scratch::new("s3-dedup");
    let d = s.path();
    let url = s3.url("dd");
    volume(d, "a", 6);
    volume(d, "b", 6);
    // b differs from a in the second half of its data.
    write(d, "b", DATA / 2, &noise(60, DATA / 2));
    snapshot(d, "a", "s");
    snapshot(d, "b", "s");
    let ja = backup(&s3, d, "a/s", &url, None);
    let jb = backup(&s3, d, "b/s", &url, None);
    assert_eq!(ja["chunks_uploaded"], BLOCKS);
    assert_eq!(jb["chunks_uploaded"], BLOCKS / 2);
    assert_eq!(s3.keys("dd/chunks/").len() as u64, BLOCKS + BLOCKS / 2);
    assert_eq!(restore(&s3, d, &url, &id(&jb), "b.img"), image(d, "b/s"));
    // Pruning keeps each volume's newest backup: neither volume loses its only one.
    s3.ok(
        d,
        &["backups", "prune", &url, "--keep", "1", "--grace", "0"],
    );
    assert_eq!(ids_listed(&s3, d, &url).len(), 2);
    assert_eq!(s3.keys("dd/chunks/").len() as u64, BLOCKS + BLOCKS / 2);
}

#[test]
fn incremental_backups_refuse_a_base_they_cannot_trust() {
    let Some(s3) = S3::new("base") else {
        return;
    };
    let s = Scratch::new("s3-base");
    let d = s.path();
    let url = s3.url("b");
    volume(d, "v", 7);
    volume(d, "other", 8);
    snapshot(d, "v", "s1");
    snapshot(d, "other", "o1");
    let base = id(&backup(&s3, d, "v/s1", &url, None));
    let other = id(&backup(&s3, d, "other/o1", &url, None));
    snapshot(d, "v", "s2");
    // A backup of another volume.
    let err = s3.fails(d, &["backup", "v/s2", "--to", &url, "--base", &other]);
    assert!(err.contains("another volume"), "{err}");
    // No such backup; not an id at all.
    s3.fails(
        d,
        &[
            "backup",
            "v/s2",
            "--to",
            &url,
            "--base",
            "20000101-000000-000-00000000",
        ],
    );
    s3.fails(d, &["backup", "v/s2", "--to", &url, "--base", "../x"]);
    // A base whose snapshot was removed, or removed and made again under its name: its
    // exception table no longer says what changed since the base.
    ok(d, &["-q", "remove", "v/s1"]);
    let err = s3.fails(d, &["backup", "v/s2", "--to", &url, "--base", &base]);
    assert!(err.contains("no longer exists"), "{err}");
    snapshot(d, "v", "s1");
    let err = s3.fails(d, &["backup", "v/s2", "--to", &url, "--base", &base]);
    assert!(err.contains("not the one"), "{err}");
    // None of these made a backup.
    assert_eq!(ids_listed(&s3, d, &url), {
        let mut v = vec![base.clone(), other.clone()];
        v.sort();
        v
    });
    // Other refusals: a bad URL, a missing store, a missing id, restore into a non-empty
    // directory (left as it was), the old and new forms of backup mixed.
    s3.fails(d, &["backup", "v/s2", "--to", "ftp://x/y"]);
    s3.fails(d, &["backups", "list", "file:///nonexistent-cowsnap-store"]);
    assert!(!Path::new("/nonexistent-cowsnap-store").exists());
    s3.fails(
        d,
        &[
            "restore",
            &url,
            "--id",
            "20000101-000000-000-00000000",
            "--out",
            "r.img",
        ],
    );
    std::fs::create_dir(d.join("full")).unwrap();
    std::fs::write(d.join("full/keep.txt"), b"mine").unwrap();
    s3.fails(d, &["restore", &url, "--id", &base, "--volume", "full"]);
    assert_eq!(std::fs::read(d.join("full/keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(d.join("full")).unwrap().count(), 1);
    let o = s3.run(d, &["backup", "v/s2", "out.img", "--to", &url], &[]);
    assert_eq!(o.status.code(), Some(2), "clap usage error expected");
    assert!(!d.join("out.img").exists());
}

#[test]
fn file_urls_work_the_same() {
    let s = Scratch::new("file-store");
    let d = s.path();
    let store = d.join("store");
    let url = format!("file://{}", store.display());
    volume(d, "v", 9);
    snapshot(d, "v", "s1");
    let full = json(&ok_str(
        d,
        &[
            "backup",
            "v/s1",
            "--to",
            &url,
            "--json",
            "--block-size",
            "64K",
        ],
    ));
    write(d, "v", 3 * CHUNK, &noise(90, CHUNK));
    snapshot(d, "v", "s2");
    let inc = json(&ok_str(
        d,
        &[
            "backup",
            "v/s2",
            "--to",
            &url,
            "--json",
            "--base",
            &id(&full),
        ],
    ));
    assert_eq!(inc["bytes_read"], CHUNK);
    ok(
        d,
        &["-q", "restore", &url, "--id", &id(&inc), "--out", "r.img"],
    );
    assert_eq!(std::fs::read(d.join("r.img")).unwrap(), image(d, "v/s2"));
    // The plain form of backup still writes an image file with its checksums.
    ok(d, &["-q", "backup", "v/s2", "plain.img"]);
    assert_eq!(
        std::fs::read(d.join("plain.img")).unwrap(),
        image(d, "v/s2")
    );
    assert!(d.join("plain.img.sums").exists());
    // A deleted object is caught here too.
    let obj = walk(&store.join("chunks"))[0].clone();
    std::fs::remove_file(&obj).unwrap();
    let o = run(d, &["backups", "verify", &url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("missing") && err.contains("verify failed"),
        "{err}"
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out.sort();
    out
}

/// A block device is written in place, zeros included (a device is not sparse: the hole of the
/// volume must overwrite what the device held), and the bytes past the image are left alone.
#[test]
fn restore_onto_a_block_device_writes_every_byte() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped (loop devices): needs root");
        return;
    }
    let s = Scratch::new("restore-blk");
    let d = s.path();
    let url = format!("file://{}", d.join("store").display());
    volume(d, "v", 11);
    snapshot(d, "v", "s");
    let id = json(&ok_str(d, &["backup", "v/s", "--to", &url, "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let disk = d.join("disk");
    std::fs::write(&disk, vec![0x5a; (VOL + MIB) as usize]).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show", disk.to_str().unwrap()])
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!(
            "skipped (loop devices): losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    let dev = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let r = run(d, &["-q", "restore", &url, "--id", &id, "--out", &dev]);
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got = std::fs::read(&disk).unwrap();
    assert!(
        got[..VOL as usize] == image(d, "v/s")[..],
        "image on the device"
    );
    assert!(
        got[VOL as usize..].iter().all(|&b| b == 0x5a),
        "past the image"
    );
}
