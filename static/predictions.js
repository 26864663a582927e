// Predictions browser: the class boxes hide a class (predictions and ground truth, with their
// masks), the checkboxes hide the ground truth and the masks. Threshold, top k, IoU and order
// are the form's (in the URL): the matching depends on them, so the server redraws.
(function () {
  const grid = document.getElementById('pred-grid');
  const showGt = document.getElementById('show-gt');
  if (!grid || !showGt) return;
  const showMasks = document.getElementById('show-masks');
  const toggles = document.querySelectorAll('.class-toggle');
  function update() {
    const hidden = new Set();
    toggles.forEach((box) => { if (!box.checked) hidden.add(box.dataset.cat); });
    grid.classList.toggle('hide-gt', !showGt.checked);
    if (showMasks) grid.classList.toggle('hide-masks', !showMasks.checked);
    grid.querySelectorAll('g.pred, g.gt').forEach((g) => {
      g.classList.toggle('hide-box', hidden.has(g.dataset.cat));
    });
  }
  showGt.addEventListener('change', update);
  if (showMasks) showMasks.addEventListener('change', update);
  toggles.forEach((box) => box.addEventListener('change', update));
  update();
})();
