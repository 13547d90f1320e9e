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
#[derive(Debug, Clone)]
pub struct LineDecoder {
    buf: Vec<u8>,
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
            scanned: 0,
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many more bytes may be pushed before the unfinished frame is
    /// over the limit (a reader reads at most this much).
    #[must_use]
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    /// Whether part of a frame has been received.
    #[must_use]
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether a whole frame has been received and waits to be taken
    /// (a reader that polls its socket takes it first: no more bytes may
    /// come to wake it).
    #[must_use]
    pub fn has_frame(&self) -> bool {
        self.buf[self.scanned..].contains(&b'\n')
    }

    /// The next whole frame without its newline (a trailing `\r` is
    /// dropped too); `Ok(None)` if none is complete yet; an error once the
    /// unfinished frame is over the limit.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            if end + 1 > self.limit {
                return Err(FrameError::TooLarge { limit: self.limit });
            }
            let mut frame: Vec<u8> = self.buf.drain(..=end).collect();
            frame.pop();
            if frame.last() == Some(&b'\r') {
                frame.pop();
            }
            self.scanned = 0;
            return Ok(Some(frame));
        }
        self.scanned = self.buf.len();
        if self.buf.len() >= self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        Ok(None)
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
}
