//! `POST /api/v1/experiments` (reusing a proposals run) and `GET /api/v1/experiments/{id}` with
//! the final evaluation of a finished fine-tune, against the real server and Postgres; the tests
//! speak the worker protocol themselves instead of training.

use aligndet_studio::experiments::*;
use aligndet_studio::*;
use serde_json::{Value, json};

#[test]
fn the_json_api_reuses_pseudo_boxes_and_reports_final_evaluations() {
    let f = fixture("exp-api");
    let s = &f.server;
    // A succeeded proposals run to reuse.
    let proposals = s.create_run(
        "boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let w = Proto::register(s);
    let (id, attempt, _) = w.claim().unwrap();
    assert_eq!(id, proposals);
    w.finish(id, attempt, "succeeded");
    let spec = json!({"name": "x", "dataset_id": f.dataset, "proposals_run_id": proposals});
    let r = s.api_post("experiments", &spec);
    assert_eq!(r.status(), 400);
    assert!(
        r.text().unwrap().contains("has no pseudo_boxes.json"),
        "pre-training reads the proposals run's pseudo_boxes.json"
    );
    // A proposals run that left its pseudo-boxes (what the real job uploads before succeeding).
    let proposals = s.create_run(
        "boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let (id, attempt, _) = w.claim().unwrap();
    assert_eq!(id, proposals);
    w.upload(
        id,
        attempt,
        "pseudo_boxes.json",
        br#"{"strategy": "aligndet", "images": []}"#.to_vec(),
    );
    w.finish(id, attempt, "succeeded");

    let spec = json!({
        "name": "api exp", "dataset_id": f.dataset, "detector": "retinanet",
        "proposals_run_id": proposals, "pretrain_steps": 10, "finetune_steps": 20,
        "finetune_batch_size": 2, "seeds": [1, 2, 3], "fractions": [5],
    });
    // The worker token is required.
    let r = s
        .http
        .post(format!("{}/api/v1/experiments", s.url))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.api_post("experiments", &spec);
    assert_eq!(r.status(), 200);
    let created: Value = r.json().unwrap();
    let exp = created["id"].as_i64().unwrap();
    let runs = created["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1 + 3 * 2, "no new proposals run: {created}");
    assert_eq!(runs[0]["role"], "pretrain_box");
    let pb = runs[0]["id"].as_i64().unwrap();
    let mut seeds: Vec<(String, i64, i64)> = runs[1..]
        .iter()
        .map(|r| {
            (
                r["role"].as_str().unwrap().to_string(),
                r["seed"].as_i64().unwrap(),
                r["fraction"].as_i64().unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert_eq!(
        seeds,
        vec![
            ("aligndet".into(), 1, 5),
            ("aligndet".into(), 2, 5),
            ("aligndet".into(), 3, 5),
            ("baseline".into(), 1, 5),
            ("baseline".into(), 2, 5),
            ("baseline".into(), 3, 5),
        ]
    );
    let pc: Value = serde_json::from_str(
        &f.db
            .query(&format!("SELECT config FROM runs WHERE id = {pb}")),
    )
    .unwrap();
    assert_eq!(pc["proposals_run_id"], proposals);
    assert_eq!(
        pc["max_boxes_per_image"], 50,
        "RetinaNet's reference setting"
    );

    // Bad specs are refused with the field named.
    for (bad, needle) in [
        (
            json!({"name": "x", "dataset_id": f.dataset, "seeds": []}),
            "seeds",
        ),
        (
            json!({"name": "x", "dataset_id": 999}),
            "dataset_id: dataset 999 not found",
        ),
        (
            json!({"name": "x", "dataset_id": f.dataset, "proposals_run_id": pb}),
            "proposals_run_id: run",
        ),
    ] {
        let r = s.api_post("experiments", &bad);
        assert_eq!(r.status(), 400, "{bad}");
        let text = r.text().unwrap();
        assert!(text.contains(needle), "{text}");
    }

    // Pre-training and the baselines are claimable; the pre-training succeeds.
    let mut claimed = Vec::new();
    while let Some(c) = w.claim() {
        claimed.push(c);
    }
    assert_eq!(claimed.len(), 1 + 3, "pre-training and three baselines");
    let (_, pb_attempt, pb_spec) = claimed.iter().find(|c| c.0 == pb).unwrap();
    assert_eq!(pb_spec["config"]["kind"], "pretrain_box");
    w.finish(pb, *pb_attempt, "succeeded");
    // A baseline finishes with its evaluation; another fails (it stands alone).
    let baselines: Vec<&(i64, i64, Value)> = claimed.iter().filter(|c| c.0 != pb).collect();
    let (b1, b1_attempt, _) = baselines[0];
    let eval = json!({
        "stats": [0.25, 0.5, 0.2, -1.0, 0.3, -1.0, 0.4, 0.5, 0.5, -1.0, 0.5, -1.0],
        "per_class": [], "per_size": [], "pr_curves": [],
        "num_images": 2, "num_detections": 4, "seconds": 0.01,
        "segm": {"stats": [0.2, 0.4, 0.1, -1.0, 0.2, -1.0, 0.3, 0.4, 0.4, -1.0, 0.4, -1.0],
                 "per_class": [], "per_size": []}
    });
    w.upload(
        *b1,
        *b1_attempt,
        "eval.json",
        serde_json::to_vec(&eval).unwrap(),
    );
    w.finish(*b1, *b1_attempt, "succeeded");
    let (b2, b2_attempt, _) = baselines[1];
    w.finish(*b2, *b2_attempt, "failed");

    let v = s.api_get(&format!("experiments/{exp}"));
    assert_eq!(v["id"], exp);
    assert_eq!(v["done"], false);
    assert_eq!(v["spec"]["proposals_run_id"], proposals);
    let run = |id: i64| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(run(pb)["status"], "succeeded");
    assert_eq!(run(*b1)["status"], "succeeded");
    assert_eq!(run(*b1)["eval"]["AP"], 0.25);
    assert_eq!(run(*b1)["eval"]["AP50"], 0.5);
    assert_eq!(run(*b1)["eval"]["segm_AP"], 0.2, "mask AP beside box AP");
    assert_eq!(
        run(*b1)["eval"]["APs"],
        Value::Null,
        "undefined (-1) left out"
    );
    // The page shows mask AP beside box AP, in the summary and per run.
    let page = s.get(&format!("/experiments/{exp}")).text().unwrap();
    assert!(
        page.contains("<th>baseline mask AP</th>"),
        "summary mask columns"
    );
    assert!(page.contains("20.0 ± — (n=1)"), "the baseline's mask AP");
    assert!(
        page.contains("<td class=\"mask-ap\">20.0</td>"),
        "its run row"
    );
    assert_eq!(run(*b2)["status"], "failed");
    assert_eq!(run(*b2)["eval"], Value::Null);
    let aligned: Vec<Value> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "aligndet")
        .cloned()
        .collect();
    assert_eq!(aligned.len(), 3);
    for a in &aligned {
        assert_eq!(a["status"], "queued");
        assert_eq!(a["waiting_for"], json!([]), "the pre-training succeeded");
    }
    // Now the AlignDet fine-tunes are claimable.
    let mut more = Vec::new();
    while let Some(c) = w.claim() {
        more.push(c.0);
    }
    more.sort();
    let mut expected: Vec<i64> = aligned.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    expected.sort();
    assert_eq!(more, expected);

    // A queued proposals run can be shared: the new experiment's pre-training waits for it.
    let pending = s.create_run(
        "shared boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let r = s.api_post(
        "experiments",
        &json!({"name": "shares", "dataset_id": f.dataset, "proposals_run_id": pending,
                "seeds": [1, 2, 3], "fractions": [5]}),
    );
    assert_eq!(r.status(), 200);
    let shared: Value = r.json().unwrap();
    let shared_pb = shared["runs"][0]["id"].as_i64().unwrap();
    assert_eq!(shared["runs"][0]["role"], "pretrain_box");
    let v = s.api_get(&format!("experiments/{}", shared["id"]));
    let pb_row = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == shared_pb)
        .cloned()
        .unwrap();
    assert_ne!(
        pb_row["waiting_for"],
        json!([]),
        "waits for the pending proposals"
    );
    let mut claimed_now = Vec::new();
    while let Some(c) = w.claim() {
        claimed_now.push(c.0);
    }
    assert!(claimed_now.contains(&pending));
    assert!(!claimed_now.contains(&shared_pb), "pre-training waits");

    // A second experiment whose pre-training fails: its AlignDet arm fails, baselines do not.
    let r = s.api_post(
        "experiments",
        &json!({"name": "doomed", "dataset_id": f.dataset, "proposals_run_id": proposals,
                "seeds": [1], "fractions": [10], "finetune_steps": 10, "pretrain_steps": 10}),
    );
    assert_eq!(r.status(), 200);
    let created: Value = r.json().unwrap();
    let exp2 = created["id"].as_i64().unwrap();
    let id_of = |role: &str| {
        created["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["role"] == role)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (pb2, aligned2, base2) = (id_of("pretrain_box"), id_of("aligndet"), id_of("baseline"));
    let (claimed_pb2, attempt, _) = w.claim().unwrap();
    assert_eq!(claimed_pb2, pb2);
    w.finish(pb2, attempt, "failed");
    let v = s.api_get(&format!("experiments/{exp2}"));
    let find = |id: i64| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find(aligned2)["status"], "failed");
    assert_eq!(
        find(aligned2)["error"],
        format!("waits for run {pb2}, which failed")
    );
    assert_eq!(find(base2)["status"], "queued");
    let page = s.get(&format!("/experiments/{exp2}")).text().unwrap();
    assert!(page.contains(&format!("waits for run {pb2}, which failed")));

    // A fine-tuning ablation on an existing pre-training: only the fine-tunes are made; the
    // AlignDet arm waits for the (still queued) pre-training, the baseline for nothing.
    let r = s.api_post(
        "experiments",
        &json!({"name": "ablation", "dataset_id": f.dataset, "pretrained_run_id": shared_pb,
                "seeds": [1, 2], "fractions": [5], "lr_multiplier": 1.0, "wd_multiplier": 1.0}),
    );
    assert_eq!(r.status(), 200);
    let ablation: Value = r.json().unwrap();
    let v = s.api_get(&format!("experiments/{}", ablation["id"]));
    let rows = v["runs"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        match row["role"].as_str().unwrap() {
            "aligndet" => assert_eq!(row["waiting_for"], json!([shared_pb])),
            "baseline" => assert_eq!(row["waiting_for"], json!([])),
            other => panic!("unexpected role {other}"),
        }
    }
    assert_eq!(v["spec"]["pretrained_run_id"], shared_pb);
    assert_eq!(v["spec"]["pretrain_steps"], Value::Null);
    let page = s
        .get(&format!("/experiments/{}", ablation["id"]))
        .text()
        .unwrap();
    assert!(page.contains(&format!(
        "pre-trained detector reused from <a href=\"/runs/{shared_pb}\">"
    )));
    let form = s.get("/experiments/new").text().unwrap();
    assert!(
        form.contains(&format!("<option value=\"{shared_pb}\">reuse #{shared_pb}")),
        "the form offers it"
    );
    for (bad, needle) in [
        (
            json!({"pretrained_run_id": pb2}),
            format!("pretrained_run_id: run {pb2} is failed"),
        ),
        (
            json!({"pretrained_run_id": proposals}),
            format!("pretrained_run_id: run {proposals} is a proposals run"),
        ),
        (
            json!({"pretrained_run_id": shared_pb, "detector": "retinanet"}),
            format!("pretrained_run_id: run {shared_pb} pre-trained fcos, not retinanet"),
        ),
        (
            json!({"pretrained_run_id": shared_pb, "pretrain_steps": 5}),
            format!("pretrain_steps: the pre-training run {shared_pb} is reused"),
        ),
        (
            json!({"pretrained_run_id": 999_999}),
            "pretrained_run_id: run 999999 not found".to_string(),
        ),
    ] {
        let mut body =
            json!({"name": "bad reuse", "dataset_id": f.dataset, "seeds": [1], "fractions": [5]});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s.api_post("experiments", &body);
        assert_eq!(r.status(), 400, "{bad}");
        let text = r.text().unwrap();
        assert!(text.contains(&needle), "{text}");
    }

    // The table script reads the same API (stdlib Python; skipped where there is no python3).
    let token = TempDir::new("exp-token");
    let token_file = token.path().join("token");
    std::fs::write(&token_file, format!("{}\n", s.user_token)).unwrap();
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("scripts/semi_table.py"))
        .args(["--url", &s.url, "--token-file"])
        .arg(&token_file)
        .args(["--experiments", &exp.to_string()])
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One row: the dataset, the detector, 5 %, the one finished baseline (AP 0.25 → 25.0).
        let row = text
            .lines()
            .find(|l| l.starts_with("small") && l.contains("retinanet"))
            .unwrap_or_else(|| panic!("no table row: {text}"));
        assert!(row.contains("5%") && row.contains("25.0 ± 0.0"), "{row}");
        assert!(row.contains("0/3"), "no paired seed yet: {row}");
        // Its eval.json has mask AP (0.2 → 20.0): the mask columns follow.
        assert!(text.contains("baseline mask AP"), "{text}");
        assert!(row.contains("20.0 ± 0.0"), "{row}");
    }
}
