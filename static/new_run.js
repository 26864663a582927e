// New-run page. Every training form: show only the fields the chosen schedule uses, and keep
// the placeholders of warm-up, milestones and the evaluation / checkpoint intervals (blank:
// derived from the steps on the server, by the same rule) in step with Steps. Fine-tune:
// the run id / artifact fields only for a typed checkpoint, and AlignDet's lr / wd rule box
// (its factors read from the page, with its resulting numbers) only for a pre-trained detector. Box-domain pre-training:
// the detector's reference defaults, and the proposals runs of the chosen dataset. Hidden fields
// are still posted; the server ignores those of the other choice and applies the same rules.
(function () {
  function show(form, selector, visible) {
    form.querySelectorAll(selector).forEach((el) => { el.hidden = !visible; });
  }

  document.querySelectorAll('select.schedule-choice').forEach((schedule) => {
    const form = schedule.form;
    function update() {
      show(form, '.sched-step', schedule.value === 'step');
      show(form, '.sched-cosine', schedule.value === 'cosine');
    }
    schedule.addEventListener('change', update);
    update();
  });

  // What a blank schedule field becomes for `steps` (the server's ScheduleDefaults rule): each
  // reference value keeps its fraction of the reference steps, rounded; warm-up never grows past
  // its reference; milestones and intervals at least 1 (an interval of 0 stays 0).
  document.querySelectorAll('input.steps-field').forEach((stepsInput) => {
    const form = stepsInput.form;
    const ref = stepsInput.dataset;
    const refSteps = Math.max(1, parseInt(ref.refSteps, 10) || 1);
    const scale = (v, steps) => Math.floor((v * steps + Math.floor(refSteps / 2)) / refSteps);
    const milestones = (ref.refMilestones || '').split(',').map((m) => parseInt(m, 10)).filter((m) => !isNaN(m));
    function update() {
      let steps = parseInt(stepsInput.value, 10);
      if (isNaN(steps) || steps < 1) steps = refSteps;
      const set = (name, text) => {
        const input = form.querySelector(`input[name=${name}]`);
        if (input) input.placeholder = text;
      };
      const warmup = parseInt(ref.refWarmup, 10) || 0;
      set('warmup_steps', String(Math.min(warmup, scale(warmup, steps))));
      const ms = [];
      milestones.forEach((m) => {
        const v = Math.max(1, scale(m, steps));
        if (ms[ms.length - 1] !== v) ms.push(v);
      });
      set('milestones', ms.length ? ms.join(', ') : 'none');
      const interval = (v) => (v === 0 ? 0 : Math.max(1, scale(v, steps)));
      const evalEvery = parseInt(ref.refEval, 10) || 0;
      if (evalEvery > 0) set('eval_every', String(interval(evalEvery)));
      set('checkpoint_every', String(interval(parseInt(ref.refCheckpoint, 10) || 0)));
    }
    stepsInput.addEventListener('input', update);
    update();
  });

  // Numbers as the server shows them: 6 significant digits, no float noise.
  function short(x) { return String(Number(x.toPrecision(6))); }

  const ft = document.getElementById('finetune-form');
  if (ft) {
    const init = document.getElementById('ft-init');
    const rule = document.getElementById('ft-aligned-rule');
    const numbers = document.getElementById('ft-aligned-numbers');
    // AlignDet's rule, as the server states it (lr × factor, weight decay ÷ divisor).
    const lrFactor = parseFloat(rule && rule.dataset.lrFactor);
    const wdDivisor = parseFloat(rule && rule.dataset.wdDivisor);
    const lr = ft.querySelector('input[name=lr]');
    const wd = ft.querySelector('input[name=weight_decay]');
    const detector = ft.querySelector('select[name=detector]');
    const backbone = ft.querySelector('select[name=backbone]');
    function chosen() { return init.options[init.selectedIndex]; }
    function updateNumbers() {
      const l = parseFloat(lr.value), w = parseFloat(wd.value);
      if (!isNaN(l) && !isNaN(w) && !isNaN(lrFactor) && !isNaN(wdDivisor)) {
        numbers.textContent = `lr ${short(l * lrFactor)}, weight decay ${short(w / wdDivisor)}`;
      }
    }
    function update() {
      const opt = chosen();
      show(ft, '.init-checkpoint', init.value === 'checkpoint');
      const pretrained = !!opt && opt.dataset.kind === 'pretrain_box';
      show(ft, '.aligned-rule', pretrained);
      updateNumbers();
    }
    init.addEventListener('change', () => {
      // A pre-trained detector or backbone fixes the detector / backbone of the fine-tune.
      const opt = chosen();
      if (opt && opt.dataset.detector && opt.dataset.kind === 'pretrain_box') detector.value = opt.dataset.detector;
      if (opt && opt.dataset.backbone) backbone.value = opt.dataset.backbone;
      update();
    });
    lr.addEventListener('input', updateNumbers);
    wd.addEventListener('input', updateNumbers);
    if (rule) rule.addEventListener('change', updateNumbers);
    update();
  }

  const pb = document.getElementById('pretrain-box-form');
  if (pb) {
    const detector = document.getElementById('pb-detector');
    const dataset = document.getElementById('pb-dataset');
    const proposals = document.getElementById('pb-proposals');
    const defaults = JSON.parse(detector.dataset.detectorDefaults || '{}');
    let previous = detector.value;
    // A field still at the previous detector's default takes the new detector's; an edited
    // field is left alone.
    detector.addEventListener('change', () => {
      const before = defaults[previous] || {}, after = defaults[detector.value] || {};
      Object.keys(after).forEach((key) => {
        const input = pb.querySelector(`[name=${key}]`);
        if (input && (input.value === '' || Number(input.value) === Number(before[key]))) {
          input.value = String(after[key]);
        }
      });
      previous = detector.value;
    });
    function filterProposals() {
      let firstVisible = null;
      Array.from(proposals.options).forEach((o) => {
        const fits = !o.dataset.dataset || o.dataset.dataset === dataset.value;
        o.hidden = !fits;
        if (fits && !firstVisible) firstVisible = o;
      });
      const current = proposals.options[proposals.selectedIndex];
      if ((!current || current.hidden) && firstVisible) proposals.value = firstVisible.value;
    }
    dataset.addEventListener('change', filterProposals);
    filterProposals();
  }
})();
