// Per-class toggles for the box overlays on the dataset page.
document.querySelectorAll('.class-toggle').forEach((box) => {
  box.addEventListener('change', () => {
    const cat = box.dataset.cat;
    document.querySelectorAll(`rect.box[data-cat="${cat}"]`).forEach((r) => {
      r.classList.toggle('hide-box', !box.checked);
    });
  });
});
