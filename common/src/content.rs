//! Job inputs named by content: what a worker is told to fetch, and the framing of a pack (many
//! small files in one response).
//!
//! A remote worker gets no filesystem path of the server: every input (the dataset's annotation
//! JSON, each image, each parent artifact) is a [`Blob`], its sha256 and size. The worker fetches
//! blobs by hash from `/api/v1/blobs/{sha256}` (one file, `Range` and `ETag`) or
//! `POST /api/v1/blobs/pack` (many small files framed as below), keeps them in a content-addressed
//! cache, and checks every hash before it uses a byte.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;

/// One file's content: lowercase hex sha256 and length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Blob {
    pub sha256: String,
    pub bytes: u64,
}

impl Blob {
    /// Hash a reader to its end.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<Blob> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Blob {
            sha256: hex(&hasher.finalize()),
            bytes,
        })
    }

    pub fn of_file(path: &std::path::Path) -> std::io::Result<Blob> {
        Blob::of_reader(std::fs::File::open(path)?)
    }

    pub fn of_bytes(data: &[u8]) -> Blob {
        Blob {
            sha256: hex(&Sha256::digest(data)),
            bytes: data.len() as u64,
        }
    }
}

/// Incremental sha256 for a file written piece by piece (uploads, resumed downloads).
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sha256 as the API spells it: 64 lowercase hex digits (so it is also a safe file name).
pub fn check_sha256(text: &str) -> Result<(), String> {
    let ok = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a sha256 (64 lowercase hex digits)",
            text.chars().take(80).collect::<String>()
        ))
    }
}

/// A file of a dataset: its name relative to the image folder, and its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedBlob {
    pub file_name: String,
    #[serde(flatten)]
    pub blob: Blob,
}

/// A dataset as a remote worker receives it: the validated annotation JSON and every image, by
/// content. The worker lays them out locally and hands the job an ordinary
/// [`crate::api::DatasetLocation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetContent {
    pub dataset_id: i64,
    pub name: String,
    pub annotations: Blob,
    pub images: Vec<NamedBlob>,
    /// Train/val image ids and labeled subsets (`dataset::DatasetSplits`), when the dataset has them.
    #[serde(default)]
    pub splits: Option<serde_json::Value>,
}

/// An artifact of a run that a job may read (a parent's checkpoint, its own checkpoint to resume
/// from, an evaluate job's detections, pseudo-boxes), by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInput {
    pub run_id: i64,
    pub name: String,
    #[serde(flatten)]
    pub blob: Blob,
}

/// `POST /api/v1/blobs/pack` body: the blobs to send, in this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackRequest {
    pub sha256: Vec<String>,
}

/// The most blobs one pack request may name.
pub const PACK_MAX_BLOBS: usize = 1024;

/// Each blob in a pack response is framed as its sha256 in ASCII hex (64 bytes), its length as
/// a little-endian u64 (8 bytes), then its bytes.
pub const PACK_FRAME_HEADER: usize = 64 + 8;

pub fn pack_frame_header(blob: &Blob) -> [u8; PACK_FRAME_HEADER] {
    let mut header = [0u8; PACK_FRAME_HEADER];
    header[..64].copy_from_slice(blob.sha256.as_bytes());
    header[64..].copy_from_slice(&blob.bytes.to_le_bytes());
    header
}

/// Read one frame header; `None` at a clean end of the stream.
pub fn read_pack_frame_header(reader: &mut (impl Read + ?Sized)) -> std::io::Result<Option<Blob>> {
    let mut header = [0u8; PACK_FRAME_HEADER];
    let mut filled = 0;
    while filled < PACK_FRAME_HEADER {
        let n = reader.read(&mut header[filled..])?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the pack ended inside a frame header",
            ));
        }
        filled += n;
    }
    let sha256 = std::str::from_utf8(&header[..64])
        .ok()
        .filter(|s| check_sha256(s).is_ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame header in pack")
        })?
        .to_string();
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[64..]);
    Ok(Some(Blob {
        sha256,
        bytes: u64::from_le_bytes(len),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_text() {
        // FIPS 180-2's "abc" example.
        assert_eq!(
            Blob::of_bytes(b"abc").sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Blob::of_bytes(b"abc").sha256);
    }

    #[test]
    fn sha256_names_are_checked() {
        assert!(check_sha256(&Blob::of_bytes(b"x").sha256).is_ok());
        assert!(check_sha256("../../etc/passwd").is_err());
        assert!(check_sha256(&"A".repeat(64)).is_err());
    }

    #[test]
    fn pack_frames_round_trip() {
        let a = Blob::of_bytes(b"hello");
        let mut stream = Vec::new();
        stream.extend_from_slice(&pack_frame_header(&a));
        stream.extend_from_slice(b"hello");
        let mut reader = &stream[..];
        assert_eq!(read_pack_frame_header(&mut reader).unwrap(), Some(a));
        let mut body = [0u8; 5];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(read_pack_frame_header(&mut reader).unwrap(), None);
        let mut cut = &stream[..10];
        assert!(read_pack_frame_header(&mut cut).is_err());
    }
}
