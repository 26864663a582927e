//! AlignDet's box-level contrastive loss (InfoNCE over box embeddings of two views).
//!
//! For each foreground instance id c among the online samples: queries are the online embeddings
//! of c, keys the target (momentum) embeddings of c — or the queries themselves when the target
//! has none — and negatives every embedding of another label from both sets (online ones
//! detached). Each (key, query) pair is a cross-entropy with the positive first; pairs are
//! averaged within an instance, then instances are averaged uniformly.
//!
//! [`box_contrastive_loss`] computes it with two similarity matrices per batch;
//! [`box_contrastive_loss_naive`] is the per-instance loop of the definition, kept as the
//! reference the tests compare against.

use tch::{Kind, Tensor};

/// Rows scaled to unit L2 norm (cosine similarity is then a matmul).
pub(crate) fn normalize(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12)
}

/// `online` `[n_o, d]` with `online_labels` `[n_o]`; `target` `[n_t, d]` with `target_labels`.
/// Samples labelled `background` serve only as negatives. Returns a scalar (0 when there is no
/// foreground query).
pub fn box_contrastive_loss(
    online: &Tensor,
    online_labels: &Tensor,
    target: &Tensor,
    target_labels: &Tensor,
    temperature: f64,
    background: Option<i64>,
) -> Tensor {
    let device = online.device();
    let o = normalize(online);
    let t = normalize(target);
    let yo = online_labels.to_kind(Kind::Int64);
    let yt = target_labels.to_kind(Kind::Int64);
    let is_fg = match background {
        Some(b) => yo.ne(b),
        None => yo.ones_like().to_kind(Kind::Bool),
    };
    if is_fg.sum(Kind::Int64).int64_value(&[]) == 0 {
        return (online.sum(Kind::Float) * 0.0).to_device(device);
    }
    let s_oo_neg = o.matmul(&o.detach().tr()) / temperature; // negatives: online detached
    let s_oo = o.matmul(&o.tr()) / temperature; // positives when the target has no key
    let s_ot = o.matmul(&t.tr()) / temperature;
    let same_oo = yo.unsqueeze(1).eq_tensor(&yo.unsqueeze(0));
    let same_ot = yo.unsqueeze(1).eq_tensor(&yt.unsqueeze(0));
    let neg_inf = f64::NEG_INFINITY;
    let lse = Tensor::cat(
        &[
            s_oo_neg.masked_fill(&same_oo, neg_inf),
            s_ot.masked_fill(&same_ot, neg_inf),
        ],
        1,
    )
    .logsumexp([1i64].as_slice(), true); // [n_o, 1]; −inf without negatives → loss 0
    let keys_t = same_ot.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64); // keys of row i's label in the target
    let has_t = keys_t.gt(0);
    let kind = online.kind();
    let zero = Tensor::zeros([1], (kind, device));
    let pair_t = (&lse - &s_ot).softplus().where_self(&same_ot, &zero);
    let pair_o = (&lse - &s_oo).softplus().where_self(&same_oo, &zero);
    let row_sum = pair_t
        .sum_dim_intlist([1i64].as_slice(), false, kind)
        .where_self(
            &has_t,
            &pair_o.sum_dim_intlist([1i64].as_slice(), false, kind),
        );
    let keys_o = same_oo.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
    let row_keys = keys_t.where_self(&has_t, &keys_o).to_kind(kind);
    // group rows by instance: L_c = Σ_{i∈c} row_sum_i / (|Q_c| · |K_c|)
    let fg_idx = is_fg.nonzero().squeeze_dim(1);
    let labels_fg = yo.index_select(0, &fg_idx);
    let (_, inverse, counts) = Tensor::internal_unique2(&labels_fg, true, true, true);
    let c = counts.size()[0];
    let inst_sum = Tensor::zeros([c], (kind, device)).index_add(
        0,
        &inverse,
        &(row_sum.index_select(0, &fg_idx) / row_keys.index_select(0, &fg_idx)),
    );
    (inst_sum / counts.to_kind(kind)).mean(kind)
}

/// The definition, instance by instance (the reference for [`box_contrastive_loss`]).
pub fn box_contrastive_loss_naive(
    online: &Tensor,
    online_labels: &Tensor,
    target: &Tensor,
    target_labels: &Tensor,
    temperature: f64,
    background: Option<i64>,
) -> Tensor {
    let o = normalize(online);
    let t = normalize(target);
    let yo: Vec<i64> = Vec::try_from(online_labels.to_kind(Kind::Int64)).unwrap_or_default();
    let yt: Vec<i64> = Vec::try_from(target_labels.to_kind(Kind::Int64)).unwrap_or_default();
    let mut instances: Vec<i64> = yo
        .iter()
        .copied()
        .filter(|&y| Some(y) != background)
        .collect();
    instances.sort();
    instances.dedup();
    let rows = |x: &Tensor, ys: &[i64], keep: &dyn Fn(i64) -> bool| -> Option<Tensor> {
        let idx: Vec<i64> = (0..ys.len() as i64)
            .filter(|&i| keep(ys[i as usize]))
            .collect();
        (!idx.is_empty())
            .then(|| x.index_select(0, &Tensor::from_slice(&idx).to_device(x.device())))
    };
    let mut per_instance = Vec::new();
    for &c in &instances {
        let q = rows(&o, &yo, &|y| y == c).expect("an instance has a query");
        let k = rows(&t, &yt, &|y| y == c).unwrap_or_else(|| q.shallow_clone());
        let negs: Vec<Tensor> = [
            rows(&o.detach(), &yo, &|y| y != c),
            rows(&t, &yt, &|y| y != c),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut pair_losses = Vec::new();
        for ki in 0..k.size()[0] {
            for qi in 0..q.size()[0] {
                let (qv, kv) = (q.get(qi), k.get(ki));
                let mut logits = vec![qv.dot(&kv).reshape([1])];
                for n in &negs {
                    logits.push(n.matmul(&qv));
                }
                let logits = Tensor::cat(&logits, 0) / temperature;
                pair_losses.push(logits.logsumexp([0i64].as_slice(), false) - logits.get(0));
            }
        }
        per_instance.push(Tensor::stack(&pair_losses, 0).mean(online.kind()));
    }
    if per_instance.is_empty() {
        return online.sum(Kind::Float) * 0.0;
    }
    Tensor::stack(&per_instance, 0).mean(online.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n_o: i64, n_t: i64, ids: i64, background: Option<i64>, seed: i64) {
        tch::manual_seed(seed);
        let d = 16;
        let online =
            Tensor::randn([n_o, d], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let target = Tensor::randn([n_t, d], (Kind::Double, tch::Device::Cpu));
        let yo = Tensor::randint(ids, [n_o], (Kind::Int64, tch::Device::Cpu));
        let yt = Tensor::randint(ids, [n_t], (Kind::Int64, tch::Device::Cpu));
        let fast = box_contrastive_loss(&online, &yo, &target, &yt, 0.5, background);
        let slow = box_contrastive_loss_naive(&online, &yo, &target, &yt, 0.5, background);
        let (fv, sv) = (fast.double_value(&[]), slow.double_value(&[]));
        assert!((fv - sv).abs() < 1e-10, "vectorised {fv} vs naive {sv}");
        let g_fast = Tensor::run_backward(&[&fast], &[&online], false, false).remove(0);
        let g_slow = Tensor::run_backward(&[&slow], &[&online], false, false).remove(0);
        let gd = (g_fast - g_slow).abs().max().double_value(&[]);
        assert!(gd < 1e-10, "gradients differ by {gd}");
    }

    #[test]
    fn vectorised_loss_equals_the_per_instance_definition() {
        for seed in 0..5 {
            // many ids: some instances have no target key (the fall-back to online keys)
            check(24, 20, 12, None, seed);
            // few ids with a background label: background only as negatives
            check(30, 26, 5, Some(0), seed + 10);
        }
    }

    #[test]
    fn only_background_gives_zero() {
        let online = Tensor::randn([4, 8], (Kind::Double, tch::Device::Cpu));
        let labels = Tensor::from_slice(&[7i64, 7, 7, 7]);
        let l = box_contrastive_loss(&online, &labels, &online, &labels, 0.5, Some(7));
        assert_eq!(l.double_value(&[]), 0.0);
    }
}
