"""Diffusion core shared by Noise2Music, MeLoDy and JEN-1, and Noise2Music's 1D Efficient U-Net.

Models, schedules and samplers are separate (as in diffusers):

* :mod:`.schedules` - variance-preserving noise schedules on ``t`` in ``[0, 1]``: :class:`CosineSchedule`,
  :class:`LinearSchedule`, :class:`DiscreteDDPMSchedule` (JEN-1) and :class:`AngleSchedule` (MeLoDy).
* :mod:`.objectives` - ``eps`` / ``v`` / ``x0`` parameterisations, conversions, and the (sigma-)weighted
  denoising loss :class:`DiffusionObjective`, with MeLoDy's multi-chunk per-frame times.
* :mod:`.step_schedules` - uniform, piecewise (front-/back-heavy) and MeLoDy angle step schedules.
* :mod:`.samplers` - :class:`DiffusionSampler`: ancestral DDPM / DDIM (stochasticity ``eta``) and the angle sampler.
* :mod:`.guidance` - classifier-free guidance and training-time text dropout.
* :mod:`.unet1d` - :class:`UNet1D`, the 1D Efficient U-Net (Noise2Music Fig. 1, Table 8).

Typical use::

    schedule = CosineSchedule()
    objective = DiffusionObjective(schedule, parameterization="v", weighting="sigma")
    loss = objective.loss(lambda x, t: unet(x, unet.noise_level(schedule, t), text=text, drop_text=drop), x0)

    sampler = DiffusionSampler(schedule, "v", kind="ddim")
    fn = guided_model_fn(lambda x, t, **kw: unet(x, unet.noise_level(schedule, t), **kw), 5.0,
                         {"text": text}, {"text": text.null_like()})
    audio = sampler.sample(fn, (B, 1, T), steps=200, step_schedule="front-heavy", generator=g)
"""

from .guidance import cat_batch, cfg_combine, guided_model_fn, split_batch, text_dropout_mask
from .objectives import (
    PARAMETERIZATIONS,
    WEIGHTINGS,
    DiffusionObjective,
    DiffusionObjectiveConfig,
    chunk_time_vector,
    convert_prediction,
    loss_weight,
    pred_eps,
    pred_v,
    pred_x0,
    sample_multichunk_t,
    training_target,
)
from .samplers import SAMPLERS, DiffusionSampler, SamplerConfig, StepOutput, threshold_x0
from .schedules import (
    AngleSchedule,
    CosineSchedule,
    DiscreteDDPMSchedule,
    LinearSchedule,
    NoiseSchedule,
    NoiseScheduleConfig,
    as_time,
    expand_like,
    get_noise_schedule,
)
from .step_schedules import (
    BACK_HEAVY,
    FRONT_HEAVY,
    STEP_SCHEDULES,
    AngleStepSchedule,
    PiecewiseStepSchedule,
    StepSchedule,
    UniformStepSchedule,
    get_step_schedule,
)
from .unet1d import UNET1D_PRESETS, UNet1D, UNet1DConfig

__all__ = [
    "AngleSchedule",
    "AngleStepSchedule",
    "BACK_HEAVY",
    "CosineSchedule",
    "DiffusionObjective",
    "DiffusionObjectiveConfig",
    "DiffusionSampler",
    "DiscreteDDPMSchedule",
    "FRONT_HEAVY",
    "LinearSchedule",
    "NoiseSchedule",
    "NoiseScheduleConfig",
    "PARAMETERIZATIONS",
    "PiecewiseStepSchedule",
    "SAMPLERS",
    "STEP_SCHEDULES",
    "SamplerConfig",
    "StepOutput",
    "StepSchedule",
    "UNET1D_PRESETS",
    "UNet1D",
    "UNet1DConfig",
    "UniformStepSchedule",
    "WEIGHTINGS",
    "as_time",
    "cat_batch",
    "cfg_combine",
    "chunk_time_vector",
    "convert_prediction",
    "expand_like",
    "get_noise_schedule",
    "get_step_schedule",
    "guided_model_fn",
    "loss_weight",
    "pred_eps",
    "pred_v",
    "pred_x0",
    "sample_multichunk_t",
    "split_batch",
    "text_dropout_mask",
    "threshold_x0",
    "training_target",
]
