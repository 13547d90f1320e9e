//! The raw image behind a card's disk: a regular file (or a block device),
//! mapped and copied with `memcpy` ([`super::mapping`]), or read and
//! written with `pread`/`pwrite` where it cannot be mapped. Either way an
//! image that shrinks under mpssd gives the card an I/O error, never the
//! daemon SIGBUS. A write is in the page cache before the card hears OK
//! (so it survives `kill -9` of mpssd and of micemu); a flush is
//! `fdatasync` (which writes back what the mapping dirtied too).

use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use mic_core::abi::virtio::{VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE};

use super::BlockError;
use super::mapping::Mapped;
use super::request::Disk;

/// An open image.
#[derive(Debug)]
pub struct Image {
    file: File,
    /// The image's `size` bytes mapped (`None`: `pread`/`pwrite`).
    map: Option<Mapped>,
    path: PathBuf,
    /// Bytes exposed: the file's size rounded down to whole sectors.
    size: u64,
    read_only: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
}

impl Image {
    /// Opens `path` (read-write unless `read_only`) with `serial` for
    /// GET_ID (`None`: the file's name, cut at 20 bytes).
    pub fn open(path: &Path, read_only: bool, serial: Option<&str>) -> Result<Self, BlockError> {
        let err = |what: &'static str| {
            let path = path.to_owned();
            move |source| BlockError::Image { path, what, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc_o_cloexec())
            .open(path)
            .map_err(err("opening"))?;
        let meta = file.metadata().map_err(err("reading the size of"))?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(BlockError::NotAnImage {
                path: path.to_owned(),
            });
        }
        let len = file.seek(SeekFrom::End(0)).map_err(err("reading the size of"))?;
        let size = len / VIRTIO_BLK_SECTOR_SIZE * VIRTIO_BLK_SECTOR_SIZE;
        if size == 0 {
            return Err(BlockError::TooSmall {
                path: path.to_owned(),
                len,
            });
        }
        if size != len {
            log::warn!(
                target: "mpssd",
                "{}: {len} bytes is not whole sectors; the last {} bytes are not on the disk",
                path.display(),
                len - size
            );
        }
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        let name = serial.map_or_else(
            || {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            },
            str::to_owned,
        );
        let n = name.len().min(VIRTIO_BLK_ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        let map = Mapped::new(&file, size, !read_only);
        if map.is_none() {
            log::debug!(target: "mpssd", "{}: not mapped; read and written with pread/pwrite", path.display());
        }
        Ok(Self {
            file,
            map,
            path: path.to_owned(),
            size,
            read_only,
            serial: id,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 512-byte sectors.
    #[must_use]
    pub fn sectors(&self) -> u64 {
        self.size / VIRTIO_BLK_SECTOR_SIZE
    }
}

fn libc_o_cloexec() -> i32 {
    nix::fcntl::OFlag::O_CLOEXEC.bits()
}

impl Disk for Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn serial(&self) -> [u8; VIRTIO_BLK_ID_BYTES] {
        self.serial
    }

    /// A short read (the file shrank) is an error, not zeros.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        match &self.map {
            Some(m) if m.usable() => m.read(buf, off),
            _ => self.file.read_exact_at(buf, off),
        }
    }

    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match &self.map {
            Some(m) if m.usable() => m.write(buf, off),
            _ => self.file.write_all_at(buf, off),
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_serials_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-rather-long-image-name.img");
        std::fs::write(&p, vec![0u8; 4096 + 100]).unwrap();
        let img = Image::open(&p, false, None).unwrap();
        assert_eq!(img.sectors(), 8);
        assert_eq!(&img.serial(), b"a-rather-long-image-");
        let img = Image::open(&p, true, Some("disk0")).unwrap();
        assert!(img.read_only());
        assert_eq!(&img.serial()[..6], b"disk0\0");
        img.write_at(b"x", 0).unwrap_err();
        let e = Image::open(&dir.path().join("missing.img"), false, None).unwrap_err();
        assert!(e.to_string().starts_with("opening "), "{e}");
        assert!(matches!(
            Image::open(dir.path(), true, None),
            Err(BlockError::NotAnImage { .. })
        ));
        let tiny = dir.path().join("tiny.img");
        std::fs::write(&tiny, b"x").unwrap();
        assert!(matches!(
            Image::open(&tiny, false, None),
            Err(BlockError::TooSmall { len: 1, .. })
        ));
    }

    #[test]
    fn a_shrunk_image_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let img = Image::open(&p, false, None).unwrap();
        let mut buf = vec![0u8; 4096];
        img.read_at(&mut buf, 4096).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1000)
            .unwrap();
        assert!(img.read_at(&mut buf, 4096).is_err());
        img.write_at(&[1; 512], 0).unwrap();
        img.flush().unwrap();
    }
}
