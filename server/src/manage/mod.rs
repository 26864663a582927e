//! Run management beyond the database: tags as people type them ([`parse_tags`]), a delete that
//! never leaves a run half-deleted ([`delete_run`]), exports streamed as CSV / JSON
//! ([`export`]), the runs table's query as the URL holds it ([`table`]) and the reproducibility
//! stamp of a claimed run ([`stamp`]).

pub mod export;
pub mod stamp;
pub mod table;

use crate::db;
use crate::db::run_manage::Deletion;
use crate::state::AppState;

pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 40;
pub const MAX_NOTE_CHARS: usize = 10_000;

/// Tags typed as one text, separated by commas or spaces: each 1–40 of A-Z a-z 0-9 `_ . -`
/// (they appear in URLs and searches as `tag:x`), at most 20, duplicates dropped, in the
/// order typed.
pub fn parse_tags(text: &str) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::new();
    for t in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if t.is_empty() {
            continue;
        }
        let ok = t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok || t.chars().count() > MAX_TAG_CHARS {
            return Err(format!(
                "tag {t:?}: use 1 to {MAX_TAG_CHARS} of A-Z a-z 0-9 _ . - (separate tags with commas or spaces)"
            ));
        }
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("{} tags: at most {MAX_TAGS}", tags.len()));
    }
    Ok(tags)
}

/// A note as stored: trimmed, at most 10 000 characters.
pub fn check_note(text: &str) -> Result<String, String> {
    let note = text.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        ));
    }
    Ok(note.to_string())
}

/// Delete a run: its artifact folder is moved aside first, then the database rows go in one
/// transaction; the folder is removed after the commit, or moved back when the database
/// refused (so a failure leaves the run whole). It runs in its own task, to its end even if the
/// request is dropped (a browser that leaves the page): dropped between the move and the
/// transaction, it would leave the run without its files.
pub async fn delete_run(s: &AppState, run_id: i64) -> anyhow::Result<Deletion> {
    let s = s.clone();
    tokio::spawn(async move { delete_run_now(&s, run_id).await }).await?
}

async fn delete_run_now(s: &AppState, run_id: i64) -> anyhow::Result<Deletion> {
    let dir = s.artifacts_dir(run_id);
    let aside = dir.with_file_name(format!(
        ".deleting-{run_id}-{}",
        &crate::secrets::random_token()[..8]
    ));
    let moved = match tokio::fs::rename(&dir, &aside).await {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(anyhow::anyhow!(
                "moving the artifacts of run {run_id} aside: {e}"
            ));
        }
    };
    let outcome = db::run_manage::delete(&s.pool, run_id).await;
    let deleted = matches!(outcome, Ok(Deletion::Deleted));
    if moved {
        if deleted {
            if let Err(e) = tokio::fs::remove_dir_all(&aside).await {
                tracing::warn!("run {run_id} deleted; removing its files failed: {e}");
            }
        } else if let Err(e) = tokio::fs::rename(&aside, &dir).await {
            tracing::error!(
                "run {run_id} was not deleted, and moving its files back failed: {e} (they are in {})",
                aside.display()
            );
        }
    }
    Ok(outcome?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_as_typed() {
        assert_eq!(
            parse_tags(" baseline, res18  fcos,baseline ").unwrap(),
            vec!["baseline", "res18", "fcos"]
        );
        assert_eq!(parse_tags("").unwrap(), Vec::<String>::new());
        assert!(parse_tags("a;b").unwrap_err().contains("\"a;b\""));
        assert!(parse_tags(&"x".repeat(41)).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(
            parse_tags(&many.join(" "))
                .unwrap_err()
                .contains("at most 20")
        );
    }

    #[test]
    fn notes() {
        assert_eq!(check_note("  hi \n").unwrap(), "hi");
        assert!(check_note(&"x".repeat(10_001)).is_err());
    }
}
