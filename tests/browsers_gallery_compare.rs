//! Browsers checked in a real Chromium against a real server and Postgres: the dataset gallery
//! filters by class and enlarges an image on click; the comparison page keeps its log-scale,
//! smoothing and x-axis controls in the URL.

use aligndet_studio::boxes::{IMAGES, fixture};
use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn the_dataset_gallery_filters_by_class_and_enlarges_on_click() {
    let f = fixture("browsers-data");
    let with_boat: Vec<i64> = {
        let mut v: Vec<i64> = f
            .anns
            .iter()
            .filter(|a| a["category_id"] == 3)
            .map(|a| a["image_id"].as_i64().unwrap())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(with_boat, [2, 5]);
    let r = f.server.get(&format!("/datasets/{}?class=99", f.dataset));
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("has no class with id 99"));

    ChromeDriver::start().signed_in(&f.server, async |c| {
        let url = format!("{}/datasets/{}", f.server.url, f.dataset);
        c.goto(&url).await.unwrap();
        let figures = async || {
            c.execute(
                "return [...document.querySelectorAll('#image-grid figure')].map(f => \
                 [Number(f.dataset.image), [...f.querySelectorAll('rect.box')].map(r => Number(r.dataset.cat))]);",
                vec![],
            )
            .await
            .unwrap()
        };
        assert_eq!(figures().await.as_array().unwrap().len(), IMAGES as usize);
        // Filter through the form: only the images holding a boat.
        click(c, Locator::Css("#class-filter-select option[value='3']")).await;
        click(c, Locator::Id("apply-class-filter")).await;
        wait_for_query(c, "class=3").await;
        let shown = figures().await;
        let ids: Vec<i64> = shown
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f[0].as_i64().unwrap())
            .collect();
        assert_eq!(ids, with_boat);
        for fig in shown.as_array().unwrap() {
            assert!(fig[1].as_array().unwrap().contains(&json!(3)), "{fig}");
        }
        let note = c.find(Locator::Id("filter-note")).await.unwrap();
        assert!(note.text().await.unwrap().contains("2 images with at least one boat box"));

        // A click enlarges the image with its boxes; Escape closes it.
        let thumb_width = c
            .execute(
                "return document.querySelector('#image-grid figure img').getBoundingClientRect().width;",
                vec![],
            )
            .await
            .unwrap();
        click(c, Locator::Css("#image-grid figure[data-image='5'] .frame")).await;
        let big = c
            .execute(
                "const d = document.getElementById('lightbox'); \
                 const img = document.getElementById('lightbox-image'); \
                 return [d.open, d.dataset.image, img.getBoundingClientRect().width, \
                   d.querySelectorAll('rect.box').length, \
                   document.querySelectorAll(\"#image-grid figure[data-image='5'] rect.box\").length];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(big[0], true, "{big}");
        assert_eq!(big[1], "5");
        assert!(num(&big[2]) > 1.5 * num(&thumb_width), "{big} vs {thumb_width}");
        assert_eq!(big[3], big[4], "the boxes come along");
        click(c, Locator::Id("lightbox-close")).await;
        let open = c
            .execute("return document.getElementById('lightbox').open;", vec![])
            .await
            .unwrap();
        assert_eq!(open, false);
    });
}

#[test]
fn the_comparison_keeps_log_scale_smoothing_and_x_axis_in_the_url() {
    let f = fixture("browsers-cmp");
    let mut runs = Vec::new();
    for (k, lr) in [0.01, 0.02].into_iter().enumerate() {
        let run = f.insert_run("finetune", &format!("lr{lr}"), &f.finetune_config(lr));
        let mut values = Vec::new();
        for step in 1..=30i64 {
            let noise = if step % 2 == 0 { 0.2 } else { -0.2 };
            let loss = 3.0 / step as f64 + noise + k as f64 * 0.1;
            values.push(("loss/total", step, loss));
        }
        for step in [10i64, 20, 30] {
            values.push(("eval/AP", step, 0.01 * step as f64));
        }
        insert_metrics(&f.db, run, &values);
        runs.push(run.to_string());
    }
    let runs = runs.join(",");
    ChromeDriver::start().signed_in(&f.server, async |c| {
        c.goto(&format!("{}/compare?runs={runs}", f.server.url))
            .await
            .unwrap();
        let faint = async || {
            c.execute(
                "return document.querySelectorAll('#chart-loss polyline[opacity=\"0.25\"]').length;",
                vec![],
            )
            .await
            .unwrap()
        };
        assert_eq!(faint().await, 0, "no smoothing at first");
        click(c, Locator::Id("compare-logy")).await;
        c.execute(
            "document.getElementById('compare-smooth').value = '0.6'; \
             document.querySelector(\"#compare-x option[value='wall']\").selected = true;",
            vec![],
        )
        .await
        .unwrap();
        click(c, Locator::Css("#compare-controls button[type='submit']")).await;
        let u = wait_for_query(c, "smooth=").await;
        let query = u.query().unwrap_or("");
        for part in ["logy=1", "smooth=0.6", "x=wall", "runs="] {
            assert!(query.contains(part), "{part} in {query}");
        }
        assert!(!query.contains("logx"), "{query}");
        // After the reload the controls show the view and the charts draw it.
        let logy = c.find(Locator::Id("compare-logy")).await.unwrap();
        assert_eq!(logy.prop("checked").await.unwrap().as_deref(), Some("true"));
        let smooth = c.find(Locator::Id("compare-smooth")).await.unwrap();
        assert_eq!(smooth.prop("value").await.unwrap().as_deref(), Some("0.6"));
        assert_eq!(faint().await, 2, "each run's raw loss faint behind its smoothed curve");
        let texts = c
            .execute(
                "return [...document.querySelectorAll('#chart-loss text')].map(t => t.textContent);",
                vec![],
            )
            .await
            .unwrap();
        let texts: Vec<&str> = texts
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().trim())
            .collect();
        assert!(
            texts.contains(&"seconds since the run's first metric"),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.contains("at or below zero not drawn on the log y axis")),
            "the loss dips below zero: {texts:?}"
        );
        let hover = c
            .find(Locator::Css("#chart-loss g.series circle title"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        assert!(hover.contains("(smoothed; raw "), "{hover}");
    });
    // A smoothing weight that is not one: said on the page, not a failure.
    let r = f.server.get(&format!("/compare?runs={runs}&smooth=abc"));
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("smooth=abc ignored"));
}
