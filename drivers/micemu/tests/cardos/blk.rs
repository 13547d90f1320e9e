//! vda: the card's shell reads, writes and checksums a disk whose image
//! the host serves (header, data, status through the ring), the host sees
//! the bytes at the right offsets, capacity changes are announced, and the
//! host's error statuses reach the user.

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::host::{Console, Dev, Disk, Fleet, blk_block, booted};

const SECTORS: u64 = 2048;

fn image() -> Vec<u8> {
    (0..SECTORS as usize * 512)
        .map(|i| (i * 31 % 251) as u8)
        .collect()
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn disk_card() -> (Fleet, Console, Dev) {
    let fleet = Fleet::start(1);
    let (con, [disk]) = booted(&fleet, [blk_block(SECTORS)]);
    (fleet, con, disk)
}

#[test]
fn the_card_writes_reads_and_checksums_its_disk() {
    let (fleet, mut con, disk) = disk_card();
    let log = fleet.wait_log(0, "[vda]");
    assert!(
        log.iter()
            .any(|l| l == "virtio_blk virtio1: [vda] 2048 512-byte logical blocks (1.04 MB/1.00 MiB)"),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l == " vda: unknown partition table"));
    let disk = Disk::serve(disk, image());
    // The serial request is the driver's first; once the host served it
    // (its completion is queued before anything typed after), it is known.
    let start = std::time::Instant::now();
    while !disk.served.lock().unwrap().contains(&8) {
        assert!(start.elapsed() < crate::host::WAIT, "GET_ID never served");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let info = con.run("blk info");
    assert!(
        info.starts_with("vda: 2048 sectors of 512 bytes (1.04 MB/1.00 MiB)\r\n"),
        "{info}"
    );
    assert!(info.contains("serial: micemu-test-disk\r\n"), "{info}");
    assert!(
        info.contains(" rw flush seg_max, seg_max 126, request size 64 KiB"),
        "{info}"
    );
    // A write lands at sector 100 of the host's image, zero-padded, and is
    // flushed.
    assert_eq!(
        con.run("blk write 100 hello disk"),
        "wrote 10 bytes (1 sectors) to vda at sector 100, flushed\r\n"
    );
    {
        let img = disk.image.lock().unwrap();
        assert_eq!(&img[51_200..51_210], b"hello disk");
        assert!(img[51_210..51_712].iter().all(|&b| b == 0));
        assert_eq!(img[51_199], image()[51_199]);
        assert_eq!(img[51_712], image()[51_712]);
    }
    let served = disk.served.lock().unwrap().clone();
    assert_eq!(&served[served.len() - 2..], &[1, 4], "a write then a flush");
    // It reads back through the ring, shown as a hex dump.
    let dump = con.run("blk read 100");
    assert!(
        dump.starts_with(
            "0000c800  68 65 6c 6c 6f 20 64 69  73 6b 00 00 00 00 00 00  |hello disk......|\r\n"
        ),
        "{dump}"
    );
    assert_eq!(dump.lines().count(), 32);
    // The checksum of the whole disk matches the host's.
    let want = hex(&Sha256::digest(&*disk.image.lock().unwrap()));
    assert_eq!(con.run("blk sha256"), format!("{want}  /dev/vda\r\n"));
    let first = hex(&Sha256::digest(&disk.image.lock().unwrap()[..100 * 512]));
    assert_eq!(
        con.run("blk sha256 100"),
        format!("{first}  /dev/vda (first 100 sectors)\r\n")
    );
    let bench = con.run("blk bench 1");
    assert!(bench.starts_with("vda: read 1.00 MiB in "), "{bench}");
    assert!(
        bench.contains(" 16 requests of up to 64 KiB, 8 in flight"),
        "{bench}"
    );
    // Out of range, or no such disk.
    assert_eq!(
        con.run("blk read 2048"),
        "blk: beyond the end of vda (2048 sectors)\r\n"
    );
    assert_eq!(con.run("blk vdb info"), "blk: vdb: no such disk\r\n");
    let stats = con.run("blk info");
    assert!(
        stats.contains("1 writes (512 bytes), 1 flushes, 0 errors"),
        "{stats}"
    );
}

#[test]
fn a_capacity_change_is_announced() {
    let (fleet, mut con, disk) = disk_card();
    let bigger = mic_core::abi::virtio::VirtioBlkConfig {
        capacity: 2 * SECTORS,
        seg_max: 126,
        ..Default::default()
    };
    disk.file.config_change(&bigger.to_bytes()).unwrap();
    fleet.wait_log(
        0,
        "virtio_blk virtio1: [vda] new size: 4096 512-byte logical blocks (2.09 MB/2.00 MiB)",
    );
    assert!(con.run("blk info").starts_with("vda: 4096 sectors"));
}

#[test]
fn the_hosts_errors_reach_the_user() {
    let (_fleet, mut con, mut disk) = disk_card();
    // The serial request first: the host does not support it.
    disk.wait_until("GET_ID", |d| d.pending(0));
    let mut hdr = [0u8; 16];
    disk.copy(0, &mut hdr, false);
    disk.copy(0, &mut [0u8; 20], false);
    disk.copy(0, &mut [mic_core::abi::virtio::VIRTIO_BLK_S_UNSUPP], true);
    // A read the host fails.
    con.dev.send(b"blk read 5\r");
    disk.wait_until("the read", |d| d.pending(0));
    disk.copy(0, &mut hdr, false);
    disk.copy(0, &mut [0u8; 512], false);
    disk.copy(0, &mut [mic_core::abi::virtio::VIRTIO_BLK_S_IOERR], true);
    let out = con.expect(&con.prompt());
    assert!(
        out.ends_with("blk: vda: read of sector 5: I/O error\r\nroot@mic0:~# "),
        "{out:?}"
    );
    // A host that completes a request without writing its status.
    con.dev.send(b"blk read 6\r");
    disk.wait_until("the read", |d| d.pending(0));
    disk.copy(0, &mut hdr, true);
    let out = con.expect(&con.prompt());
    assert!(
        out.ends_with("blk: vda: read of sector 6: no status from the host\r\nroot@mic0:~# "),
        "{out:?}"
    );
    let info = con.run("blk info");
    assert!(info.contains("serial: (none)"), "{info}");
    assert!(
        info.contains("0 reads (0 bytes), 0 writes (0 bytes), 0 flushes, 2 errors"),
        "{info}"
    );
}
