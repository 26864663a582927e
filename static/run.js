// Live run page: the server sends a `changed` event whenever the run's metrics, logs or status
// change; we re-fetch the live fragment (status, curves, attempts, log tail), at most ~3 times a second,
// with the page's query (the chart view: x axis, log scales, smoothing).
(function () {
  const live = document.getElementById('live');
  if (!live) return;
  const runId = live.dataset.run;
  let pending = false;
  let lastFetch = 0;
  async function refresh() {
    pending = false;
    lastFetch = Date.now();
    try {
      const resp = await fetch(`/runs/${runId}/live${window.location.search}`, { headers: { 'Accept': 'text/html' } });
      if (resp.ok) {
        live.innerHTML = await resp.text();
        // A run that ended while the page was open can no longer be cancelled.
        const status = document.getElementById('run-status');
        const cancel = document.getElementById('cancel-form');
        if (cancel && status && ['succeeded', 'failed', 'cancelled'].includes(status.textContent.trim())) {
          cancel.remove();
        }
      }
    } catch (e) { /* server restarting: the next event or the timer retries */ }
  }
  function schedule() {
    if (pending) return;
    pending = true;
    setTimeout(refresh, Math.max(0, 300 - (Date.now() - lastFetch)));
  }
  const source = new EventSource(`/runs/${runId}/events`);
  source.addEventListener('changed', schedule);
  // A slow fallback in case events are blocked by a proxy.
  setInterval(schedule, 10000);
})();
