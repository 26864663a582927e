//! Box operations on libtorch tensors, as torchvision's `ops/boxes.py`: IoU, clipping to the
//! image, and non-maximum suppression (`nms` / `batched_nms` semantics).

use tch::{Device, Kind, Tensor};

/// Clip xyxy boxes to an image of (height, width).
pub fn clip_boxes(boxes: &Tensor, (h, w): (i64, i64)) -> Tensor {
    let x = boxes.slice(1, 0, 4, 2).clamp(0.0, w as f64);
    let y = boxes.slice(1, 1, 4, 2).clamp(0.0, h as f64);
    Tensor::stack(
        &[
            x.select(1, 0),
            y.select(1, 0),
            x.select(1, 1),
            y.select(1, 1),
        ],
        1,
    )
}

/// Pairwise IoU of xyxy boxes `[N, 4]` × `[M, 4]` → `[N, M]`.
pub fn box_iou(a: &Tensor, b: &Tensor) -> Tensor {
    let area = |t: &Tensor| (t.select(1, 2) - t.select(1, 0)) * (t.select(1, 3) - t.select(1, 1));
    let (area_a, area_b) = (area(a), area(b));
    let lt = a
        .slice(1, 0, 2, 1)
        .unsqueeze(1)
        .maximum(&b.slice(1, 0, 2, 1).unsqueeze(0));
    let rb = a
        .slice(1, 2, 4, 1)
        .unsqueeze(1)
        .minimum(&b.slice(1, 2, 4, 1).unsqueeze(0));
    let wh = (rb - lt).clamp_min(0.0);
    let inter = wh.select(2, 0) * wh.select(2, 1);
    let union = area_a.unsqueeze(1) + area_b.unsqueeze(0) - &inter;
    inter / union
}

/// Indices of the boxes kept, by decreasing score: a box is dropped when its IoU with a kept,
/// higher-scoring box exceeds `iou_threshold`.
///
/// As torchvision's kernel, on the CPU whatever the boxes' device: the IoU of a pair is computed
/// only when its first box is kept and its second not yet dropped, in `f32` with the kernel's
/// order of operations. (A full IoU matrix costs n² memory: for the 5,000 candidates of an
/// untrained FCOS it took about a second per image.)
pub fn nms(boxes: &Tensor, scores: &Tensor, iou_threshold: f64) -> Tensor {
    let n = boxes.size()[0];
    let device = boxes.device();
    if n == 0 {
        return Tensor::zeros([0], (Kind::Int64, device));
    }
    let order: Vec<i64> =
        Vec::try_from(scores.argsort(0, true).to_device(Device::Cpu)).unwrap_or_default();
    let flat: Vec<f32> = Vec::try_from(
        boxes
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .reshape([-1]),
    )
    .unwrap_or_default();
    let keep = greedy_nms(&flat, &order, iou_threshold);
    Tensor::from_slice(&keep).to_device(device)
}

/// The greedy pass of [`nms`] over `[x1, y1, x2, y2]` rows visited in `order`.
fn greedy_nms(flat: &[f32], order: &[i64], iou_threshold: f64) -> Vec<i64> {
    let row = |i: i64| {
        let k = i as usize * 4;
        (flat[k], flat[k + 1], flat[k + 2], flat[k + 3])
    };
    let area = |(x1, y1, x2, y2): (f32, f32, f32, f32)| (x2 - x1) * (y2 - y1);
    let mut removed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if removed[a] {
            continue;
        }
        keep.push(order[a]);
        let bi = row(order[a]);
        let area_i = area(bi);
        for b in (a + 1)..order.len() {
            if removed[b] {
                continue;
            }
            let bj = row(order[b]);
            let w = (bi.2.min(bj.2) - bi.0.max(bj.0)).max(0.0);
            let h = (bi.3.min(bj.3) - bi.1.max(bj.1)).max(0.0);
            let inter = w * h;
            // the kernel compares the f32 overlap with the f64 threshold
            if (inter / (area_i + area(bj) - inter)) as f64 > iou_threshold {
                removed[b] = true;
            }
        }
    }
    keep
}

/// NMS within each label: boxes of different labels never suppress each other.
pub fn batched_nms(boxes: &Tensor, scores: &Tensor, labels: &Tensor, iou_threshold: f64) -> Tensor {
    if boxes.size()[0] == 0 {
        return Tensor::zeros([0], (Kind::Int64, boxes.device()));
    }
    // torchvision's coordinate trick: shift each label's boxes far apart.
    let offset = boxes.max() + 1.0;
    let shifted = boxes + (labels.to_kind(boxes.kind()) * offset).unsqueeze(1);
    nms(&shifted, scores, iou_threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lower_scores_are_suppressed_per_label() {
        let boxes = Tensor::from_slice(&[
            0.0f32, 0.0, 10.0, 10.0, 1.0, 1.0, 11.0, 11.0, 0.0, 0.0, 10.0, 10.0, 50.0, 50.0, 60.0,
            60.0,
        ])
        .view([4, 4]);
        let scores = Tensor::from_slice(&[0.9f32, 0.8, 0.7, 0.6]);
        let keep: Vec<i64> = Vec::try_from(nms(&boxes, &scores, 0.5)).unwrap();
        assert_eq!(keep, vec![0, 3]);
        let labels = Tensor::from_slice(&[0i64, 0, 1, 0]);
        let keep: Vec<i64> = Vec::try_from(batched_nms(&boxes, &scores, &labels, 0.5)).unwrap();
        assert_eq!(keep, vec![0, 2, 3]);
    }
}
