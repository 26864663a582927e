//! The pseudo-box browser of a `proposals` run (a few hundred boxes as SVG, the rest on a canvas
//! from a compact per-image endpoint) and its COCO export (streamed).

use crate::db;
use crate::db::datasets::{BoxRow, DatasetRow, ImageRow};
use crate::db::proposals::ProposalRow;
use crate::db::runs::RunRow;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::numbers::filters;
use crate::plots;
use crate::routes::render;
use crate::state::AppState;
use aligndet_common::api::FilterRule;
use aligndet_common::jobs::RunKind;
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// Most kept boxes drawn as SVG (with a hover title each); the slider draws the rest on a
/// canvas from [`boxes_data`], so an image with 12k boxes stays a light page.
pub const SVG_BOXES: usize = 200;

/// One of the first [`SVG_BOXES`] kept boxes, drawn as SVG.
pub struct DrawnBox {
    /// Position in the order produced.
    pub order: usize,
    /// Position among the kept boxes (what the slider counts).
    pub rank: usize,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

pub struct ImageView {
    pub dataset_id: i64,
    pub image: ImageRow,
    pub svg_boxes: Vec<DrawnBox>,
    pub kept_count: usize,
    pub removed_count: usize,
    pub initial_count: usize,
    pub gt: Vec<BoxRow>,
    pub prev: Option<i64>,
    pub next: Option<i64>,
}

#[derive(Template)]
#[template(path = "proposals.html")]
struct ProposalsPage {
    run: RunRow,
    dataset: Option<DatasetRow>,
    images_done: i64,
    boxes_kept: i64,
    boxes_total: i64,
    median_seconds: Option<f64>,
    recall_chart: Option<String>,
    svg_limit: usize,
    view: Option<ImageView>,
}

#[derive(Deserialize)]
pub struct ImageQuery {
    image: Option<i64>,
}

async fn proposals_run(s: &AppState, id: i64) -> Result<(RunRow, i64), PageError> {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let dataset_id = run
        .dataset_id
        .filter(|_| run.kind == RunKind::Proposals)
        .ok_or_else(|| {
            PageError::not_found(format!("run {id} is not a pseudo-box run with a dataset"))
        })?;
    Ok((run, dataset_id))
}

/// The first [`SVG_BOXES`] kept boxes in the order produced, the kept and removed counts.
fn svg_boxes(row: &ProposalRow) -> (Vec<DrawnBox>, usize, usize) {
    let mut drawn = Vec::new();
    let (mut kept, mut removed) = (0, 0);
    for (order, (b, rule)) in row.boxes().into_iter().enumerate() {
        if rule != FilterRule::Kept {
            removed += 1;
            continue;
        }
        if kept < SVG_BOXES {
            drawn.push(DrawnBox {
                order,
                rank: kept,
                x: b[0],
                y: b[1],
                w: b[2],
                h: b[3],
            });
        }
        kept += 1;
    }
    (drawn, kept, removed)
}

async fn image_view(
    s: &AppState,
    run_id: i64,
    dataset_id: i64,
    done: &[i64],
    image_id: i64,
) -> Result<Option<ImageView>, PageError> {
    let pos = done.binary_search(&image_id).unwrap_or(0);
    let row = db::proposals::for_image(&s.pool, run_id, image_id).await?;
    let image = db::datasets::image(&s.pool, dataset_id, image_id).await?;
    let (Some(row), Some(image)) = (row, image) else {
        return Ok(None);
    };
    let (svg_boxes, kept_count, removed_count) = svg_boxes(&row);
    Ok(Some(ImageView {
        dataset_id,
        gt: db::datasets::boxes_for_images(&s.pool, dataset_id, &[image_id]).await?,
        image,
        svg_boxes,
        kept_count,
        removed_count,
        initial_count: kept_count.min(50),
        prev: pos.checked_sub(1).map(|p| done[p]),
        next: done.get(pos + 1).copied(),
    }))
}

pub async fn browser(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<ImageQuery>,
) -> PageResult {
    let (run, dataset_id) = proposals_run(&s, id).await?;
    let (images_done, boxes_kept, boxes_total, median_seconds) =
        db::proposals::summary(&s.pool, id).await?;
    let done = db::proposals::done_image_ids(&s.pool, id).await?;
    let current = q
        .image
        .filter(|i| done.binary_search(i).is_ok())
        .or(done.first().copied());
    let view = match current {
        Some(image_id) => image_view(&s, id, dataset_id, &done, image_id).await?,
        None => None,
    };
    let recall_chart = recall_chart(&s, id).await?;
    Ok(render(&ProposalsPage {
        dataset: db::datasets::get(&s.pool, dataset_id).await?,
        run,
        images_done,
        boxes_kept,
        boxes_total,
        median_seconds,
        recall_chart,
        svg_limit: SVG_BOXES,
        view,
    }))
}

/// One image's boxes, compact, for the canvas: `n` (u32), then `n` × `[x, y, w, h]` (f32),
/// then `n` filter codes (u8, 0 = kept), all little-endian, in the order produced.
pub fn encode_boxes(row: &ProposalRow) -> Vec<u8> {
    let boxes = row.boxes();
    let mut out = Vec::with_capacity(4 + boxes.len() * 17);
    out.extend_from_slice(&(boxes.len() as u32).to_le_bytes());
    for (b, _) in &boxes {
        for v in b {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend(boxes.iter().map(|(_, rule)| *rule as u8));
    out
}

/// `GET /runs/{id}/proposals/{image_id}/boxes.bin`: [`encode_boxes`] of one image.
pub async fn boxes_data(
    State(s): State<AppState>,
    PagePath((id, image_id)): PagePath<(i64, i64)>,
) -> PageResult {
    proposals_run(&s, id).await?;
    let row = db::proposals::for_image(&s.pool, id, image_id)
        .await?
        .ok_or_else(|| {
            PageError::not_found(format!("run {id} has no pseudo-boxes for image {image_id}"))
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encode_boxes(&row),
    )
        .into_response())
}

/// Recall against the number of proposals: the job logs `recall/iou50`, `recall/iou70` and
/// `recall/ar` with the proposal count as the step.
pub async fn recall_chart(s: &AppState, run_id: i64) -> Result<Option<String>, PageError> {
    let mut series = Vec::new();
    for (key, label) in [
        ("recall/iou50", "recall @ IoU 0.5"),
        ("recall/iou70", "recall @ IoU 0.7"),
        ("recall/ar", "AR @ IoU 0.5:0.95"),
    ] {
        let pts = db::runs::metric_series(&s.pool, run_id, key).await?;
        if !pts.is_empty() {
            series.push((
                label.to_string(),
                pts.into_iter().map(|(x, y)| (x as f64, y)).collect(),
            ));
        }
    }
    Ok((!series.is_empty()).then(|| {
        let labels = plots::Labels {
            title: "Ground-truth recall vs number of pseudo-boxes",
            x: "pseudo-boxes per image",
            y: "recall of ground-truth boxes",
        };
        plots::line_chart_with(&labels, &series, plots::View::default())
    }))
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    all: Option<u8>,
}

/// Bytes gathered before a piece of the export goes out.
const CHUNK: usize = 64 * 1024;

/// COCO JSON with one category `selective_search`, like AlignDet's `filtered_proposals` file,
/// streamed: written row by row as Postgres sends them (annotations first, then the images
/// seen), never whole in memory. A failure midway aborts the body, so a client never takes a
/// cut-off file for a complete one.
pub async fn export_coco(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<ExportQuery>,
) -> PageResult {
    let (run, dataset_id) = proposals_run(&s, id).await?;
    let export = Export {
        pool: s.pool.clone(),
        run_id: id,
        dataset_id,
        include_removed: q.all.unwrap_or(0) != 0,
        info: serde_json::json!({
            "description": format!("pseudo-boxes of run {} ({})", run.id, run.name)
        })
        .to_string(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        if let Err(e) = export.write(&tx).await {
            tracing::warn!("proposals.json of run {}: {e:#}", export.run_id);
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let disposition =
        header::HeaderValue::from_str(&format!("attachment; filename=\"proposals-run-{id}.json\""))
            .unwrap_or(header::HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

#[derive(Serialize)]
struct CocoAnnotation<'a> {
    id: usize,
    image_id: i64,
    category_id: u8,
    bbox: &'a [f32; 4],
    area: f32,
    iscrowd: u8,
}

struct Export {
    pool: sqlx::PgPool,
    run_id: i64,
    dataset_id: i64,
    include_removed: bool,
    /// The `info` object, as JSON.
    info: String,
}

type Sender = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// Sends what `buf` holds (and empties it); fails when the client has gone.
async fn flush(tx: &Sender, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let piece = Bytes::from(std::mem::replace(buf, Vec::with_capacity(CHUNK + 4096)));
    tx.send(Ok(piece))
        .await
        .map_err(|_| anyhow::anyhow!("the client went away"))
}

impl Export {
    async fn write(&self, tx: &Sender) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        buf.extend_from_slice(b"{\"info\":");
        buf.extend_from_slice(self.info.as_bytes());
        buf.extend_from_slice(
            b",\"categories\":[{\"id\":1,\"name\":\"selective_search\"}],\"annotations\":[",
        );
        flush(tx, &mut buf).await?;
        let mut seen = Vec::new();
        let mut next_id = 1;
        let mut rows = db::proposals::stream_all(&self.pool, self.run_id);
        while let Some(row) = rows.next().await {
            let row = row?;
            seen.push(row.image_id);
            for (b, rule) in row.boxes() {
                if !self.include_removed && rule != FilterRule::Kept {
                    continue;
                }
                if next_id > 1 {
                    buf.push(b',');
                }
                let a = CocoAnnotation {
                    id: next_id,
                    image_id: row.image_id,
                    category_id: 1,
                    bbox: &b,
                    area: b[2] * b[3],
                    iscrowd: 0,
                };
                serde_json::to_writer(&mut buf, &a)?;
                next_id += 1;
            }
            if buf.len() >= CHUNK {
                flush(tx, &mut buf).await?;
            }
        }
        drop(rows);
        buf.extend_from_slice(b"],\"images\":[");
        let images = db::datasets::images_by_ids(&self.pool, self.dataset_id, &seen).await?;
        for (i, img) in images.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            let entry = serde_json::json!({"id": img.id, "file_name": img.file_name,
                "width": img.width, "height": img.height});
            serde_json::to_writer(&mut buf, &entry)?;
        }
        buf.extend_from_slice(b"]}");
        flush(tx, &mut buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canvas_data_is_count_boxes_then_rules() {
        let row = ProposalRow {
            image_id: 1,
            boxes: vec![1.0, 2.0, 3.0, 4.0, 5.5, 6.0, 7.0, 8.0],
            removed_by: vec![0, 4],
            seconds: 0.1,
        };
        let bytes = encode_boxes(&row);
        assert_eq!(bytes.len(), 4 + 2 * 16 + 2);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &5.5f32.to_le_bytes());
        assert_eq!(&bytes[36..], &[0, 4]);
        let (svg, kept, removed) = svg_boxes(&row);
        assert_eq!((svg.len(), kept, removed), (1, 1, 1));
    }

    #[test]
    fn at_most_the_svg_limit_of_kept_boxes_is_drawn_as_svg() {
        let n = SVG_BOXES + 50;
        let row = ProposalRow {
            image_id: 1,
            boxes: (0..n * 4).map(|v| v as f32).collect(),
            removed_by: (0..n).map(|i| if i % 10 == 0 { 1 } else { 0 }).collect(),
            seconds: 0.1,
        };
        let (svg, kept, removed) = svg_boxes(&row);
        assert_eq!(svg.len(), SVG_BOXES);
        assert_eq!(kept + removed, n);
        assert_eq!(svg.last().map(|b| b.rank), Some(SVG_BOXES - 1));
    }
}
