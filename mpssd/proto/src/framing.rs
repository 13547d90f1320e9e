//! Line framing without I/O: bytes in, whole frames out, bounded.

use crate::MAX_FRAME;

/// A frame that broke the framing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame longer than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Splits a byte stream into `\n`-terminated frames of at most `limit`
/// bytes (newline included). Holds at most `limit` bytes of an unfinished
/// frame.
///
/// A frame taken is not copied out or shifted away one by one: the
/// buffer keeps a consumed prefix, dropped when it is most of the buffer
/// (a console's stream of 20 KiB frames is searched with `memchr` and
/// handed out in place).
#[derive(Debug, Clone)]
pub struct LineDecoder {
    /// Received bytes are `buf[..end]`; the rest is room already zeroed
    /// (a fill does not zero it again).
    buf: Vec<u8>,
    // INVARIANT: start <= scanned <= end <= buf.len(); buf[start..scanned]
    // holds no newline.
    /// Bytes of `buf` already taken as frames.
    start: usize,
    end: usize,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    limit: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl LineDecoder {
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            limit,
        }
    }

    /// Drops the frames already taken once they are most of the buffer
    /// (each byte is moved at most about once).
    fn compact(&mut self) {
        if self.start > 0 && self.start * 2 >= self.end {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Appends what `read` puts into a buffer of `max` bytes (at least
    /// one) and says it wrote: received bytes go straight into the
    /// decoder, not through a buffer of the caller's.
    ///
    /// # Errors
    /// `read`'s error; nothing is appended then.
    pub fn fill<E>(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        self.compact();
        let (from, to) = (self.end, self.end + max.max(1));
        if self.buf.len() < to {
            self.buf.resize(to, 0);
        }
        let got = read(&mut self.buf[from..to])?.min(to - from);
        self.end += got;
        Ok(got)
    }

    /// How many more bytes may be pushed before the unfinished frame is
    /// over the limit (a reader reads at most this much).
    #[must_use]
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.end - self.start)
    }

    /// Whether part of a frame has been received.
    #[must_use]
    pub fn has_partial(&self) -> bool {
        self.end > self.start
    }

    /// Whether a whole frame has been received and waits to be taken
    /// (a reader that polls its socket takes it first: no more bytes may
    /// come to wake it).
    #[must_use]
    pub fn has_frame(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.scanned..self.end]).is_some()
    }

    /// The next whole frame without its newline (a trailing `\r` is
    /// dropped too); `Ok(None)` if none is complete yet; an error once the
    /// unfinished frame is over the limit.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.next_frame_ref()?.map(<[u8]>::to_vec))
    }

    /// Whether a whole frame has been received (searching only what came
    /// since the last search); an error once the unfinished frame is over
    /// the limit.
    pub fn ready(&mut self) -> Result<bool, FrameError> {
        if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
            // Left at the newline: the frame is taken from there.
            self.scanned += pos;
            if self.scanned + 1 - self.start > self.limit {
                return Err(FrameError::TooLarge { limit: self.limit });
            }
            return Ok(true);
        }
        self.scanned = self.end;
        if self.end - self.start >= self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        Ok(false)
    }

    /// [`next_frame`](Self::next_frame), borrowed where it was received.
    pub fn next_frame_ref(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if !self.ready()? {
            return Ok(None);
        }
        let (from, end) = (self.start, self.scanned);
        self.start = end + 1;
        self.scanned = self.start;
        let mut frame = &self.buf[from..end];
        if let [rest @ .., b'\r'] = frame {
            frame = rest;
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_keeps_partial() {
        let mut d = LineDecoder::new(16);
        d.push(b"ab\ncd\r\nef");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"ab");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"cd");
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(d.has_partial());
        assert!(!d.has_frame());
        d.push(b"g\nh\n");
        assert!(d.has_frame());
        assert_eq!(d.next_frame().unwrap().unwrap(), b"efg");
        assert!(d.has_frame(), "h waits");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"h");
        assert!(!d.has_frame() && !d.has_partial());
    }

    #[test]
    fn limit_counts_the_newline() {
        let mut d = LineDecoder::new(4);
        d.push(b"abc\n");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"abc");
        d.push(b"abcd\n");
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { limit: 4 }));
        let mut d = LineDecoder::new(4);
        d.push(b"abcd");
        assert_eq!(d.room(), 0);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { limit: 4 }));
    }

    #[test]
    fn byte_at_a_time() {
        let mut d = LineDecoder::new(64);
        let mut out = Vec::new();
        for &b in b"one\ntwo\n\nthree\n" {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(String::from_utf8(f).unwrap());
            }
        }
        assert_eq!(out, ["one", "two", "", "three"]);
    }

    /// Frames taken in place, the buffer compacted between pushes and
    /// fills: the same frames as a plain split, whatever the cut.
    #[test]
    fn frames_survive_compaction_and_fills() {
        let stream: Vec<u8> = (0..500u32)
            .flat_map(|i| {
                let mut l = format!("frame {i} ").into_bytes();
                l.extend(std::iter::repeat_n(b'x', (i as usize * 7) % 97));
                l.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
                l
            })
            .collect();
        let want: Vec<Vec<u8>> = stream
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect();
        for cut in [1, 2, 7, 64, 333, 4096] {
            let mut d = LineDecoder::new(256);
            let mut got = Vec::new();
            for (i, chunk) in stream.chunks(cut).enumerate() {
                if i % 2 == 0 {
                    d.push(chunk);
                } else {
                    let n = d
                        .fill(chunk.len(), |b: &mut [u8]| {
                            b[..chunk.len()].copy_from_slice(chunk);
                            Ok::<_, ()>(chunk.len())
                        })
                        .unwrap();
                    assert_eq!(n, chunk.len());
                }
                while let Some(f) = d.next_frame_ref().unwrap() {
                    got.push(f.to_vec());
                }
                assert!(d.end - d.start <= 256 + cut, "holds only the unfinished frame");
            }
            assert_eq!(got, want, "cut {cut}");
            assert!(!d.has_partial());
        }
    }

    #[test]
    fn a_failed_fill_appends_nothing() {
        let mut d = LineDecoder::new(64);
        d.push(b"ab");
        assert_eq!(d.fill(16, |_| Err::<usize, _>("gone")), Err("gone"));
        assert_eq!(
            d.fill(16, |b| {
                b[..2].copy_from_slice(b"c\n");
                Ok::<_, ()>(2)
            }),
            Ok(2)
        );
        assert_eq!(d.next_frame().unwrap().unwrap(), b"abc");
        assert_eq!(d.room(), 64);
    }

    #[test]
    fn the_limit_holds_after_frames_were_taken() {
        let mut d = LineDecoder::new(8);
        d.push(b"1234567\n1234567");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"1234567");
        assert_eq!(d.room(), 1, "only the unfinished frame counts");
        d.push(b"8");
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { limit: 8 }));
    }
}
