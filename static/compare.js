// Runs table: pick runs with the checkboxes, "Compare selected" opens /compare?runs=1,2,3
// (without this script the form still works: it sends runs=1&runs=2, which /compare reads too).
(function () {
  const form = document.getElementById('compare-form');
  if (!form) return;
  const picks = () => Array.from(form.querySelectorAll('input.compare-pick'));
  const button = document.getElementById('compare-selected');
  const count = document.getElementById('compare-count');
  const all = document.getElementById('compare-all');
  function update() {
    const n = picks().filter((c) => c.checked).length;
    if (button) button.disabled = n === 0;
    if (count) count.textContent = n === 0 ? 'tick runs to compare them' : `${n} selected`;
    if (all) all.checked = n > 0 && n === picks().length;
  }
  form.addEventListener('change', (e) => {
    if (e.target === all) picks().forEach((c) => { c.checked = all.checked; });
    update();
  });
  form.addEventListener('submit', (e) => {
    const ids = picks().filter((c) => c.checked).map((c) => c.value);
    if (ids.length === 0) { e.preventDefault(); return; }
    e.preventDefault();
    window.location.href = `/compare?runs=${ids.map(encodeURIComponent).join(',')}`;
  });
  update();
})();
