-- The optimisation and bookkeeping fields every training config shares now sit in one nested
-- object, `optim` (aligndet_common::optim_config::OptimConfig), in every training kind's
-- config. Stored configs of those kinds move their flat fields there, so they keep decoding.
-- (Migration 0003 names the experiment spec `routes::experiments::ExperimentSpec`; it is
-- `experiments::spec::ExperimentSpec` now, with the same JSON.)
UPDATE runs
SET config = (config - ARRAY[
        'batch_size', 'steps', 'optimizer', 'lr', 'momentum', 'weight_decay', 'warmup_steps',
        'schedule', 'grad_clip_norm', 'checkpoint_every', 'seed', 'loader_threads'
    ])
    || jsonb_build_object('optim', jsonb_strip_nulls(jsonb_build_object(
        'batch_size', config -> 'batch_size',
        'steps', config -> 'steps',
        'optimizer', config -> 'optimizer',
        'lr', config -> 'lr',
        'momentum', config -> 'momentum',
        'weight_decay', config -> 'weight_decay',
        'warmup_steps', config -> 'warmup_steps',
        'schedule', config -> 'schedule',
        'grad_clip_norm', config -> 'grad_clip_norm',
        'checkpoint_every', config -> 'checkpoint_every',
        'seed', config -> 'seed',
        'loader_threads', config -> 'loader_threads'
    )))
WHERE kind IN ('finetune', 'pretrain_box', 'pretrain_image')
  AND NOT config ? 'optim';
