// Predictions browser: the slider hides predictions scoring below it, the class boxes hide a
// class (predictions and ground truth), and each image counts its predictions still shown.
(function () {
  const slider = document.getElementById('score-threshold');
  if (!slider) return;
  const label = document.getElementById('score-threshold-label');
  const showGt = document.getElementById('show-gt');
  const grid = document.getElementById('pred-grid');
  const toggles = document.querySelectorAll('.class-toggle');
  function update() {
    const t = parseFloat(slider.value);
    label.textContent = t.toFixed(2);
    const hidden = new Set();
    toggles.forEach((box) => { if (!box.checked) hidden.add(box.dataset.cat); });
    grid.classList.toggle('hide-gt', !showGt.checked);
    grid.querySelectorAll('figure[data-image]').forEach((fig) => {
      let shown = 0;
      fig.querySelectorAll('g.pred').forEach((g) => {
        const visible = parseFloat(g.dataset.score) >= t && !hidden.has(g.dataset.cat);
        g.classList.toggle('hide-box', !visible);
        if (visible) shown += 1;
      });
      fig.querySelectorAll('g.gt').forEach((g) => {
        g.classList.toggle('hide-box', hidden.has(g.dataset.cat));
      });
      const count = fig.querySelector('.above-count');
      if (count) count.textContent = shown;
    });
    // Keep the threshold when paging.
    document.querySelectorAll('a.page-link').forEach((a) => {
      const url = new URL(a.href);
      url.searchParams.set('threshold', t.toFixed(2));
      a.href = url.toString();
    });
  }
  slider.addEventListener('input', update);
  showGt.addEventListener('change', update);
  toggles.forEach((box) => box.addEventListener('change', update));
  update();
})();
