//! `splits.json`: which images are for training and validation, and the labelled subsets
//! of the training images used by semi-supervised runs.
//!
//! ```json
//! {"train": [1, 2, ...], "val": [2001, ...],
//!  "labeled": {"1pct_seed1": [...], ..., "10pct_seed5": [...]}}
//! ```

use super::checks::read_capped;
use super::{CocoDataset, DatasetError, ProblemKind, ValidationReport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Largest splits file read (64 MiB).
pub const MAX_SPLITS_FILE_BYTES: u64 = 64 << 20;

/// Image-id splits of one dataset (the content of `splits.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSplits {
    /// Training image ids.
    pub train: Vec<i64>,
    /// Validation image ids, disjoint from `train`.
    pub val: Vec<i64>,
    /// Labelled subsets of `train`, keyed by [`DatasetSplits::labeled_key`].
    #[serde(default)]
    pub labeled: BTreeMap<String, Vec<i64>>,
}

impl DatasetSplits {
    /// Labelled fractions written by default, in percent of the training images.
    pub const LABELED_PERCENTS: [u32; 3] = [1, 5, 10];
    /// Seeds written by default for each fraction.
    pub const LABELED_SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

    /// `"{percent}pct_seed{seed}"`, e.g. `"5pct_seed3"`.
    pub fn labeled_key(percent: u32, seed: u64) -> String {
        format!("{percent}pct_seed{seed}")
    }

    /// Splits with every default labelled subset ([`Self::LABELED_PERCENTS`] ×
    /// [`Self::LABELED_SEEDS`]) drawn from `train`.
    /// Seed of the validation draw of [`Self::default_for`].
    pub const DEFAULT_VAL_SEED: u64 = 0x0056_A1DA_7E00;

    pub fn with_default_labeled(train: Vec<i64>, val: Vec<i64>) -> Self {
        let mut labeled = BTreeMap::new();
        for seed in Self::LABELED_SEEDS {
            for percent in Self::LABELED_PERCENTS {
                labeled.insert(
                    Self::labeled_key(percent, seed),
                    labeled_subset(&train, percent, seed),
                );
            }
        }
        Self {
            train,
            val,
            labeled,
        }
    }

    /// Splits for a dataset that came without any: a seeded `val_percent`% of the images for
    /// validation, the rest for training, plus the default labelled subsets. Deterministic, so
    /// re-importing the same dataset gives the same splits.
    pub fn default_for(image_ids: &[i64], val_percent: u32) -> Self {
        let mut ids = image_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let val = if ids.len() < 2 {
            Vec::new()
        } else {
            labeled_subset(&ids, val_percent, Self::DEFAULT_VAL_SEED)
        };
        let train: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|i| val.binary_search(i).is_err())
            .collect();
        Self::with_default_labeled(train, val)
    }

    /// Reads `splits.json` (capped at [`MAX_SPLITS_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        let bytes = read_capped(path, MAX_SPLITS_FILE_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let mut report = ValidationReport::new();
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            report.push(
                ProblemKind::MalformedFile,
                format!("{name}: line {}, column {}: {e}", e.line(), e.column()),
            );
            DatasetError::Invalid(report)
        })
    }

    /// Problems with these splits for `dataset`: ids that are not images, ids in both
    /// train and val, labelled ids outside train. Empty if consistent.
    pub fn check(&self, dataset: &CocoDataset) -> ValidationReport {
        let mut report = ValidationReport::new();
        let image_ids: HashSet<i64> = dataset.images.iter().map(|i| i.id).collect();
        let train: HashSet<i64> = self.train.iter().copied().collect();
        let lists = [("train", &self.train), ("val", &self.val)]
            .into_iter()
            .chain(self.labeled.iter().map(|(key, ids)| (key.as_str(), ids)));
        for (name, ids) in lists {
            for id in ids.iter().filter(|id| !image_ids.contains(id)) {
                report.push(
                    ProblemKind::UnknownImageId,
                    format!("splits \"{name}\": image id {id} is not in the dataset"),
                );
            }
        }
        for id in self.val.iter().filter(|id| train.contains(id)) {
            report.push(
                ProblemKind::InvalidField,
                format!("splits: image id {id} is in both train and val"),
            );
        }
        for (key, ids) in &self.labeled {
            for id in ids.iter().filter(|id| !train.contains(id)) {
                report.push(
                    ProblemKind::InvalidField,
                    format!("splits \"{key}\": image id {id} is not a training image"),
                );
            }
        }
        report
    }
}

/// `percent`% of `train` (at least one image if `train` is not empty), chosen by a seeded
/// shuffle, returned sorted. Subsets of one seed are nested: 1% ⊂ 5% ⊂ 10%.
/// Deterministic across platforms and versions (its own SplitMix64, no `rand`).
pub fn labeled_subset(train: &[i64], percent: u32, seed: u64) -> Vec<i64> {
    if train.is_empty() {
        return Vec::new();
    }
    let wanted =
        ((train.len() as f64 * f64::from(percent) / 100.0).round() as usize).clamp(1, train.len());
    let mut shuffled = train.to_vec();
    let mut state = seed ^ 0x5EED_0F1A_BE1E_D000;
    for i in (1..shuffled.len()).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        shuffled.swap(i, j);
    }
    shuffled.truncate(wanted);
    shuffled.sort_unstable();
    shuffled
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::CocoImage;

    #[test]
    fn default_splits_partition_the_images() {
        let ids: Vec<i64> = (1..=50).map(|i| i * 3).collect();
        let s = DatasetSplits::default_for(&ids, 20);
        assert_eq!(s.val.len(), 10);
        assert_eq!(s.train.len(), 40);
        let mut all: Vec<i64> = s.train.iter().chain(&s.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        assert_eq!(s, DatasetSplits::default_for(&ids, 20));
        assert!(
            s.labeled
                .values()
                .all(|l| l.iter().all(|i| s.train.contains(i)))
        );
    }

    #[test]
    fn labeled_subsets_are_nested_seeded_and_inside_train() {
        let train: Vec<i64> = (1..=2000).collect();
        let splits = DatasetSplits::with_default_labeled(train.clone(), (2001..=2300).collect());
        assert_eq!(splits.labeled.len(), 15);
        let one = &splits.labeled["1pct_seed1"];
        let five = &splits.labeled["5pct_seed1"];
        let ten = &splits.labeled["10pct_seed1"];
        assert_eq!((one.len(), five.len(), ten.len()), (20, 100, 200));
        assert!(one.iter().all(|id| five.contains(id)) && five.iter().all(|id| ten.contains(id)));
        assert_ne!(splits.labeled["1pct_seed1"], splits.labeled["1pct_seed2"]);
        assert_eq!(labeled_subset(&train, 1, 1), *one, "deterministic");
        assert_eq!(labeled_subset(&[7], 1, 1), vec![7], "at least one image");

        let dataset = CocoDataset {
            images: (1..=2300)
                .map(|id| CocoImage {
                    id,
                    file_name: format!("{id}.jpg"),
                    width: 1,
                    height: 1,
                })
                .collect(),
            ..CocoDataset::default()
        };
        assert!(splits.check(&dataset).is_empty());
        let mut bad = splits.clone();
        bad.val.push(1);
        bad.val.push(9999);
        bad.labeled.insert("x".into(), vec![2001]);
        let report = bad.check(&dataset);
        assert_eq!(report.count(ProblemKind::UnknownImageId), 1, "{report}");
        assert_eq!(report.count(ProblemKind::InvalidField), 2, "{report}");

        let json = serde_json::to_string(&splits).unwrap();
        assert!(json.contains("\"10pct_seed5\""));
        assert_eq!(
            serde_json::from_str::<DatasetSplits>(&json).unwrap(),
            splits
        );
    }
}
