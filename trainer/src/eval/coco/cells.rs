//! Groups ground truth and detections by (category, image) "cell", the unit pycocotools
//! evaluates (`_gts[imgId, catId]`, `_dts[imgId, catId]`).
//!
//! Cells are laid out category-major (`cell = category * num_images + image`) so that one
//! category's cells are contiguous; within a cell items keep file order, which decides
//! tie-breaking exactly as in pycocotools.

use std::collections::HashMap;

use super::load::{Detection, GroundTruth};

pub struct Cells {
    /// Sorted unique image ids (pycocotools' `params.imgIds`).
    pub image_ids: Vec<i64>,
    /// Sorted unique category ids (pycocotools' `params.catIds`).
    pub category_ids: Vec<i64>,
    gt_offsets: Vec<u32>,
    gt_items: Vec<u32>,
    dt_offsets: Vec<u32>,
    dt_items: Vec<u32>,
}

/// A detection whose image or category is not in the ground truth.
pub enum UnknownId {
    Image { index: usize, image_id: i64 },
    Category { index: usize, category_id: i64 },
}

impl Cells {
    /// Ground-truth annotations on unknown images or categories are dropped (as
    /// pycocotools' `getAnnIds` does); detections on them are an error.
    pub fn build(gt: &GroundTruth, dets: &[Detection]) -> Result<Cells, UnknownId> {
        let image_ids = sorted_unique(gt.images.iter().copied());
        let category_ids = sorted_unique(gt.categories.iter().map(|c| c.id));
        let image_index = position_map(&image_ids);
        let category_index = position_map(&category_ids);
        let num_images = image_ids.len();
        let lookup = |image_id: i64, category_id: i64| {
            (
                image_index.get(&image_id).copied(),
                category_index.get(&category_id).copied(),
            )
        };

        let gt_cells: Vec<Option<usize>> = gt
            .annotations
            .iter()
            .map(|a| match lookup(a.image_id, a.category_id) {
                (Some(i), Some(k)) => Some(k * num_images + i),
                _ => None,
            })
            .collect();
        let mut dt_cells = Vec::with_capacity(dets.len());
        for (index, d) in dets.iter().enumerate() {
            match lookup(d.image_id, d.category_id) {
                (Some(i), Some(k)) => dt_cells.push(Some(k * num_images + i)),
                (None, _) => {
                    return Err(UnknownId::Image {
                        index,
                        image_id: d.image_id,
                    });
                }
                (_, None) => {
                    return Err(UnknownId::Category {
                        index,
                        category_id: d.category_id,
                    });
                }
            }
        }

        let num_cells = num_images * category_ids.len();
        let (gt_offsets, gt_items) = bucket(&gt_cells, num_cells);
        let (dt_offsets, dt_items) = bucket(&dt_cells, num_cells);
        Ok(Cells {
            image_ids,
            category_ids,
            gt_offsets,
            gt_items,
            dt_offsets,
            dt_items,
        })
    }

    pub fn num_images(&self) -> usize {
        self.image_ids.len()
    }

    /// Indices into `GroundTruth::annotations`, in file order.
    pub fn ground_truth(&self, category: usize, image: usize) -> &[u32] {
        let cell = category * self.num_images() + image;
        &self.gt_items[self.gt_offsets[cell] as usize..self.gt_offsets[cell + 1] as usize]
    }

    /// Indices into the detection list, in file order.
    pub fn detections(&self, category: usize, image: usize) -> &[u32] {
        let cell = category * self.num_images() + image;
        &self.dt_items[self.dt_offsets[cell] as usize..self.dt_offsets[cell + 1] as usize]
    }
}

fn sorted_unique(ids: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn position_map(sorted_ids: &[i64]) -> HashMap<i64, usize> {
    sorted_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect()
}

/// Counting sort of item indices by cell; stable, so each cell keeps file order.
fn bucket(cell_of_item: &[Option<usize>], num_cells: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; num_cells + 1];
    for cell in cell_of_item.iter().flatten() {
        offsets[cell + 1] += 1;
    }
    for c in 0..num_cells {
        offsets[c + 1] += offsets[c];
    }
    let mut next = offsets.clone();
    let mut items = vec![0u32; offsets[num_cells] as usize];
    for (item, cell) in cell_of_item.iter().enumerate() {
        if let Some(cell) = *cell {
            items[next[cell] as usize] = item as u32;
            next[cell] += 1;
        }
    }
    (offsets, items)
}
