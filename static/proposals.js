// Pseudo-box browser: the slider shows the first N kept boxes (in the order produced). The
// first few hundred are SVG rectangles in the page; the rest, and the boxes the filter removed
// (dashed, with the checkbox), are drawn on a canvas from the image's compact box data:
// n (u32), n × [x, y, w, h] (f32), n filter codes (u8, 0 = kept), little-endian.
(function () {
  const slider = document.getElementById('box-count');
  const label = document.getElementById('box-count-label');
  const removed = document.getElementById('show-removed');
  const canvas = document.getElementById('proposal-canvas');
  if (!slider || !canvas) return;
  const svgCount = parseInt(canvas.dataset.svgBoxes, 10);
  let data = null;
  function draw(n) {
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!data) return;
    // About one screen pixel wide, whatever the image's scale.
    ctx.lineWidth = Math.max(1, canvas.width / Math.max(1, canvas.clientWidth)) * 1.2;
    let rank = 0;
    let drawn = 0;
    const stroke = (i) => {
      ctx.strokeRect(data.boxes[4 * i], data.boxes[4 * i + 1], data.boxes[4 * i + 2], data.boxes[4 * i + 3]);
      drawn += 1;
    };
    ctx.setLineDash([]);
    ctx.strokeStyle = '#12b76a';
    for (let i = 0; i < data.n; i++) {
      if (data.rules[i] !== 0) continue;
      if (rank >= svgCount && rank < n) stroke(i);
      rank += 1;
    }
    if (removed.checked) {
      ctx.setLineDash([4 * ctx.lineWidth, 3 * ctx.lineWidth]);
      ctx.strokeStyle = '#f04438';
      for (let i = 0; i < data.n; i++) if (data.rules[i] !== 0) stroke(i);
    }
    canvas.dataset.drawn = drawn;
  }
  function update() {
    const n = parseInt(slider.value, 10);
    label.textContent = n;
    document.querySelectorAll('#proposal-overlay rect.pbox').forEach((r) => {
      r.classList.toggle('hide-box', parseInt(r.dataset.rank, 10) >= n);
    });
    draw(n);
  }
  fetch(canvas.dataset.src, { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(`box data: ${r.status}`))))
    .then((buf) => {
      const view = new DataView(buf);
      const n = view.getUint32(0, true);
      const boxes = new Float32Array(4 * n);
      for (let i = 0; i < 4 * n; i++) boxes[i] = view.getFloat32(4 + 4 * i, true);
      data = { n, boxes, rules: new Uint8Array(buf, 4 + 16 * n, n) };
      canvas.dataset.loaded = n;
      update();
    })
    .catch((e) => { canvas.dataset.error = String(e); });
  slider.addEventListener('input', update);
  removed.addEventListener('change', update);
  window.addEventListener('resize', update);
  update();
})();
