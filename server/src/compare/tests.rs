//! Unit tests of the comparison: params, configs and arms, statistics, the whole comparison.

use super::*;
use crate::numbers::python_style as format_number;
use crate::stats::delta;
use serde_json::json;

fn cfg(init: Value, lr: f64, seed: u64, split: &str) -> Value {
    json!({"kind": "finetune", "dataset_id": 1, "train_split": split, "val_split": "val",
           "init": init, "optim": {"lr": lr, "weight_decay": 1e-4, "seed": seed},
           "augment": {"min_sizes": [512, 640], "hflip": true}})
}

fn ckpt(run: i64) -> Value {
    json!({"from": "checkpoint", "artifact": {"run_id": run, "name": "pretrained.safetensors"}})
}

#[test]
fn params_accept_both_list_forms_and_name_bad_input() {
    let p = parse_params("runs=3,1&runs=2&runs=3&x=epoch&baseline=1&fractions=0.5,0.8").unwrap();
    assert_eq!(p.runs, vec![3, 1, 2]);
    assert_eq!(p.x, XAxis::Epoch);
    assert_eq!(p.baseline, Some(1));
    assert_eq!(p.fractions, vec![0.5, 0.8]);
    let p = parse_params("runs=4%2C5").unwrap();
    assert_eq!(p.runs, vec![4, 5]);
    assert_eq!(p.fractions, DEFAULT_FRACTIONS.to_vec());
    assert!(parse_params("").unwrap_err().contains("no runs"));
    assert!(parse_params("runs=").unwrap_err().contains("no runs"));
    assert!(parse_params("runs=1,abc").unwrap_err().contains("\"abc\""));
    let many: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
    assert!(
        parse_params(&format!("runs={}", many.join(",")))
            .unwrap_err()
            .contains("at most 50")
    );
    assert!(
        parse_params("runs=1&x=time")
            .unwrap_err()
            .contains("x axis")
    );
    assert!(
        parse_params("runs=1&baseline=-1")
            .unwrap_err()
            .contains("baseline")
    );
    assert!(
        parse_params("runs=1&fractions=0,1")
            .unwrap_err()
            .contains("fraction")
    );
}

#[test]
fn seeds_split_draws_and_checkpoint_runs_fold_into_one_arm() {
    assert_eq!(strip_split_seed("5pct_seed2"), "5pct");
    assert_eq!(strip_split_seed("train"), "train");
    assert_eq!(strip_split_seed("my_seedling"), "my_seedling");
    let a = cfg(ckpt(7), 0.015, 1, "5pct_seed1");
    let b = cfg(ckpt(8), 0.015, 2, "5pct_seed2");
    let c = cfg(json!({"from": "imagenet_backbone"}), 0.01, 1, "5pct_seed1");
    let (na, ka) = arm_config(&a);
    let (nb, _) = arm_config(&b);
    assert_eq!(na, nb);
    assert_eq!(ka, "optim.seed=1, train_split=5pct_seed1");
    assert_eq!(na["train_split"], "5pct");
    assert!(na["init"]["artifact"].get("run_id").is_none());
    let arms = group_arms(&[na.clone(), arm_config(&c).0, nb]);
    assert_eq!(arms, vec![vec![0, 2], vec![1]]);
    let cfgs = vec![na, arm_config(&c).0];
    assert_eq!(default_baseline(&cfgs), 1);
    let names = arm_names(&cfgs, 1);
    assert_eq!(
        names[0].0,
        "init=checkpoint pretrained.safetensors, lr=0.015"
    );
    assert_eq!(names[1].0, "init=imagenet_backbone");
    assert_eq!(
        names[0].1[0],
        ("init".into(), "checkpoint pretrained.safetensors".into())
    );
}

#[test]
fn numbers_print_like_python_and_configs_flatten() {
    assert_eq!(format_number(5e-5), "5e-05");
    assert_eq!(format_number(0.015), "0.015");
    assert_eq!(format_number(0.0001), "0.0001");
    assert_eq!(format_number(2.5e17), "2.5e+17");
    let f = flatten(&cfg(ckpt(7), 0.015, 1, "5pct_seed1"));
    assert_eq!(f["init.artifact.run_id"], "7");
    assert_eq!(f["augment.min_sizes"], "[512, 640]");
    assert_eq!(f["optim.weight_decay"], "0.0001");
    let g = flatten(&cfg(json!({"from": "scratch"}), 0.015, 2, "5pct_seed2"));
    assert_eq!(
        differing_paths(&[f, g]),
        vec![
            "init.artifact.name",
            "init.artifact.run_id",
            "init.from",
            "optim.seed",
            "train_split"
        ]
    );
}

/// (The summaries' n - 1 rule is `stats`' own test, `spread_needs_two_values`.)
#[test]
fn deltas_pair_by_seed() {
    let k = |s: &str, v: f64| (s.to_string(), v);
    let base = [k("a", 1.0), k("b", 2.0), k("c", 3.0)];
    let arm = [k("a", 1.5), k("b", 2.0), k("c", 4.0)];
    let d = delta(&base, &arm).unwrap();
    assert!(d.paired && d.n == 3);
    assert!((d.mean - 0.5).abs() < 1e-12);
    // diffs 0.5, 0, 1 → mean 0.5, std 0.5
    assert!((d.std.unwrap() - 0.5).abs() < 1e-12);
    let d = delta(&base, &[k("x", 3.0)]).unwrap();
    assert!(!d.paired && d.std.is_none() && (d.mean - 1.0).abs() < 1e-12);
    assert!(delta(&base, &[]).is_none());
}

#[test]
fn crossings_interpolate_between_evaluations() {
    let v = [0.1, 0.3, 0.5];
    assert_eq!(first_crossing(&v, 0.05), Some(0.0));
    let p = first_crossing(&v, 0.4).unwrap();
    assert!((p - 1.5).abs() < 1e-12);
    assert!((at_position(&[100.0, 200.0, 300.0], p) - 250.0).abs() < 1e-9);
    assert_eq!(first_crossing(&v, 0.6), None);
    // A dip does not count twice: the first crossing wins.
    assert_eq!(first_crossing(&[0.2, 0.6, 0.1, 0.7], 0.6), Some(1.0));
}

#[test]
fn mean_curves_need_shared_steps() {
    let a = vec![(10, 10.0, 0.1), (20, 20.0, 0.3)];
    let b = vec![(10, 12.0, 0.3), (20, 22.0, 0.5)];
    assert_eq!(
        mean_curve(&[a.clone(), b]).unwrap(),
        vec![(11.0, 0.2), (21.0, 0.4)]
    );
    assert!(mean_curve(&[a.clone(), vec![(10, 1.0, 0.1)]]).is_none());
    assert!(mean_curve(&[a]).is_none());
}

fn run(id: i64, config: Value, ap: f64, curve: &[(i64, f64)]) -> RunData {
    RunData {
        id,
        name: format!("run {id}"),
        kind: "finetune".into(),
        experiment_role: None,
        config,
        batch_size: Some(2),
        train_images: Some(10),
        finals: [("AP".to_string(), ap)].into_iter().collect(),
        final_source: FinalSource::EvalJson,
        mask_finals: BTreeMap::new(),
        per_class: vec![ClassAp {
            category_id: 1,
            name: "cat".into(),
            ap: ap + 0.1,
        }],
        eval_ap: curve
            .iter()
            .map(|&(step, value)| EvalPoint {
                step,
                value,
                wall: step as f64,
            })
            .collect(),
    }
}

/// A fine-tune from pre-training run 9's checkpoint at lr 0.015, on split `5pct_seed{seed}`.
fn aligndet_run(id: i64, seed: u64, ap: f64, curve: &[(i64, f64)]) -> RunData {
    let split = format!("5pct_seed{seed}");
    run(id, cfg(ckpt(9), 0.015, seed, &split), ap, curve)
}

/// A fine-tune from ImageNet weights at lr 0.01, on split `5pct_seed{seed}`.
fn baseline_run(id: i64, seed: u64, ap: f64, curve: &[(i64, f64)]) -> RunData {
    let split = format!("5pct_seed{seed}");
    let imagenet = json!({"from": "imagenet_backbone"});
    run(id, cfg(imagenet, 0.01, seed, &split), ap, curve)
}

#[test]
fn compare_builds_arms_deltas_convergence_and_diff() {
    let input = vec![
        aligndet_run(1, 1, 0.5, &[(10, 0.2), (20, 0.5), (30, 0.5)]),
        baseline_run(2, 1, 0.4, &[(10, 0.1), (20, 0.4), (30, 0.4)]),
        aligndet_run(3, 2, 0.6, &[(10, 0.3), (20, 0.6), (30, 0.6)]),
        baseline_run(4, 2, 0.4, &[(10, 0.2), (20, 0.4), (30, 0.4)]),
    ];
    let (c, order) = compare(&input, None, &[0.5, 0.9, 2.0]).unwrap();
    assert_eq!(order, vec![0, 2, 1, 3]);
    assert_eq!(c.baseline, 1, "the arm not started from a checkpoint");
    assert_eq!(c.arms[0].runs, vec![1, 3]);
    assert_eq!(
        (c.arms[0].label.as_str(), c.arms[1].label.as_str()),
        ("AlignDet", "baseline")
    );
    assert_eq!(
        c.arms[0].subtitle,
        "init=checkpoint pretrained.safetensors, lr=0.015"
    );
    assert!(d_ci(&c), "a paired delta of 2 seeds has a t interval");
    let ap = &c.stats[0];
    assert_eq!(ap.stat, "AP");
    assert!((ap.arms[0].summary.mean.unwrap() - 0.55).abs() < 1e-12);
    let d = ap.arms[0].delta.unwrap();
    assert!(d.paired && (d.mean - 0.15).abs() < 1e-12);
    // per-seed diffs 0.1 and 0.2 → std √0.005
    assert!((d.std.unwrap() - 0.005f64.sqrt()).abs() < 1e-12);
    assert!(ap.arms[1].delta.is_none());
    assert!((c.per_class[0].arms[0].delta.unwrap().mean - 0.15).abs() < 1e-12);
    // target 0.5 × 0.4 = 0.2: run 1 at step 10, run 3 at step 10 (0.3 ≥ 0.2),
    // run 2 between 10 (0.1) and 20 (0.4) → 13.33, run 4 at 10.
    let half = &c.convergence[0];
    assert!((half.target - 0.2).abs() < 1e-12);
    let r2 = half.runs.iter().find(|r| r.run_id == 2).unwrap();
    assert!((r2.step.unwrap() - 40.0 / 3.0).abs() < 1e-9);
    assert!((r2.epoch.unwrap() - 40.0 / 3.0 * 2.0 / 10.0).abs() < 1e-9);
    let base = &half.arms[1];
    assert!((base.mean_step.unwrap() - (40.0 / 3.0 + 10.0) / 2.0).abs() < 1e-9);
    assert!((half.arms[0].speedup.unwrap() - (40.0 / 3.0 + 10.0) / 20.0).abs() < 1e-9);
    assert_eq!(
        c.convergence[2].arms[1].reached, 0,
        "2 × final AP is never reached"
    );
    assert_eq!(c.convergence[2].arms[1].n, 2);
    let paths: Vec<&str> = c.config_diff.iter().map(|d| d.path.as_str()).collect();
    assert!(paths.contains(&"optim.lr") && paths.contains(&"optim.seed"));
    assert!(!paths.contains(&"optim.weight_decay"));
    let lr = c.config_diff.iter().find(|d| d.path == "optim.lr").unwrap();
    assert_eq!(lr.values[0].as_deref(), Some("0.015"));
    assert_eq!(lr.values[2].as_deref(), Some("0.01"));
    assert!(
        compare(&input, Some(2), &[0.5])
            .unwrap_err()
            .contains("0 to 1")
    );
}

/// The AP delta of arm 0 carries a CI: t(0.975; 1) × std / √2.
fn d_ci(c: &Comparison) -> bool {
    let d = c.stats[0].arms[0].delta.unwrap();
    (d.ci95.unwrap() - crate::stats::t975(1).unwrap() * d.std.unwrap() / 2f64.sqrt()).abs() < 1e-12
}

#[test]
fn convergence_leaves_out_runs_with_few_evaluations() {
    let input = vec![
        aligndet_run(1, 1, 0.5, &[(10, 0.2), (20, 0.5)]),
        baseline_run(2, 1, 0.4, &[(10, 0.1), (20, 0.3), (30, 0.4)]),
    ];
    let (c, _) = compare(&input, None, &[0.5]).unwrap();
    let row = &c.convergence[0];
    assert_eq!(row.runs.len(), 1, "run 1 has 2 evaluations");
    assert_eq!((row.arms[0].n, row.arms[1].n), (0, 1));
    let few = vec![baseline_run(3, 1, 0.4, &[(10, 0.4)])];
    assert!(
        compare(&few, None, &[0.5])
            .unwrap()
            .0
            .convergence
            .is_empty()
    );
}

#[test]
fn finals_prefer_eval_json_and_skip_undefined() {
    let last: BTreeMap<String, f64> =
        [("eval/AP".to_string(), 0.3), ("eval/APs".to_string(), -1.0)]
            .into_iter()
            .collect();
    let (f, src) = final_stats(None, &last);
    assert_eq!(src, FinalSource::LastEvalPoint);
    assert_eq!(f.len(), 1);
    let stats = [
        0.4, 0.8, 0.35, -1.0, 0.4, -1.0, 0.5, 0.6, 0.6, -1.0, 0.6, -1.0,
    ];
    let (f, src) = final_stats(Some(&stats), &last);
    assert_eq!(src, FinalSource::EvalJson);
    assert_eq!(f["AP"], 0.4);
    assert!(!f.contains_key("APs"));
    assert_eq!(final_stats(None, &BTreeMap::new()).1, FinalSource::None);
}

#[test]
fn mask_finals_come_from_segm_stats_or_the_last_segm_points() {
    let last: BTreeMap<String, f64> = [
        ("eval/AP".to_string(), 0.3),
        ("eval/segm_AP".to_string(), 0.25),
        ("eval/segm_AP50".to_string(), -1.0),
    ]
    .into_iter()
    .collect();
    let (f, src) = final_mask_stats(None, &last);
    assert_eq!(src, FinalSource::LastEvalPoint);
    assert_eq!(f, [("AP".to_string(), 0.25)].into_iter().collect());
    let segm = [0.2, 0.5, 0.1, -1.0, 0.2, 0.3, 0.3, 0.4, 0.4, -1.0, 0.4, 0.5];
    let (f, src) = final_mask_stats(Some(&segm), &last);
    assert_eq!(
        (src, f["AP"], f.contains_key("APs")),
        (FinalSource::EvalJson, 0.2, false)
    );
    // A box-only run: no mask numbers, even though it has box points.
    let boxes: BTreeMap<String, f64> = [("eval/AP".to_string(), 0.3)].into_iter().collect();
    assert_eq!(
        final_mask_stats(None, &boxes),
        (BTreeMap::new(), FinalSource::None)
    );
}

#[test]
fn mask_rows_follow_the_box_rows_with_their_own_deltas() {
    let mut runs = vec![baseline_run(1, 1, 0.30, &[]), aligndet_run(2, 1, 0.40, &[])];
    runs[0].mask_finals = [("AP".to_string(), 0.20)].into_iter().collect();
    runs[1].mask_finals = [("AP".to_string(), 0.26)].into_iter().collect();
    let (cmp, _) = compare(&runs, None, &[0.5]).unwrap();
    let names: Vec<&str> = cmp.stats.iter().map(|r| r.stat.as_str()).collect();
    assert_eq!(names, ["AP", "mask AP"]);
    let mask = &cmp.stats[1];
    let aligndet = mask.arms.iter().find(|a| a.delta.is_some()).unwrap();
    assert!((aligndet.delta.as_ref().unwrap().mean - 0.06).abs() < 1e-12);
}
