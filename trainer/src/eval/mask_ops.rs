//! `trainer eval-mask-ops --input OPS.json` (hidden): runs single RLE operations so that
//! `scripts/segm_parity.py` can compare them with `pycocotools.mask` directly.
//!
//! The input is a JSON array of requests, the output (stdout) one answer per request:
//! - `{"op": "encode", "height", "width", "mask": "0110..."}` (column-major digits);
//! - `{"op": "rle", "rle": {size, counts}}` (counts a string or a list);
//! - `{"op": "segm", "height", "width", "segmentation": ...}` (as `COCO.annToRLE`);
//! - `{"op": "merge", "rles": [...], "intersect": bool}`;
//! - `{"op": "iou", "dt": [...], "gt": [...], "iscrowd": [...]}` (rows are detections).
//!
//! Mask answers are `{"size", "counts" (compressed), "area", "bbox", "roundtrip"}` where
//! `roundtrip` says that decode/encode and the compressed string both reproduce the RLE;
//! a rejected input answers `{"error": message}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::coco::mask::load::to_rle;
use super::coco::mask::rle::Rle;

#[derive(clap::Args, Debug, Clone)]
pub struct MaskOpsArgs {
    /// JSON array of requests (see the module documentation).
    #[arg(long, value_name = "OPS.json")]
    pub input: PathBuf,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Encode {
        height: u32,
        width: u32,
        mask: String,
    },
    Rle {
        rle: Value,
    },
    Segm {
        height: u32,
        width: u32,
        segmentation: Value,
    },
    Merge {
        rles: Vec<Value>,
        intersect: bool,
    },
    Iou {
        dt: Vec<Value>,
        gt: Vec<Value>,
        iscrowd: Vec<bool>,
    },
}

pub fn main(args: MaskOpsArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let requests: Vec<Request> = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", args.input.display()))?;
    let answers: Vec<Value> = requests
        .iter()
        .map(|r| answer(r).unwrap_or_else(|e| json!({ "error": e })))
        .collect();
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &answers)?;
    writeln!(stdout)?;
    Ok(())
}

fn answer(request: &Request) -> Result<Value, String> {
    match request {
        Request::Encode {
            height,
            width,
            mask,
        } => {
            if mask.len() != *height as usize * *width as usize {
                return Err("mask length is not height * width".into());
            }
            let pixels: Vec<bool> = mask.bytes().map(|b| b == b'1').collect();
            Ok(describe(&Rle::encode(&pixels, *height, *width)))
        }
        Request::Rle { rle } => Ok(describe(&to_rle(rle, 0, None)?)),
        Request::Segm {
            height,
            width,
            segmentation,
        } => Ok(describe(&to_rle(segmentation, 0, Some((*height, *width)))?)),
        Request::Merge { rles, intersect } => {
            let rles = parse_all(rles)?;
            Ok(describe(&Rle::merge(&rles, *intersect)))
        }
        Request::Iou { dt, gt, iscrowd } => {
            let (dt, gt) = (parse_all(dt)?, parse_all(gt)?);
            if iscrowd.len() != gt.len() {
                return Err("iscrowd must have one flag per gt".into());
            }
            let rows: Vec<Vec<f64>> = dt
                .iter()
                .map(|d| {
                    gt.iter()
                        .zip(iscrowd)
                        .map(|(g, &crowd)| Rle::iou(d, g, &d.to_bbox(), &g.to_bbox(), crowd))
                        .collect()
                })
                .collect();
            Ok(json!({ "iou": rows }))
        }
    }
}

fn parse_all(values: &[Value]) -> Result<Vec<Rle>, String> {
    values.iter().map(|v| to_rle(v, 0, None)).collect()
}

fn describe(rle: &Rle) -> Value {
    let compressed = rle.to_compressed();
    let reread = Rle::from_compressed(&compressed, rle.height, rle.width);
    let reencoded = Rle::encode(&rle.decode(), rle.height, rle.width);
    // encode() merges zero-length runs, so compare masks, not counts, for that direction.
    let roundtrip = reread.as_ref() == Ok(rle) && reencoded.decode() == rle.decode();
    json!({
        "size": [rle.height, rle.width],
        "counts": compressed,
        "area": rle.area(),
        "bbox": rle.to_bbox(),
        "roundtrip": roundtrip,
    })
}
