use super::*;

/// The numbers of an SVG attribute `name` in every element of kind `tag` with `class` in its
/// class list (the SVG strings are ours: one attribute order, double quotes).
fn attrs(svg: &str, tag: &str, class: &str, name: &str) -> Vec<f64> {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .filter(|e| {
            e.split("class=\"")
                .nth(1)
                .and_then(|c| c.split('"').next())
                .is_some_and(|c| c.split(' ').any(|w| w == class))
        })
        .filter_map(|e| {
            e.split(&format!(" {name}=\""))
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn charts_render_svg_with_data() {
    let s = line_chart(
        "loss",
        "step",
        &[(
            "loss".into(),
            (0..5000)
                .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                .collect(),
        )],
    );
    assert!(
        s.starts_with("<svg") && s.contains("polyline"),
        "{}",
        &s[..200.min(s.len())]
    );
    // Hover targets, bounded per line.
    let n = s.matches("<title>").count();
    assert!(n > 10 && n <= marks::HOVER_POINTS_PER_LINE, "{n}");
    assert!(
        s.contains("<title>loss · step 0: 1</title>"),
        "the first point's value"
    );
    let h = histogram("sizes", "px", &[1.0, 2.0, 30.0], 10);
    assert!(h.contains("<rect"));
}

#[test]
fn overlay_draws_thin_runs_and_thick_means() {
    let line = |arm, thick, legend: Option<&str>| OverlayLine {
        arm,
        points: vec![(0.0, 0.1), (10.0, 0.3)],
        thick,
        legend: legend.map(String::from),
        name: format!("run {arm}"),
    };
    let labels = Labels {
        title: "AP",
        x: "step",
        y: "AP",
    };
    let lines = [
        line(0, false, None),
        line(1, false, Some("#1")),
        line(0, true, Some("#0 mean")),
    ];
    let s = overlay_chart(&labels, &lines, View::default());
    assert!(s.contains("polyline") && s.contains("#0 mean"));
    assert!(s.contains("stroke-width=\"3\""));
    assert!(
        !s.contains("opacity=\"0.25\""),
        "no faint raw curve without smoothing"
    );
    // Smoothing keeps each run faint and raw behind its smoothed curve (lines of 3+ points).
    let long = |arm, thick| OverlayLine {
        points: vec![(0.0, 0.1), (5.0, 0.4), (10.0, 0.3)],
        ..line(arm, thick, None)
    };
    let smooth = View {
        smooth: 0.6,
        ..View::default()
    };
    let s = overlay_chart(&labels, &[long(0, false), long(1, true)], smooth);
    assert_eq!(s.matches("opacity=\"0.25\"").count(), 2, "{s}");
    assert!(s.contains("(smoothed; raw "));
    assert_eq!(arm_color_css(1), "#ff7f0e");
}

#[test]
fn a_single_point_is_a_marker_inside_the_plot_area() {
    let s = line_chart("AP", "step", &[("AP".into(), vec![(20.0, 0.3)])]);
    let (cx, cy) = (
        attrs(&s, "circle", "marker", "cx"),
        attrs(&s, "circle", "marker", "cy"),
    );
    assert_eq!(cx.len(), 1, "{s}");
    let (x, y) = (
        attrs(&s, "rect", "plot-area", "x")[0],
        attrs(&s, "rect", "plot-area", "y")[0],
    );
    let w = attrs(&s, "rect", "plot-area", "width")[0];
    let h = attrs(&s, "rect", "plot-area", "height")[0];
    // Well inside, not on an edge: the axis is padded around the one value.
    assert!(
        cx[0] > x + 0.2 * w && cx[0] < x + 0.8 * w,
        "{cx:?} in {x}+{w}"
    );
    assert!(
        cy[0] > y + 0.2 * h && cy[0] < y + 0.8 * h,
        "{cy:?} in {y}+{h}"
    );
    assert!(s.contains("<title>AP · step 20: 0.3</title>"));
    // The x ticks read around 20, not "20.0 … 21.0".
    assert!(s.contains(">\n20\n<"), "a tick at 20");
}

#[test]
fn flat_series_never_read_minus_zero() {
    let s = line_chart(
        "flat",
        "step",
        &[("zero".into(), (0..50).map(|i| (i as f64, 0.0)).collect())],
    );
    // plotters writes a text element's content on a line of its own.
    for bad in ["-0", "-0.0", "−0.0", "-0.00"] {
        assert!(!s.contains(&format!(">\n{bad}\n<")), "{bad} in {s}");
    }
    assert!(s.contains(">\n0.0\n<"), "{s}");
}

#[test]
fn legend_sits_below_the_plot_and_colours_differ() {
    let series: Vec<(String, Vec<(f64, f64)>)> = (0..4)
        .map(|k| {
            (
                format!("s{k}"),
                (0..10).map(|i| (i as f64, (i * k) as f64)).collect(),
            )
        })
        .collect();
    let s = line_chart("four", "step", &series);
    let plot_bottom =
        attrs(&s, "rect", "plot-area", "y")[0] + attrs(&s, "rect", "plot-area", "height")[0];
    let legend = s.split("<g class=\"legend\">").nth(1).expect("a legend");
    let ys: Vec<f64> = legend
        .split(" y1=\"")
        .skip(1)
        .filter_map(|t| t.split('"').next()?.parse().ok())
        .collect();
    assert_eq!(ys.len(), 4);
    assert!(
        ys.iter().all(|y| *y > plot_bottom + 20.0),
        "{ys:?} below {plot_bottom}"
    );
    let colours: std::collections::BTreeSet<&str> = legend
        .split("stroke=\"")
        .skip(1)
        .filter_map(|t| t.split('"').next())
        .collect();
    assert_eq!(colours.len(), 4);
}

#[test]
fn log_axes_leave_out_non_positive_points_and_say_so() {
    let pts = vec![(1.0, -1.0), (2.0, 0.0), (3.0, 0.1), (4.0, 10.0)];
    let view = View {
        log_y: true,
        ..View::default()
    };
    let labels = Labels {
        title: "t",
        x: "step",
        y: "loss",
    };
    let s = line_chart_with(&labels, &[("v".into(), pts.clone())], view);
    assert!(
        s.contains("2 points at or below zero not drawn on the log y axis"),
        "{s}"
    );
    assert_eq!(attrs(&s, "circle", "marker", "cx").len(), 2);
    // Every point ≤ 0 on both axes: an empty frame, no panic.
    let all = View {
        log_x: true,
        log_y: true,
        smooth: 0.0,
    };
    let s = line_chart_with(&labels, &[("v".into(), vec![(0.0, -1.0)])], all);
    assert!(s.contains("1 point at or below zero"), "{s}");
    assert!(s.contains(">\n1\n<"), "log ticks");
}

#[test]
fn smoothing_draws_the_raw_curve_faint_behind() {
    let pts: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, (i % 7) as f64)).collect();
    let view = View {
        smooth: 0.6,
        ..View::default()
    };
    let labels = Labels {
        title: "t",
        x: "step",
        y: "",
    };
    let s = line_chart_with(&labels, &[("loss".into(), pts)], view);
    assert_eq!(
        s.matches("opacity=\"0.25\"").count(),
        1,
        "the raw curve, faint"
    );
    assert!(s.contains("(smoothed; raw "));
}
