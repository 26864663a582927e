//! The marker of a complete dataset layout (`views/dataset-…/complete`): the layout's digest,
//! then the stat data ([`Stamp`]) each of its files had when it was linked to its checked
//! blob, in the dataset's order. A later job's readers vouch for a file with one `fstat` against
//! its stamp here, without first looking up every blob in the cache's record (thousands of
//! lookups before step 1). The stamps are the record's own, copied when the layout completed; a
//! file changed since has other stat data and goes back through the streamer.

use super::verified::Stamp;
use std::path::Path;
use std::time::SystemTime;

/// The stamps of a layout whose marker holds `digest` and one stamp per file; `None` for
/// anything else (no marker, another digest, a short or foreign file): the layout is rebuilt.
pub fn read(marker: &Path, digest: &str, files: usize) -> Option<Vec<Stamp>> {
    let bytes = std::fs::read(marker).ok()?;
    let rest = bytes.strip_prefix(digest.as_bytes())?.strip_prefix(b"\n")?;
    if rest.len() != files * Stamp::BYTES {
        return None;
    }
    Some(
        rest.chunks_exact(Stamp::BYTES)
            .map(Stamp::from_bytes)
            .collect(),
    )
}

/// Written aside and renamed: a crash leaves no marker or a whole one.
pub fn write(marker: &Path, digest: &str, stamps: &[Stamp]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(digest.len() + 1 + stamps.len() * Stamp::BYTES);
    bytes.extend_from_slice(digest.as_bytes());
    bytes.push(b'\n');
    for stamp in stamps {
        bytes.extend_from_slice(&stamp.to_bytes());
    }
    let aside = marker.with_extension("writing");
    std::fs::write(&aside, bytes)?;
    std::fs::rename(aside, marker)
}

/// The marker was written or touched within `seconds`.
pub fn touched_within(marker: &Path, seconds: u64) -> bool {
    let age = std::fs::metadata(marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok());
    age.is_some_and(|age| age.as_secs() < seconds)
}

pub fn touch(marker: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(marker)?
        .set_modified(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_come_back_only_for_their_digest_and_count() {
        let dir = std::env::temp_dir().join(format!("layout-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files: Vec<_> = (0..3).map(|i| dir.join(format!("{i}.png"))).collect();
        let stamps: Vec<Stamp> = files
            .iter()
            .map(|f| {
                std::fs::write(f, f.display().to_string()).expect("write");
                Stamp::of(&std::fs::metadata(f).expect("stat"))
            })
            .collect();
        let marker = dir.join("complete");
        write(&marker, "abc", &stamps).expect("marker");
        assert_eq!(read(&marker, "abc", 3), Some(stamps));
        assert_eq!(read(&marker, "abd", 3), None);
        assert_eq!(read(&marker, "abc", 2), None);
        std::fs::write(&marker, "abc").expect("an old marker: the digest alone");
        assert_eq!(read(&marker, "abc", 3), None);
        assert!(touched_within(&marker, 60));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
