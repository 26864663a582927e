//! How a reader asked to see a run's charts, from the URL (`?x=time&logy=1&smooth=0.6`), so a
//! view can be linked and survives a reload: which x axis, log scales, EMA smoothing. A value
//! the page cannot use is ignored and said so, never a failure.

use crate::db::runs::RunRow;
use crate::plots::View;
use crate::state::AppState;
use aligndet_common::jobs::RunKind;
use std::collections::HashMap;

/// The x axes a run's training curves can be drawn against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XChoice {
    #[default]
    Step,
    /// Seconds since the run's first metric.
    Time,
    /// Epochs: images seen (step × batch size) over the training split's size.
    Epoch,
}

impl XChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            XChoice::Step => "step",
            XChoice::Time => "time",
            XChoice::Epoch => "epoch",
        }
    }

    /// The axis title.
    pub fn label(self) -> &'static str {
        match self {
            XChoice::Step => "optimizer step",
            XChoice::Time => "seconds since the run's first metric",
            XChoice::Epoch => "epoch (images seen / training split size)",
        }
    }
}

/// The parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartQuery {
    pub x: XChoice,
    pub view: View,
    /// What was ignored, and why, for the page to say.
    pub notes: Vec<String>,
}

impl ChartQuery {
    /// From a raw query string; unknown parameters are someone else's and pass silently.
    pub fn parse(raw: Option<&str>) -> ChartQuery {
        let mut q = ChartQuery::default();
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        for (k, v) in pairs {
            let v = v.trim();
            match k.as_str() {
                "x" => match v {
                    "step" | "" => q.x = XChoice::Step,
                    "time" => q.x = XChoice::Time,
                    "epoch" => q.x = XChoice::Epoch,
                    _ => q
                        .notes
                        .push(format!("x={v} ignored: the x axis is step, time or epoch")),
                },
                _ => view_param(&k, v, &mut q.view, &mut q.notes),
            }
        }
        q
    }

    /// The query string of this view with `x` replaced (for the axis links).
    pub fn href_with_x(&self, x: XChoice) -> String {
        let mut parts = vec![format!("x={}", x.as_str())];
        if self.view.log_x {
            parts.push("logx=1".into());
        }
        if self.view.log_y {
            parts.push("logy=1".into());
        }
        if self.view.smooth > 0.0 {
            parts.push(format!("smooth={}", self.view.smooth));
        }
        format!("?{}", parts.join("&"))
    }

    /// Names everything but the points a drawing depends on (its cache key).
    pub fn key(&self) -> String {
        format!("{}:{}", self.x.as_str(), self.view.key())
    }
}

/// Reads one of the view's parameters (`logx`, `logy`, `smooth`) into `view`; other keys pass.
fn view_param(k: &str, v: &str, view: &mut View, notes: &mut Vec<String>) {
    match k {
        "logx" => view.log_x = flag(k, v, notes),
        "logy" => view.log_y = flag(k, v, notes),
        "smooth" => match v.parse::<f64>() {
            _ if v.is_empty() => {}
            Ok(w) if (0.0..1.0).contains(&w) => view.smooth = w,
            _ => notes.push(format!(
                "smooth={v} ignored: the smoothing weight is a number from 0 (none) to below 1, \
                 e.g. 0.6"
            )),
        },
        _ => {}
    }
}

/// Only the view (log axes, smoothing) of a raw query, and what was ignored: for pages with an
/// x axis of their own (the comparison page).
pub fn parse_view(raw: Option<&str>) -> (View, Vec<String>) {
    let mut view = View::default();
    let mut notes = Vec::new();
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
    for (k, v) in pairs {
        view_param(&k, v.trim(), &mut view, &mut notes);
    }
    (view, notes)
}

/// The smoothing weight as a form field shows it: empty for none.
pub fn smooth_field(view: &View) -> String {
    if view.smooth > 0.0 {
        view.smooth.to_string()
    } else {
        String::new()
    }
}

fn flag(name: &str, v: &str, notes: &mut Vec<String>) -> bool {
    match v {
        "1" | "true" | "on" | "yes" => true,
        "0" | "false" | "off" | "no" | "" => false,
        _ => {
            notes.push(format!("{name}={v} ignored: use {name}=1 or {name}=0"));
            false
        }
    }
}

/// The x axes a run offers: step always; time for training runs; epoch where the config names
/// a batch size and a training split of a known size.
pub fn x_choices(run: &RunRow, epoch: Option<f64>) -> Vec<XChoice> {
    let mut out = vec![XChoice::Step];
    if matches!(
        run.kind,
        RunKind::Finetune | RunKind::PretrainBox | RunKind::PretrainImage
    ) {
        out.push(XChoice::Time);
        if epoch.is_some() {
            out.push(XChoice::Epoch);
        }
    }
    out
}

/// Epochs per optimizer step: batch size over the training split's image count.
pub async fn epochs_per_step(s: &AppState, run: &RunRow) -> anyhow::Result<Option<f64>> {
    let config = run
        .config
        .job()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| run.config.json.clone());
    let batch = config.pointer("/optim/batch_size").and_then(|b| b.as_f64());
    let (Some(batch), Some(dataset), Some(split)) = (
        batch,
        config.get("dataset_id").and_then(|d| d.as_i64()),
        config.get("train_split").and_then(|t| t.as_str()),
    ) else {
        return Ok(None);
    };
    let n = crate::db::datasets::get(&s.pool, dataset)
        .await?
        .and_then(|d| d.split_ids(split))
        .map(|ids| ids.len());
    Ok(n.filter(|n| *n > 0).map(|n| batch / n as f64))
}

/// Maps steps onto the chosen x axis.
pub enum XMap {
    Step,
    Scale(f64),
    Seconds(HashMap<i64, f64>),
}

impl XMap {
    /// The x of a point at `step` (`None`: a step without a wall time, left out).
    pub fn x(&self, step: f64) -> Option<f64> {
        match self {
            XMap::Step => Some(step),
            XMap::Scale(k) => Some(step * k),
            XMap::Seconds(m) => m.get(&(step as i64)).copied(),
        }
    }

    pub fn apply(&self, pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
        pts.iter()
            .filter_map(|&(s, v)| Some((self.x(s)?, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_leniently() {
        let q = ChartQuery::parse(Some("x=time&logy=1&smooth=0.6&runs=3"));
        assert_eq!(q.x, XChoice::Time);
        assert!(q.view.log_y && !q.view.log_x);
        assert_eq!(q.view.smooth, 0.6);
        assert!(q.notes.is_empty());
        assert_eq!(q.href_with_x(XChoice::Step), "?x=step&logy=1&smooth=0.6");
        let bad = ChartQuery::parse(Some("smooth=abc&logx=maybe&x=lightyears"));
        assert_eq!(bad.view, View::default());
        assert_eq!(bad.x, XChoice::Step);
        assert_eq!(bad.notes.len(), 3, "{:?}", bad.notes);
        assert!(bad.notes[0].contains("smooth=abc ignored"));
        assert_eq!(ChartQuery::parse(Some("smooth=1")).notes.len(), 1);
        assert_eq!(ChartQuery::parse(None), ChartQuery::default());
        assert_eq!(ChartQuery::parse(Some("%zz=&&=")).notes.len(), 0);
    }

    #[test]
    fn the_view_alone_leaves_the_x_axis_to_the_page() {
        let (v, notes) = parse_view(Some("x=wall&logx=1&smooth=0.9&runs=1,2"));
        assert!(v.log_x && !v.log_y);
        assert_eq!(v.smooth, 0.9);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(smooth_field(&v), "0.9");
        let (v, notes) = parse_view(Some("logy=2&smooth=-1"));
        assert_eq!(v, View::default());
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(smooth_field(&v), "");
    }

    #[test]
    fn x_maps_scale_or_look_up_steps() {
        assert_eq!(XMap::Scale(0.5).apply(&[(4.0, 1.0)]), [(2.0, 1.0)]);
        let m = XMap::Seconds(HashMap::from([(1, 0.0), (3, 2.5)]));
        assert_eq!(
            m.apply(&[(1.0, 1.0), (2.0, 5.0), (3.0, 2.0)]),
            [(0.0, 1.0), (2.5, 2.0)]
        );
    }
}
