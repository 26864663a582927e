//! The pre-training run pages against the real server and Postgres: both kinds' grouped curves,
//! pseudo-box source, artifacts, pre-filled next-step links and load report per module, and the
//! new-run page's detector defaults in a browser. Input runs, metrics and artifacts are inserted
//! directly (`support/pretrain.rs`): no worker is needed.

use aligndet_studio::pretrain::*;
use aligndet_studio::*;
use serde_json::json;

#[test]
fn pretraining_run_pages_group_their_curves_and_link_the_next_step() {
    let f = fixture("pt-pages");
    // A box-domain run with a hostile name, its metrics and artifact.
    let run = insert_run(
        &f.db,
        "pretrain_box",
        HOSTILE,
        &json!({"kind": "pretrain_box", "dataset_id": f.dataset, "proposals_run_id": f.proposals,
               "detector": "retinanet", "backbone": "efficientnet_lite0",
               "backbone_init": {"from": "checkpoint", "artifact": {"run_id": f.image_run, "name": "backbone.safetensors"}}}),
        "running",
    );
    let mut points = Vec::new();
    for step in 1..=6i64 {
        let s = step as f64;
        points.push(("loss/contrastive", step, 4.0 / s));
        points.push(("loss/regression", step, 1.0 / s));
        points.push(("loss/centerness", step, 0.5 / s));
        points.push(("train/lr", step, 0.001 * s));
        points.push(("train/ema_momentum", step, 0.996 + 0.0005 * s));
        points.push(("pretrain/positives", step, 100.0 + s));
        points.push(("pretrain/instances", step, 20.0));
        points.push(("train/images_per_s", step, 10.0 + s));
    }
    insert_metrics(&f.db, run, &points);

    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    for key in [
        "loss",
        "lr",
        "ema-momentum",
        "pretrain-counts",
        "train/images_per_s",
    ] {
        assert!(page.contains(&format!("data-key=\"{key}\"")), "chart {key}");
    }
    for key in [
        "loss/contrastive",
        "train/lr",
        "pretrain/positives",
        "train/ema_momentum",
    ] {
        assert!(
            !page.contains(&format!("data-key=\"{key}\"")),
            "{key} is drawn in its group, not alone"
        );
    }
    for term in [
        "loss/contrastive",
        "loss/regression",
        "loss/centerness",
        "pretrain/positives",
        "pretrain/instances",
    ] {
        assert!(page.contains(term), "legend {term}");
    }
    let live = f.server.get(&format!("/runs/{run}/live")).text().unwrap();
    assert!(live.contains("data-key=\"loss\"") && live.contains("data-key=\"pretrain-counts\""));
    // The pseudo-box source, with its browser; the backbone's run; the artifact and its note.
    let source = page
        .split("id=\"pseudo-box-source\">")
        .nth(1)
        .and_then(|s| s.split("</td>").next())
        .expect("pseudo-box source");
    assert!(source.contains(&format!("href=\"/runs/{}\"", f.proposals)));
    assert!(source.contains(&format!("href=\"/runs/{}/proposals\"", f.proposals)));
    assert!(source.contains("3 kept boxes on 2 images"));
    assert!(source.contains(HOSTILE_ESCAPED));
    let init = page
        .split("id=\"backbone-init\">")
        .nth(1)
        .and_then(|s| s.split("</td>").next())
        .unwrap();
    assert!(
        init.contains("backbone.safetensors")
            && init.contains(&format!("href=\"/runs/{}\"", f.image_run))
    );
    assert!(page.contains(
        "<code>pretrained.safetensors</code> <span class=\"hint\">(not written yet)</span>"
    ));
    insert_artifact(f.data.path(), &f.db, run, "pretrained.safetensors", b"w");
    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(page.contains(&format!(
        "href=\"/runs/{run}/artifacts/pretrained.safetensors\""
    )));
    assert!(page.contains("without the pre-training predictors"));
    assert!(page.contains(&format!(
        "init=checkpoint:{run}:pretrained.safetensors#finetune-form\" id=\"finetune-from-this\""
    )));
    assert!(page.contains("detector=retinanet"));
    // The hostile name: escaped in the title and everywhere else.
    assert!(page.contains(&format!("<h1>Run #{run}: {HOSTILE_ESCAPED}</h1>")));
    assert!(!page.contains(HOSTILE));

    // An image-domain run: its curves, and "use as backbone" pre-fills the box-domain form.
    let moco = insert_run(
        &f.db,
        "pretrain_image",
        "moco page",
        &json!({"kind": "pretrain_image", "dataset_id": f.dataset, "backbone": "resnet18"}),
        "succeeded",
    );
    let mut points = Vec::new();
    for step in 1..=4i64 {
        points.push(("loss/contrastive", step, 5.0 - step as f64));
        points.push(("train/accuracy", step, 0.2 * step as f64));
        points.push(("train/lr", step, 0.03));
    }
    insert_metrics(&f.db, moco, &points);
    insert_artifact(f.data.path(), &f.db, moco, "backbone.safetensors", b"b");
    let page = f.server.get(&format!("/runs/{moco}")).text().unwrap();
    for key in ["loss", "accuracy", "lr"] {
        assert!(page.contains(&format!("data-key=\"{key}\"")), "chart {key}");
    }
    assert!(!page.contains("data-key=\"train/accuracy\""));
    let href = page
        .split("id=\"use-as-backbone\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|rest| rest.split('"').next())
        .expect("use-as-backbone link")
        .replace("&#38;", "&");
    let form = f.server.get(&href).text().unwrap();
    let pb = &form[form.find("id=\"pretrain-box-form\"").unwrap()..];
    let pb = &pb[..pb.find("</form>").unwrap()];
    assert!(pb.contains(&format!(
        "<option value=\"checkpoint:{moco}:backbone.safetensors\" data-backbone=\"resnet18\" selected>"
    )));
    assert!(pb.contains("<option value=\"resnet18\" selected>"));

    // A fine-tune from the pre-trained detector: its load report per module.
    let ft = insert_run(
        &f.db,
        "finetune",
        "ft from aligned",
        &json!({"kind": "finetune", "dataset_id": f.dataset, "detector": "retinanet",
               "backbone": "efficientnet_lite0",
               "init": {"from": "checkpoint", "artifact": {"run_id": run, "name": "pretrained.safetensors"}}}),
        "succeeded",
    );
    let load = json!({
        "source": format!("checkpoint run {run} artifact pretrained.safetensors"),
        "loaded": ["backbone.body.stem.0.weight", "backbone.body.blocks.1.0.weight",
                   "backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.0.0.weight",
                   "head.classification_head.conv.0.0.weight", "head.regression_head.conv.0.0.weight"],
        "missing": ["head.classification_head.cls_logits.weight", "head.regression_head.bbox_reg.weight"],
        "unexpected": [],
        "shape_mismatch": []
    });
    insert_artifact(
        f.data.path(),
        &f.db,
        ft,
        "load_report.json",
        load.to_string().as_bytes(),
    );
    let page = f.server.get(&format!("/runs/{ft}")).text().unwrap();
    let modules = page
        .split("id=\"load-modules\"")
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("modules table");
    for (module, row) in [
        (
            "backbone.body",
            "<td>2</td><td>0</td><td>0</td><td>0</td><td>all loaded</td>",
        ),
        (
            "backbone.fpn",
            "<td>2</td><td>0</td><td>0</td><td>0</td><td>all loaded</td>",
        ),
        (
            "head.classification_head",
            "<td>1</td><td>1</td><td>0</td><td>0</td><td>partly loaded</td>",
        ),
        (
            "head.regression_head",
            "<td>1</td><td>1</td><td>0</td><td>0</td><td>partly loaded</td>",
        ),
    ] {
        assert!(
            modules.contains(&format!("<td><code>{module}</code></td>{row}")),
            "{module}: {modules}"
        );
    }
    assert!(page.contains("2 of 4 modules loaded completely"));
    assert!(page.contains(&format!("id=\"init-run\">pretrain_box run #{run}</a>")));
}

#[test]
fn in_a_browser_the_detector_sets_its_defaults_and_the_rule_shows_its_numbers() {
    let f = fixture("pt-browser");
    let driver = ChromeDriver::start();
    let url = format!("{}/runs/new", f.server.url);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let box_run = f.box_run;
    runtime.block_on(async {
        use fantoccini::Locator;
        let c = driver.client_for(&f.server).await;
        c.goto(&url).await.unwrap();
        let value = async |css: &str| {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap_or_default()
        };
        let set = async |id: &str, v: &str| {
            c.execute(
                "const s = document.getElementById(arguments[0]); s.value = arguments[1]; \
                 s.dispatchEvent(new Event('change')); s.dispatchEvent(new Event('input'));",
                vec![json!(id), json!(v)],
            )
            .await
            .unwrap();
        };
        let pb = "#pretrain-box-form";
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "2048");
        set("pb-detector", "faster_rcnn").await;
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "4096");
        assert_eq!(value(&format!("{pb} input[name=lr]")).await, "0.02");
        set("pb-detector", "retinanet").await;
        assert_eq!(
            value(&format!("{pb} input[name=max_boxes_per_image]")).await,
            "50"
        );
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "2048");
        assert_eq!(value(&format!("{pb} input[name=lr]")).await, "0.01");

        // Fine-tune: the rule's box appears for a pre-trained detector, with its numbers.
        let rule = c
            .find(Locator::Css("#finetune-form .aligned-rule"))
            .await
            .unwrap();
        assert!(
            !rule.is_displayed().await.unwrap(),
            "hidden for the ImageNet init"
        );
        set(
            "ft-init",
            &format!("checkpoint:{box_run}:pretrained.safetensors"),
        )
        .await;
        assert!(rule.is_displayed().await.unwrap());
        c.execute(
            "const i = document.querySelector('#finetune-form input[name=lr]'); i.value = '0.02'; \
             i.dispatchEvent(new Event('input'));",
            vec![],
        )
        .await
        .unwrap();
        let numbers = c.find(Locator::Id("ft-aligned-numbers")).await.unwrap();
        assert_eq!(
            numbers.text().await.unwrap(),
            "lr 0.03, weight decay 0.00005"
        );
        c.close().await.unwrap();
    });
}
