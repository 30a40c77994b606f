//! Document files written around the page cache (`O_DIRECT`).
//!
//! A document is written once and read again rarely, so its pages in the
//! page cache only cost: on the machines the benchmark runs on, the kernel's
//! copy into pages it has to allocate ran at about 330 MB/s (`perf`, 1 GiB
//! filing: 3.1 s of the origin's CPU in `copy_folio_from_iter_atomic`), and
//! `dd` wrote 1 GiB with 1.1–1.4 s of CPU through the cache against
//! 0.13–0.15 s with `O_DIRECT`. Here whole 4 KiB blocks go from an aligned
//! buffer of this process straight to the device; the last block of a file
//! is padded with zeros and the file then cut at its real length. A file
//! system that refuses `O_DIRECT` (at open or at a write), or an offset off a
//! block boundary, gets ordinary writes instead: the same bytes, slower.
//! Durability is unchanged: the caller still fsyncs (for the length, and the
//! device's cache).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// The alignment `O_DIRECT` asks of offsets, lengths and buffers: the
/// largest logical block size in use (4 KiB sectors), which covers 512.
pub const BLOCK: usize = 4096;

/// Bytes one aligned buffer carries per write or read. Every upload and
/// every chunk being read or written holds one while its call lasts (16
/// uploads of 1 MiB at once in the benchmark): 1 MiB buffers took the
/// origin's peak RSS from 69 to 86 MiB there.
const BOUNCE: usize = 256 << 10;

/// Aligned buffers kept for the next call: enough for the writers and
/// readers that run at once, and bounded (2 MiB).
const KEPT_BOUNCES: usize = 8;

static BOUNCES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An aligned buffer of [`BOUNCE`] bytes, from the pool and back to it.
struct Bounce(Vec<u8>);

impl Bounce {
    fn take() -> Self {
        let kept = BOUNCES.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Self(kept.unwrap_or_else(|| vec![0u8; BOUNCE + BLOCK]))
    }

    /// The aligned [`BOUNCE`] bytes inside.
    fn aligned(&mut self) -> &mut [u8] {
        let start = self.0.as_ptr().align_offset(BLOCK);
        &mut self.0[start..start + BOUNCE]
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        let mut pool = BOUNCES.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < KEPT_BOUNCES {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

/// An open document file, and whether it still bypasses the page cache.
#[derive(Debug)]
struct Handle {
    file: File,
    direct: bool,
}

impl Handle {
    /// Opens `path` with `options` and `O_DIRECT`, or without it if the file
    /// system refuses it.
    fn open(options: &mut OpenOptions, path: &Path) -> io::Result<Self> {
        match options
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path)
        {
            Ok(file) => Ok(Self { file, direct: true }),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(Self {
                file: options.custom_flags(0).open(path)?,
                direct: false,
            }),
            Err(e) => Err(e),
        }
    }

    /// Whether I/O at `offset` may bypass the cache; off a block boundary
    /// the file switches to ordinary I/O for good.
    fn aligned_at(&mut self, offset: u64) -> io::Result<bool> {
        if self.direct && !offset.is_multiple_of(BLOCK as u64) {
            self.set_buffered()?;
        }
        Ok(self.direct)
    }

    /// Turns `O_DIRECT` off: ordinary reads and writes from here on.
    fn set_buffered(&mut self) -> io::Result<()> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&self.file, FcntlArg::F_GETFL)?);
        fcntl(&self.file, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
        self.direct = false;
        Ok(())
    }
}

/// A document file open for writing, around the page cache when it can be.
#[derive(Debug)]
pub struct DirectFile(Handle);

impl DirectFile {
    /// Opens `path` with `options` and `O_DIRECT`; if the file system refuses
    /// it, without (ordinary writes).
    pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<Self> {
        Handle::open(options, path).map(Self)
    }

    pub fn file(&self) -> &File {
        &self.0.file
    }

    /// Whether writes go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.0.direct
    }

    /// Writes the whole blocks at the head of `data` at `offset`; returns how
    /// many bytes it wrote (all of them when the writes are ordinary). The
    /// rest waits for more data or for [`DirectFile::write_end`].
    pub fn write_blocks(&mut self, offset: u64, data: &[u8]) -> io::Result<usize> {
        if !self.0.aligned_at(offset)? {
            self.0.file.write_all_at(data, offset)?;
            return Ok(data.len());
        }
        let whole = data.len() / BLOCK * BLOCK;
        self.write_direct(offset, &data[..whole], whole)?;
        Ok(whole)
    }

    /// Writes all of `data` at `offset` and makes it the end of the file
    /// (the last block's padding cut off).
    pub fn write_end(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if !self.0.aligned_at(offset)? {
            self.0.file.write_all_at(data, offset)?;
        } else {
            self.write_direct(offset, data, data.len().next_multiple_of(BLOCK))?;
        }
        self.0.file.set_len(end)
    }

    /// Writes `data` at the block boundary `offset` in `padded` bytes (a
    /// multiple of [`BLOCK`], zeros after the data).
    fn write_direct(&mut self, offset: u64, data: &[u8], padded: usize) -> io::Result<()> {
        let mut bounce = Bounce::take();
        let buffer = bounce.aligned();
        let mut done = 0;
        while done < padded {
            let n = (padded - done).min(BOUNCE);
            let from = &data[done.min(data.len())..(done + n).min(data.len())];
            buffer[..from.len()].copy_from_slice(from);
            buffer[from.len()..n].fill(0);
            let at = offset + done as u64;
            match self.0.file.write_all_at(&buffer[..n], at) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    // Accepted at open, refused at the write (an alignment
                    // this file system wants larger): ordinary writes from
                    // here on, this piece included.
                    self.0.set_buffered()?;
                    return self.0.file.write_all_at(&data[done.min(data.len())..], at);
                }
                Err(e) => return Err(e),
            }
            done += n;
        }
        Ok(())
    }
}

/// A document file read around the page cache when it can be.
#[derive(Debug)]
pub struct DirectReader(Handle);

impl DirectReader {
    /// Opens `path` for reading with `O_DIRECT`; if the file system refuses
    /// it, without.
    pub fn open(path: &Path) -> io::Result<Self> {
        Handle::open(OpenOptions::new().read(true), path).map(Self)
    }

    /// Reads exactly `buf.len()` bytes at `offset` (an error if the file
    /// ends first).
    pub fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let handle = &mut self.0;
        if !handle.aligned_at(offset)? {
            return handle.file.read_exact_at(buf, offset);
        }
        let mut bounce = Bounce::take();
        let aligned = bounce.aligned();
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(BOUNCE);
            let at = offset + done as u64;
            let mut got = 0;
            // Whole blocks are asked for; the file may end inside the last.
            while got < want {
                let n = match handle.file.read_at(
                    &mut aligned[got..want.next_multiple_of(BLOCK)],
                    at + got as u64,
                ) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file ended before the bytes asked for",
                        ));
                    }
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                        // Refused at the read: ordinary reads from here on.
                        handle.set_buffered()?;
                        buf[done..done + got].copy_from_slice(&aligned[..got]);
                        return handle
                            .file
                            .read_exact_at(&mut buf[done + got..], at + got as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                got += n;
                if got % BLOCK != 0 && got < want {
                    // A short read off a block boundary: the file ended.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before the bytes asked for",
                    ));
                }
            }
            buf[done..done + want].copy_from_slice(&aligned[..want]);
            done += want;
        }
        Ok(())
    }
}

impl Drop for DirectReader {
    fn drop(&mut self) {
        if !self.0.direct {
            // Read through the cache after all: its pages may go.
            super::blobs::drop_cached(&self.0.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> OpenOptions {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(false);
        options
    }

    /// A fresh directory beside the system's temporary files, removed when
    /// the test ends (passed or not).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("ecointegra-direct-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn doc(&self) -> std::path::PathBuf {
            self.0.join("doc")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn blocks_then_an_unaligned_end_leave_exactly_the_bytes_written() {
        let scratch = Scratch::new("blocks");
        let path = scratch.doc();
        let mut file = DirectFile::open(&mut options(), &path).unwrap();
        // Larger than one bounce buffer, and not a whole number of blocks.
        let data = pattern(BOUNCE + 3 * BLOCK + 123, 7);
        let head = file.write_blocks(0, &data[..BOUNCE + 100]).unwrap();
        if file.is_direct() {
            assert_eq!(head, BOUNCE, "only whole blocks go first");
        }
        file.write_end(head as u64, &data[head..]).unwrap();
        file.file().sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_write_at_an_unaligned_offset_falls_back_to_ordinary_writes() {
        let scratch = Scratch::new("unaligned");
        let path = scratch.doc();
        let mut file = DirectFile::open(&mut options(), &path).unwrap();
        file.write_end(0, b"hola ").unwrap();
        file.write_end(5, b"mundo").unwrap();
        assert!(!file.is_direct());
        let data = pattern(2 * BLOCK + 9, 3);
        file.write_end(10, &data).unwrap();
        let mut expected = b"hola mundo".to_vec();
        expected.extend_from_slice(&data);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn pieces_read_at_their_offsets_are_the_bytes_written() {
        let scratch = Scratch::new("read");
        let path = scratch.doc();
        let data = pattern(BOUNCE + 5 * BLOCK + 77, 9);
        std::fs::write(&path, &data).unwrap();
        let mut reader = DirectReader::open(&path).unwrap();
        let piece = 512 * 1024;
        let mut offset = 0;
        while offset < data.len() {
            let len = piece.min(data.len() - offset);
            let mut buf = vec![0u8; len];
            reader.read_exact_at(offset as u64, &mut buf).unwrap();
            assert!(buf == data[offset..offset + len], "piece at {offset}");
            offset += len;
        }
        // Larger than a bounce buffer at once, and off a block boundary.
        let mut all = vec![0u8; data.len()];
        reader.read_exact_at(0, &mut all).unwrap();
        assert!(all == data);
        let mut tail = vec![0u8; 100];
        reader.read_exact_at(10, &mut tail).unwrap();
        assert_eq!(tail, data[10..110]);
        // Past the end: an error, not zeros.
        let mut past = vec![0u8; 2 * BLOCK];
        let error = reader
            .read_exact_at(data.len() as u64 - BLOCK as u64, &mut past)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn rewriting_the_end_cuts_what_was_beyond_it() {
        let scratch = Scratch::new("rewrite");
        let path = scratch.doc();
        let mut file = DirectFile::open(&mut options(), &path).unwrap();
        file.write_end(0, &pattern(3 * BLOCK, 1)).unwrap();
        let shorter = pattern(BLOCK + 1, 2);
        file.write_end(0, &shorter).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), shorter);
    }
}
