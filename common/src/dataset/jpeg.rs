//! JPEG completeness. The `image` crate decodes JPEGs leniently (zune-jpeg without strict
//! mode): a file cut short decodes without error, its missing rows filled in. So a JPEG is
//! also walked marker by marker here and must reach its end-of-image marker.

use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

/// Why the JPEG at `path` is incomplete, if it is; `Ok` for complete JPEGs and for files
/// that are not JPEGs at all (those are the decoder's business).
pub fn check_jpeg_complete(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    check_jpeg_stream(BufReader::new(file))
}

/// [`check_jpeg_complete`] on a file's bytes already in memory.
pub fn check_jpeg_bytes(bytes: &[u8]) -> Result<(), String> {
    check_jpeg_stream(bytes)
}

fn check_jpeg_stream(reader: impl Read) -> Result<(), String> {
    let mut bytes = Bytes(reader);
    let magic = [bytes.next(), bytes.next(), bytes.next()];
    if magic != [Ok(Some(0xFF)), Ok(Some(0xD8)), Ok(Some(0xFF))] {
        return Ok(());
    }
    match walk(&mut bytes) {
        Ok(()) => Ok(()),
        Err(Walk::Truncated) => {
            Err("is truncated: its JPEG data ends before the end-of-image marker".into())
        }
        Err(Walk::Corrupt(why)) => Err(format!("is not a well-formed JPEG: {why}")),
        Err(Walk::Io(e)) => Err(format!("cannot be read: {e}")),
    }
}

enum Walk {
    Truncated,
    Corrupt(&'static str),
    Io(std::io::Error),
}

/// Byte at a time from a buffered reader; `Ok(None)` at the end.
struct Bytes<R>(R);

impl<R: Read> Bytes<R> {
    fn next(&mut self) -> Result<Option<u8>, ErrorKind> {
        let mut byte = [0u8];
        loop {
            return match self.0.read(&mut byte) {
                Ok(0) => Ok(None),
                Ok(_) => Ok(Some(byte[0])),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e.kind()),
            };
        }
    }

    fn byte(&mut self) -> Result<u8, Walk> {
        match self.next() {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(Walk::Truncated),
            Err(kind) => Err(Walk::Io(kind.into())),
        }
    }
}

/// Walks the segments after SOI (whose final 0xFF was consumed) to EOI.
fn walk<R: Read>(bytes: &mut Bytes<R>) -> Result<(), Walk> {
    // The byte after the 0xFF that introduced the next marker.
    let mut marker = fill_then_marker(bytes)?;
    loop {
        match marker {
            0xD9 => return Ok(()),
            // Standalone markers: no length, no payload.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                let length = (u16::from(bytes.byte()?) << 8) | u16::from(bytes.byte()?);
                if length < 2 {
                    return Err(Walk::Corrupt("a segment length is below 2"));
                }
                for _ in 2..length {
                    bytes.byte()?;
                }
                if marker == 0xDA {
                    marker = after_scan(bytes)?;
                    continue;
                }
            }
        }
        marker = next_marker(bytes)?;
    }
}

/// Skips 0xFF fill bytes and returns the marker code after them.
fn fill_then_marker<R: Read>(bytes: &mut Bytes<R>) -> Result<u8, Walk> {
    loop {
        let b = bytes.byte()?;
        if b != 0xFF {
            return Ok(b);
        }
    }
}

/// The next marker between segments; stray bytes before it are skipped, as decoders do.
fn next_marker<R: Read>(bytes: &mut Bytes<R>) -> Result<u8, Walk> {
    while bytes.byte()? != 0xFF {}
    fill_then_marker(bytes)
}

/// Skips entropy-coded data (where 0xFF 0x00 is a stuffed byte and RSTn markers may occur)
/// and returns the marker that ends the scan.
fn after_scan<R: Read>(bytes: &mut Bytes<R>) -> Result<u8, Walk> {
    loop {
        if bytes.byte()? != 0xFF {
            continue;
        }
        match fill_then_marker(bytes)? {
            0x00 | 0xD0..=0xD7 => {}
            marker => return Ok(marker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::test_support::TempDir;

    #[test]
    fn complete_jpegs_pass_and_cut_ones_do_not() {
        let dir = TempDir::new("jpeg_complete");
        let path = dir.path().join("x.jpg");
        image::RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 3) as u8, 77])
        })
        .save(&path)
        .unwrap();
        assert_eq!(check_jpeg_complete(&path), Ok(()));
        let bytes = std::fs::read(&path).unwrap();
        // Trailing bytes after EOI are tolerated (some cameras append data).
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"trailer");
        std::fs::write(&path, &padded).unwrap();
        assert_eq!(check_jpeg_complete(&path), Ok(()));
        for keep in [bytes.len() - 2, bytes.len() * 2 / 5, 40, 3] {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let err = check_jpeg_complete(&path).unwrap_err();
            assert!(err.contains("truncated"), "{keep}: {err}");
        }
        let png = dir.write_png("y.png", 4, 4);
        assert_eq!(
            check_jpeg_complete(&png),
            Ok(()),
            "not a JPEG: not judged here"
        );
    }
}
