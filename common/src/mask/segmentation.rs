//! A COCO `segmentation` value as a mask, as pycocotools' `COCO.annToRLE`: polygons
//! (rasterized at the image's height x width), uncompressed RLE (`counts` a list) or
//! compressed RLE (`counts` a string).

use serde_json::Value;

use super::poly;
use super::rle::Rle;

/// The image size a polygon is rasterized at; pycocotools' rasterization is meaningless on
/// an empty image, so that is an error too.
pub fn need_size(image_id: i64, size: Option<(u32, u32)>) -> Result<(u32, u32), String> {
    match size {
        None => Err(format!(
            "image {image_id} has no `height` and `width`, needed to rasterize a polygon"
        )),
        Some((h, w)) if h == 0 || w == 0 => Err(format!(
            "image {image_id} is {h}x{w} pixels; a polygon cannot be rasterized on it"
        )),
        Some(size) => Ok(size),
    }
}

/// `COCO.annToRLE`: one segmentation as an RLE mask of its image.
pub fn to_rle(value: &Value, image_id: i64, size: Option<(u32, u32)>) -> Result<Rle, String> {
    match value {
        Value::Array(parts) => {
            let parts = polygons(parts)?;
            let (h, w) = need_size(image_id, size)?;
            Ok(poly::from_parts(&parts, h, w))
        }
        Value::Object(rle) => {
            let (h, w) = rle_size(rle.get("size"))?;
            let mask = match rle.get("counts") {
                Some(Value::String(s)) => Rle::from_compressed(s, h, w),
                Some(Value::Array(counts)) => {
                    let counts = counts
                        .iter()
                        .map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
                        .collect::<Option<Vec<u32>>>()
                        .ok_or("RLE counts must be integers in 0..2^32")?;
                    Rle::new(h, w, counts)
                }
                Some(_) => return Err("RLE counts must be a string or a list of integers".into()),
                None => return Err("RLE segmentation has no `counts`".into()),
            }
            .map_err(|e| format!("RLE segmentation: {e}"))?;
            if let Some((ih, iw)) = size
                && (ih, iw) != (h, w)
            {
                return Err(format!(
                    "RLE size [{h}, {w}] differs from image {image_id}'s [height, width] \
                     [{ih}, {iw}]"
                ));
            }
            Ok(mask)
        }
        _ => Err("segmentation must be a list of polygons or an RLE object".into()),
    }
}

/// The polygons of a segmentation given as a list of polygons, checked as `rleFrPoly` needs
/// them (an even number of values, at least one point, coordinates in range).
pub fn polygons(parts: &[Value]) -> Result<Vec<Vec<f64>>, String> {
    let parts = parts
        .iter()
        .enumerate()
        .map(|(i, p)| polygon(i, p))
        .collect::<Result<Vec<_>, _>>()?;
    poly::check_parts(&parts).map_err(|e| format!("segmentation: {e}"))?;
    Ok(parts)
}

fn polygon(index: usize, part: &Value) -> Result<Vec<f64>, String> {
    let Value::Array(values) = part else {
        return Err(format!(
            "segmentation polygon {index} is not a list of numbers (polygons are a list of \
             lists)"
        ));
    };
    values
        .iter()
        .map(Value::as_f64)
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| format!("segmentation polygon {index} has a value that is not a number"))
}

fn rle_size(size: Option<&Value>) -> Result<(u32, u32), String> {
    let bad = || "RLE `size` must be [height, width], two integers in 0..2^32".to_string();
    let Some(Value::Array(hw)) = size else {
        return Err(bad());
    };
    let dim = |v: &Value| v.as_u64().and_then(|v| u32::try_from(v).ok());
    match hw.as_slice() {
        [h, w] => Ok((dim(h).ok_or_else(bad)?, dim(w).ok_or_else(bad)?)),
        _ => Err(bad()),
    }
}
