//! The ceiling for `benches/backup.sh`: the same bytes as one object, through the same client
//! (`object_store` S3, one PUT / one GET), so that backup and restore throughput can be compared
//! with what the server and client do at best.
//!
//! `cargo run --release -p cowsnap-cli --example store_ceiling -- put s3://bucket/key FILE` or
//! `... -- get s3://bucket/key OUT` (OUT is written and fsynced, as restore does). Uses the usual
//! AWS_* environment. Prints `seconds<TAB>MiB/s`.

use std::io::Write;
use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, op, url, file] = &args[..] else {
        eprintln!("usage: store_ceiling put|get s3://bucket/key FILE");
        std::process::exit(2);
    };
    let rest = url.strip_prefix("s3://").expect("an s3:// URL");
    let (bucket, key) = rest.split_once('/').expect("s3://bucket/key");
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .expect("S3 client");
    let key = Path::parse(key).expect("key");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (start, bytes) = match op.as_str() {
        "put" => {
            let data = std::fs::read(file).expect("read FILE");
            let n = data.len();
            let start = Instant::now();
            rt.block_on(store.put(&key, PutPayload::from(data)))
                .expect("put");
            (start, n)
        }
        "get" => {
            let start = Instant::now();
            let data = rt
                .block_on(async { store.get(&key).await?.bytes().await })
                .expect("get");
            let mut f = std::fs::File::create(file).expect("create OUT");
            f.write_all(&data).expect("write OUT");
            f.sync_all().expect("fsync OUT");
            (start, data.len())
        }
        _ => panic!("put or get"),
    };
    let s = start.elapsed().as_secs_f64();
    println!("{s:.3}\t{:.1}", bytes as f64 / (1 << 20) as f64 / s);
}
