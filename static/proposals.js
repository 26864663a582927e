// Pseudo-box browser: the slider shows the first N kept boxes (in the order produced); the
// checkbox adds the boxes the filter removed, drawn dashed.
(function () {
  const slider = document.getElementById('box-count');
  const label = document.getElementById('box-count-label');
  const removed = document.getElementById('show-removed');
  if (!slider) return;
  function update() {
    const n = parseInt(slider.value, 10);
    label.textContent = n;
    document.querySelectorAll('#proposal-overlay rect.pbox').forEach((r) => {
      const isRemoved = r.classList.contains('removed');
      const visible = isRemoved ? removed.checked : parseInt(r.dataset.rank, 10) < n;
      r.classList.toggle('hide-box', !visible);
    });
  }
  slider.addEventListener('input', update);
  removed.addEventListener('change', update);
  update();
})();
