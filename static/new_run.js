// Fine-tune form: show only the fields the chosen schedule and initialisation use. Hidden
// fields are still posted; the server ignores those of the other choice.
(function () {
  const form = document.getElementById('finetune-form');
  if (!form) return;
  const schedule = document.getElementById('ft-schedule');
  const init = document.getElementById('ft-init');
  function show(selector, visible) {
    form.querySelectorAll(selector).forEach((el) => { el.hidden = !visible; });
  }
  function update() {
    show('.sched-step', schedule.value === 'step');
    show('.sched-cosine', schedule.value === 'cosine');
    show('.init-checkpoint', init.value === 'checkpoint');
  }
  schedule.addEventListener('change', update);
  init.addEventListener('change', update);
  update();
})();
