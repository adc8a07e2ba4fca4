//! The README's demo: a 64 MiB in-memory volume, a snapshot, writes, and `lvs`-style status.
//! Run with `cargo run -p cowsnap-core --example demo`.

use cowsnap_core::{ChunkSize, MemDevice, SnapshotOptions, SnapshotStatus, Volume};

fn lvs_row(name: &str, size: u64, st: &SnapshotStatus) {
    let pct = st
        .data_percent()
        .map_or_else(|| "invalid".to_string(), |p| format!("{p:.2}"));
    println!(
        "  {name:<8} {:<10} {:>7} {:<8} {:>7}   dmsetup: {}",
        st.lvs_attr(),
        format!("{}k", size / 1024),
        "origin",
        pct,
        st.dm_status()
    );
}

fn main() -> Result<(), cowsnap_core::Error> {
    let mib = 1u64 << 20;
    let mut vol = Volume::new(MemDevice::new((64 * mib) as usize));
    println!("origin: 64 MiB in memory; writing a 'database' of 1 MiB ...");
    vol.write_at(0, &vec![b'A'; mib as usize])?;

    let opts = SnapshotOptions {
        chunk_size: ChunkSize::new(4096)?,
        ..Default::default()
    };
    let cow_size = 512 * 1024;
    let snap = vol.create_snapshot(MemDevice::new(cow_size), opts)?;
    println!("lvcreate -s -L 512k: snapshot taken (no data copied)");
    println!("  LV       Attr        LSize   Origin   Data%");
    lvs_row("snap", cow_size as u64, &vol.snapshot_status(snap)?);

    println!("application keeps writing 'B' over the first 256 KiB of the origin ...");
    vol.write_at(0, &vec![b'B'; 256 * 1024])?;
    lvs_row("snap", cow_size as u64, &vol.snapshot_status(snap)?);

    let mut now = [0u8; 8];
    let mut then = [0u8; 8];
    vol.read_at(0, &mut now)?;
    vol.snapshot_read_at(snap, 0, &mut then)?;
    println!(
        "origin reads {:?}, snapshot still reads {:?}",
        String::from_utf8_lossy(&now),
        String::from_utf8_lossy(&then)
    );
    assert_eq!(then, [b'A'; 8]);

    println!("writing 1 MiB more than the COW can hold: the snapshot overflows ...");
    vol.write_at(0, &vec![b'C'; mib as usize])?;
    lvs_row("snap", cow_size as u64, &vol.snapshot_status(snap)?);
    match vol.snapshot_read_at(snap, 0, &mut then) {
        Err(e) => println!("reading the snapshot now fails loudly: {e}"),
        Ok(()) => unreachable!("an overflowed snapshot must not be readable"),
    }
    vol.delete_snapshot(snap)?;
    println!("lvremove: snapshot deleted");
    Ok(())
}
