//! Which pre-training form a config gets: FCOS's, RetinaNet's or Faster R-CNN's (each a
//! [`BoxPretrainer`]). Mask R-CNN pre-trains in Faster R-CNN's form: its mask branch starts
//! fresh at fine-tuning.

use super::detector::BoxPretrainer;
use super::fcos_head::FcosPretrainer;
use super::rcnn_head::RcnnPretrainer;
use super::retinanet_head::RetinanetPretrainer;
use crate::models::backbone::BodyKind;
use crate::models::norm::NormKind;
use aligndet_common::pretrain_config::PretrainBoxConfig;
use aligndet_common::train_config::DetectorKind;
use tch::nn;

/// Build the pre-training form of `cfg.detector` under `vs` (the body with frozen statistics).
pub fn build_pretrainer(
    vs: &nn::Path,
    cfg: &PretrainBoxConfig,
    body: BodyKind,
) -> Box<dyn BoxPretrainer> {
    let dim = i64::from(cfg.embedding_dim);
    let samples = i64::from(cfg.samples);
    match cfg.detector {
        DetectorKind::Fcos => Box::new(FcosPretrainer::new(
            vs,
            body,
            NormKind::FrozenBn,
            dim,
            samples,
        )),
        DetectorKind::Retinanet => Box::new(RetinanetPretrainer::new(
            vs,
            body,
            NormKind::FrozenBn,
            dim,
            samples,
        )),
        DetectorKind::FasterRcnn | DetectorKind::MaskRcnn => Box::new(RcnnPretrainer::new(
            vs,
            body,
            NormKind::FrozenBn,
            dim,
            samples,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrain::detector::is_pretraining_only;

    /// What each pre-training form hands to fine-tuning: every exported variable exists in the
    /// fine-tuning detector with the same shape, and only the class-specific predictors are left
    /// fresh.
    #[test]
    fn pretrained_variables_cover_the_fine_tuning_detector_except_class_predictors() {
        use crate::models::build::build_detector;
        use aligndet_common::train_config::BackboneKind;
        use std::collections::BTreeMap;
        for (detector, fresh) in [
            (
                DetectorKind::Fcos,
                vec!["head.classification_head.cls_logits"],
            ),
            (
                DetectorKind::Retinanet,
                vec!["head.classification_head.cls_logits"],
            ),
            (
                DetectorKind::FasterRcnn,
                vec![
                    "roi_heads.box_predictor.bbox_pred",
                    "roi_heads.box_predictor.cls_score",
                ],
            ),
            (
                DetectorKind::MaskRcnn,
                vec![
                    "roi_heads.box_predictor.bbox_pred",
                    "roi_heads.box_predictor.cls_score",
                    "roi_heads.mask_head.0.0",
                    "roi_heads.mask_head.1.0",
                    "roi_heads.mask_head.2.0",
                    "roi_heads.mask_head.3.0",
                    "roi_heads.mask_predictor.conv5_mask",
                    "roi_heads.mask_predictor.mask_fcn_logits",
                ],
            ),
        ] {
            let pre_vs = nn::VarStore::new(tch::Device::Cpu);
            let cfg = PretrainBoxConfig {
                detector,
                ..PretrainBoxConfig::default()
            };
            let _pre = build_pretrainer(&pre_vs.root(), &cfg, BodyKind::Resnet18);
            let ft_vs = nn::VarStore::new(tch::Device::Cpu);
            let _ft = build_detector(
                &ft_vs.root(),
                detector,
                BackboneKind::Resnet18,
                NormKind::FrozenBn,
                4,
            )
            .unwrap();
            let shapes = |vs: &nn::VarStore| -> BTreeMap<String, Vec<i64>> {
                vs.variables()
                    .into_iter()
                    .map(|(k, t)| (k, t.size()))
                    .collect()
            };
            let (pre, ft) = (shapes(&pre_vs), shapes(&ft_vs));
            for (name, shape) in pre.iter().filter(|(k, _)| !is_pretraining_only(k)) {
                assert_eq!(ft.get(name), Some(shape), "{detector:?}: {name}");
            }
            let mut missing: Vec<&str> = ft
                .keys()
                .filter(|k| !pre.contains_key(*k))
                .map(|k| k.rsplit_once('.').map_or(k.as_str(), |(module, _)| module))
                .collect();
            missing.dedup();
            assert_eq!(missing, fresh, "{detector:?}");
        }
    }
}
