//! Configs: flatten, normalise for arms (seeds and checkpoint run ids removed), diff, and name
//! the arms by what tells them apart.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// `5pct_seed2` → `5pct`; names without a `_seed<digits>` tail are kept.
pub fn strip_split_seed(name: &str) -> &str {
    if let Some(i) = name.rfind("_seed") {
        let tail = &name[i + 5..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            return &name[..i];
        }
    }
    name
}

/// The config with what varies between seeds of one setting removed: every `seed` field, the
/// seed part of split names and the init checkpoint's run id. Also returns what was removed
/// (the key that pairs runs of two arms: same seeds, same split draw).
pub fn arm_config(config: &Value) -> (Value, String) {
    let mut c = config.clone();
    let mut removed = Vec::new();
    strip_seeds(&mut c, "", &mut removed);
    if let Some(art) = c
        .get_mut("init")
        .and_then(|i| i.get_mut("artifact"))
        .and_then(Value::as_object_mut)
    {
        art.remove("run_id");
    }
    (c, removed.join(", "))
}

fn strip_seeds(v: &mut Value, path: &str, removed: &mut Vec<String>) {
    let Value::Object(map) = v else { return };
    if let Some(seed) = map.remove("seed") {
        removed.push(format!("{}seed={}", prefix(path), value_text(&seed)));
    }
    for (k, child) in map.iter_mut() {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match child {
            Value::String(s) if k.ends_with("split") => {
                let stripped = strip_split_seed(s);
                if stripped.len() != s.len() {
                    removed.push(format!("{p}={s}"));
                    *s = stripped.to_string();
                }
            }
            Value::Object(_) => strip_seeds(child, &p, removed),
            _ => {}
        }
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    }
}

/// A leaf value as text: strings bare, numbers as Python prints them, arrays `[a, b]`.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => crate::numbers::python_style(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(_) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Dotted paths of every leaf (objects are walked; arrays are leaves), e.g. `augment.min_sizes`.
pub fn flatten(config: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten_into(config, "", &mut out);
    out
}

fn flatten_into(v: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten_into(child, &p, out);
            }
        }
        _ => {
            out.insert(path.to_string(), value_text(v));
        }
    }
}

/// Paths whose value differs (or is missing) somewhere across the flattened configs, sorted.
pub fn differing_paths(flats: &[BTreeMap<String, String>]) -> Vec<String> {
    let all: BTreeSet<&String> = flats.iter().flat_map(|f| f.keys()).collect();
    all.into_iter()
        .filter(|p| {
            let first = flats.first().and_then(|f| f.get(*p));
            flats.iter().any(|f| f.get(*p) != first)
        })
        .cloned()
        .collect()
}

/// Group runs whose arm configs are equal; arms in order of their first run.
pub fn group_arms(arm_configs: &[Value]) -> Vec<Vec<usize>> {
    let mut arms: Vec<(Value, Vec<usize>)> = Vec::new();
    for (i, c) in arm_configs.iter().enumerate() {
        match arms.iter_mut().find(|(k, _)| k == c) {
            Some((_, members)) => members.push(i),
            None => arms.push((c.clone(), vec![i])),
        }
    }
    arms.into_iter().map(|(_, m)| m).collect()
}

/// `init` in words: `scratch`, `imagenet_backbone`, `checkpoint model.safetensors`.
pub fn init_text(config: &Value) -> Option<String> {
    let init = config.get("init")?;
    let from = init
        .get("from")
        .map(value_text)
        .unwrap_or_else(|| value_text(init));
    Some(match init.get("artifact").and_then(|a| a.get("name")) {
        Some(name) => format!("{from} {}", value_text(name)),
        None => from,
    })
}

fn is_checkpoint_init(config: &Value) -> bool {
    config
        .get("init")
        .and_then(|i| i.get("from"))
        .and_then(Value::as_str)
        == Some("checkpoint")
}

/// The default baseline: the first arm whose init is not a checkpoint, else the first arm.
pub fn default_baseline(arm_configs: &[Value]) -> usize {
    arm_configs
        .iter()
        .position(|c| !is_checkpoint_init(c))
        .unwrap_or(0)
}

/// Flattened arm config with every `init.*` path folded into one `init` entry.
fn arm_fields(config: &Value) -> BTreeMap<String, String> {
    let mut f: BTreeMap<String, String> = flatten(config)
        .into_iter()
        .filter(|(p, _)| p != "init" && !p.starts_with("init."))
        .collect();
    if let Some(init) = init_text(config) {
        f.insert("init".into(), init);
    }
    f
}

/// The fields that tell arms apart, per arm (`init` first), and a short label per arm: the
/// baseline is named by its init (or all its distinguishing fields), the others by what differs
/// from the baseline.
pub fn arm_names(arm_configs: &[Value], baseline: usize) -> Vec<(String, Vec<(String, String)>)> {
    let flats: Vec<BTreeMap<String, String>> = arm_configs.iter().map(arm_fields).collect();
    let mut diff = differing_paths(&flats);
    diff.sort_by_key(|p| (p != "init", p.clone()));
    let missing = "—".to_string();
    flats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fields: Vec<(String, String)> = diff
                .iter()
                .map(|p| (p.clone(), f.get(p).unwrap_or(&missing).clone()))
                .collect();
            let shown: Vec<&(String, String)> = if i == baseline {
                let init: Vec<&(String, String)> =
                    fields.iter().filter(|(p, _)| p == "init").collect();
                if init.is_empty() {
                    fields.iter().collect()
                } else {
                    init
                }
            } else {
                fields
                    .iter()
                    .filter(|(p, v)| flats[baseline].get(p).unwrap_or(&missing) != v)
                    .collect()
            };
            let mut parts: Vec<String> = shown
                .iter()
                .take(4)
                // `optim.lr` reads as `lr`: the nesting says nothing to a person comparing arms.
                .map(|(p, v)| format!("{}={v}", p.strip_prefix("optim.").unwrap_or(p)))
                .collect();
            if shown.len() > 4 {
                parts.push(format!("… (+{} more)", shown.len() - 4));
            }
            let label = if parts.is_empty() {
                if arm_configs.len() == 1 {
                    "all runs".to_string()
                } else {
                    format!("arm {i}")
                }
            } else {
                parts.join(", ")
            };
            (label, fields)
        })
        .collect()
}
