// Dataset page: per-class toggles for the box and mask overlays, the masks toggle, and the
// lightbox (a click on an image shows it large with its boxes; Escape, the close button or a
// click outside closes it).
document.querySelectorAll('.class-toggle').forEach((box) => {
  box.addEventListener('change', () => {
    const cat = box.dataset.cat;
    document.querySelectorAll(`rect.box[data-cat="${cat}"], path.mask[data-cat="${cat}"]`).forEach((r) => {
      r.classList.toggle('hide-box', !box.checked);
    });
  });
});
(function () {
  const showMasks = document.getElementById('show-masks');
  if (!showMasks) return;
  showMasks.addEventListener('change', () => {
    document.querySelectorAll('path.mask').forEach((m) => m.classList.toggle('hide-mask', !showMasks.checked));
  });
})();

(function () {
  const dialog = document.getElementById('lightbox');
  if (!dialog) return;
  const frame = document.getElementById('lightbox-frame');
  const caption = document.getElementById('lightbox-caption');
  function open(fig) {
    const img = fig.querySelector('img');
    const overlay = fig.querySelector('svg.overlay');
    frame.replaceChildren();
    const big = document.createElement('img');
    big.src = img.src;
    big.alt = img.alt;
    big.id = 'lightbox-image';
    frame.appendChild(big);
    if (overlay) frame.appendChild(overlay.cloneNode(true));
    const vb = overlay && overlay.viewBox.baseVal;
    if (vb && vb.height > 0) frame.style.setProperty('--aspect', vb.width / vb.height);
    caption.textContent = fig.querySelector('figcaption').textContent;
    dialog.dataset.image = fig.dataset.image;
    dialog.showModal();
  }
  document.querySelectorAll('figure.zoomable').forEach((fig) => {
    fig.addEventListener('click', () => open(fig));
    fig.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(fig); }
    });
  });
  document.getElementById('lightbox-close').addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(); });
})();
