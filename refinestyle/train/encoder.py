"""Train the RefineStyle inversion encoder (``RefineStyleEncoder``) for a frozen generator.

Modes (DESIGN.md section 1, Inversion):

* ``one-stage``: W+ heads and token branch together; losses on the refined reconstruction
  ``G.synthesis(ws, tokens)`` and on the W+-only one ``G.synthesis(ws)`` (so the W+ heads learn W+).
* ``stage-one``: a W+-only encoder (no token branch).
* ``two-stage``: the W+ part copied from a trained stage-one encoder (``--stage-one``) and frozen; a
  token branch with its own backbone learns from the image and its stage-one reconstruction.

Data per step: half the batch renderer ``photo`` images (or ``--images DIR`` files), half generator
samples ``G(z)`` (``z ~ N(0, 1)``, truncation 1), never out-of-domain styles. With ``--photometric-augment P``
a share ``P`` of the renders gets a random colour transform (saturation down to grey, contrast, brightness,
a tint) as input and target alike: images the generator cannot make, which the token branch must then
reach (the out-of-domain case the refinement is for), without showing it any renderer style. Losses: L2 + (1 - SSIM)
(pytorch-msssim), LPIPS (AlexNet) when its weights can be loaded, an L2 on ``ws`` against the true
``ws`` of generator samples, a small pull of ``ws`` toward the mean ``w``, and a token-norm penalty on P.

The batch of step ``i`` depends only on ``(seed, i)``, so ``--resume`` continues exactly as an
uninterrupted run. Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its share of every
step's batch and DistributedDataParallel averages the gradients (gloo on CPU, nccl on CUDA): the
global batch and the loss are those of one process; only rank 0 writes checkpoints and logs.

    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/encoder-one-stage \\
        --mode one-stage --minutes 140 --export runs/encoder-one-stage/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/encoder-stage-one \\
        --mode stage-one --minutes 60 --export runs/encoder-stage-one/export
    python -m refinestyle.train.encoder --generator hub/refinestyle-synthfaces --out runs/encoder-two-stage \\
        --mode two-stage --stage-one runs/encoder-stage-one/export --minutes 90 --export runs/encoder-two-stage/export
    ... --resume                                        # continue a run from its checkpoint
    torchrun --standalone --nproc_per_node=2 -m refinestyle.train.encoder ...   # DDP, same result
    torchrun --nproc_per_node=8 -m refinestyle.train.encoder --generator ffhq.pkl --images /data/ffhq \\
        --backbone resnet34 --input-resolution 256 --d-model 256 --batch 64 ...   # FFHQ-size on GPUs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data.synthfaces import render, sample_params
from ..evaluation import psnr
from ..images import images_to_tensor, luminance
from ..models.encoder import BACKBONES, RefineStyleEncoder
from ..models.stylegan2 import StyleGAN2Generator

MODES = ("one-stage", "stage-one", "two-stage")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Fields that may change between a run and its resume; every other field must match the checkpoint.
RESUMABLE_CHANGES = ("out", "minutes", "stop_after", "resume", "threads", "export", "export_dtype", "device", "progress")


@dataclass
class EncoderTrainConfig:
    """Everything that defines an encoder training run (saved in the checkpoint; a resume must match it)."""

    generator: str
    out: str
    mode: str = "one-stage"
    stage_one: Optional[str] = None
    init_from: Optional[str] = None
    images: Optional[str] = None
    steps: int = 20000
    minutes: float = 140.0
    stop_after: Optional[int] = None
    batch: int = 16
    lr: float = 3e-4
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    generated_fraction: float = 0.5
    photometric_augment: float = 0.0  # share of the real images given a random colour transform
    # Encoder architecture (from_generator arguments).
    num_tokens: Optional[int] = None
    backbone: str = "cnn"
    pretrained_backbone: bool = False
    input_resolution: Optional[int] = None
    base_channels: int = 32
    d_model: int = 128
    num_heads: int = 4
    num_blocks: int = 2
    w_head_channels: int = 64
    # Loss weights.
    w_image_weight: float = 0.5  # one-stage: weight of the W+-only reconstruction loss
    lpips_weight: float = 0.8
    w_supervision_weight: float = 1.0
    w_reg_weight: float = 1e-3
    token_reg_weight: float = 1e-3
    # Bookkeeping.
    checkpoint_every: int = 200
    eval_every: int = 250
    log_every: int = 10
    resume: bool = False
    threads: int = 0
    export: Optional[str] = None
    export_dtype: str = "float16"
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "two-stage" and not self.stage_one:
            raise ValueError("--mode two-stage needs --stage-one DIR (an exported stage-one encoder)")
        if self.mode != "two-stage" and self.stage_one:
            raise ValueError("--stage-one is only used with --mode two-stage")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.generated_fraction <= 1.0:
            raise ValueError(f"generated_fraction must be in [0, 1], got {self.generated_fraction}")
        if not 0.0 <= self.photometric_augment <= 1.0:
            raise ValueError(f"photometric_augment must be in [0, 1], got {self.photometric_augment}")
        if self.export_dtype not in ("float16", "float32"):
            raise ValueError(f"export_dtype must be float16 or float32, got {self.export_dtype!r}")


@dataclass
class TrainState:
    """One logged step: losses are global-batch means (all processes)."""

    step: int
    total: int
    loss: float
    terms: dict = field(default_factory=dict)
    val_psnr: Optional[float] = None
    val_psnr_w: Optional[float] = None
    lr: float = 0.0
    minutes: float = 0.0


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class StepBatch:
    """This process's rows of one step's global batch."""

    images: torch.Tensor  # [n, 3, R, R] in [-1, 1]
    true_ws: torch.Tensor  # [n, num_ws, w_dim] (zeros where unknown)
    has_ws: torch.Tensor  # [n] bool: generator samples, whose true ws are known


# ----------------------------------------------------------------------------------------------
# Setup


def setup_distributed(device: str) -> Distributed:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank=rank, world_size=world, device=dev)


def load_generator(path: str) -> StyleGAN2Generator:
    """A Hub-layout folder (its ``generator/``), a saved generator folder, or any ``load_stylegan2`` file."""
    from ..convert import load_stylegan2

    root = Path(path)
    if root.is_dir() and (root / "generator").is_dir():
        return StyleGAN2Generator.from_pretrained(str(root), subfolder="generator")
    if root.is_dir():
        return StyleGAN2Generator.from_pretrained(str(root))
    return load_stylegan2(path)


def list_images(folder: str) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, by suffix)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--images {folder}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def split_image_files(files: list[Path], count: int = 32) -> tuple[list[Path], list[Path]]:
    """``(train, validation)``: the last ``count`` files are held out when there are at least ``10 * count``;
    smaller folders validate on their first files (also trained on)."""
    if len(files) >= 10 * count:
        return files[:-count], files[-count:]
    return files, files[:count]


def load_image_files(paths: list[Path], resolution: int, pool: Optional[ThreadPoolExecutor]) -> torch.Tensor:
    """Decode, centre-crop and resize files (in threads when ``pool``) → ``[n, 3, R, R]`` in [-1, 1]."""
    if pool is None or len(paths) < 2:
        return images_to_tensor(list(paths), resolution)
    return torch.cat(list(pool.map(lambda p: images_to_tensor([p], resolution), paths)))


def make_encoder(cfg: EncoderTrainConfig, G: StyleGAN2Generator) -> RefineStyleEncoder:
    """The untrained encoder of the mode (two-stage: the stage-one W+ part loaded and frozen)."""
    arch = dict(num_tokens=cfg.num_tokens, backbone=cfg.backbone, pretrained_backbone=cfg.pretrained_backbone,
                input_resolution=cfg.input_resolution, base_channels=cfg.base_channels, d_model=cfg.d_model,
                num_heads=cfg.num_heads, num_blocks=cfg.num_blocks, w_head_channels=cfg.w_head_channels, seed=cfg.seed)
    if cfg.mode == "one-stage":
        return RefineStyleEncoder.from_generator(G, token_branch=True, token_input="image", **arch)
    if cfg.mode == "stage-one":
        return RefineStyleEncoder.from_generator(G, token_branch=False, **arch)
    stage_one = RefineStyleEncoder.from_pretrained(cfg.stage_one)
    stage_one.check_generator(G)
    s1 = stage_one.config
    # The W+ architecture comes from the stage-one encoder; the token branch from the arguments.
    # (with ImageNet weights for both backbones when stage one used them; its own then replace them).
    arch.update(backbone=s1.backbone, pretrained_backbone=s1.pretrained_backbone, input_resolution=stage_one.input_resolution,
                base_channels=s1.base_channels, w_head_channels=s1.w_head_channels, w_plus=s1.w_plus)
    encoder = RefineStyleEncoder.from_generator(G, token_branch=True, token_input="image+reconstruction", **arch)
    encoder.load_w_plus(stage_one)
    return encoder


def init_weights(encoder: RefineStyleEncoder, folder: str, *, mode: str) -> None:
    """Start from an exported encoder of the same architecture, e.g. one trained for an earlier checkpoint of
    the generator. What is measured on the generator stays the new one's: ``w_avg``, ``w_mean``, the
    token gains (from its kernel scales) and the synthesis digest; the description is the new run's. A two-stage
    encoder keeps the W+ part it got from ``--stage-one``; a stage-one encoder takes only the W+ part of a one- or
    two-stage one."""
    source = RefineStyleEncoder.from_pretrained(folder)
    if mode == "stage-one" and source.config.token_branch:
        # A stage-one encoder starts from the W+ part of a one- or two-stage one (a two-stage encoder's is the stage
        # one it was built on), so a shipped encoder is enough to begin the next round; w_avg and w_mean stay ours.
        measured = {k: v.clone() for k, v in encoder.state_dict().items() if k in ("w_avg", "w_mean")}
        encoder.load_w_plus(source)
        encoder.load_state_dict({**encoder.state_dict(), **measured}, strict=True)
        return
    theirs, mine = dict(source.config), dict(encoder.config)
    measured = ("description", "layer_gains", "synthesis_digest")
    diff = sorted(k for k in set(theirs) | set(mine) if not k.startswith("_") and k not in measured and theirs.get(k) != mine.get(k))
    if diff:
        raise ValueError(f"--init-from {folder}: its architecture differs in {diff}; start from scratch or match the flags")
    kept = {"w_avg", "w_mean"} | (set(encoder.w_plus_state_dict()) if mode == "two-stage" else set())
    state = {k: v for k, v in source.state_dict().items() if k not in kept}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if set(missing) != kept or unexpected:
        raise ValueError(f"--init-from {folder}: missing {sorted(missing)}, unexpected {sorted(unexpected)}")


def freeze_for_mode(encoder: RefineStyleEncoder, mode: str) -> None:
    if mode == "two-stage":
        for module in encoder.w_plus_modules():
            module.requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Data


def step_rows(batch: int, dist_info: Distributed) -> torch.Tensor:
    """Rows of the global batch this process handles (strided, so each gets renders and samples)."""
    return torch.arange(dist_info.rank, batch, dist_info.world_size)


def photometric_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random colour transform per image: saturation in [0, 1.5] (0 = grey), contrast in [0.6, 1.4],
    brightness in [-0.2, 0.2] and a per-channel tint gain ``exp(N(0, 0.15))``; ``[-1, 1]`` in and out."""
    n = images.shape[0]
    saturation = 1.5 * torch.rand(n, 1, 1, 1, generator=generator)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)
    brightness = 0.4 * torch.rand(n, 1, 1, 1, generator=generator) - 0.2
    tint = torch.exp(0.15 * torch.randn(n, 3, 1, 1, generator=generator))
    luma = luminance(images)  # [n, 1, H, W]
    x = luma + saturation * (images - luma)  # [n, 3, H, W]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [n, 1, 1, 1] contrast about each image's mean
    x = mean + contrast * (x - mean) + brightness
    return ((x + 1) * tint - 1).clamp(-1, 1)  # tint scales the [0, 2] intensities


@torch.no_grad()
def step_batch(step: int, *, cfg: EncoderTrainConfig, G: StyleGAN2Generator, rows: torch.Tensor,
               image_files: Optional[list[Path]], device: torch.device,
               pool: Optional[ThreadPoolExecutor] = None) -> StepBatch:
    """Rows ``rows`` of step ``step``'s global batch: ``[real images; generator samples]``, from ``(seed, step)`` only."""
    rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    n_generated = int(round(cfg.batch * cfg.generated_fraction))
    n_real = cfg.batch - n_generated
    resolution = G.config.resolution
    # Draw everything for the whole batch (cheap), then make only this process's rows.
    if image_files is None:
        params = sample_params(n_real, seed=rng)
        picks = None
    else:
        picks = torch.randint(len(image_files), (n_real,), generator=rng)
    z = torch.randn(n_generated, G.config.z_dim, generator=rng)  # [B_gen, z_dim]
    jitter = None
    if cfg.photometric_augment > 0:  # drawn after everything else, so runs without it keep their batches
        chosen = torch.rand(n_real, generator=rng) < cfg.photometric_augment
        jitter = (chosen, torch.randint(2**62, (1,), generator=rng).item())
    real_rows = rows[rows < n_real]
    gen_rows = rows[rows >= n_real] - n_real
    parts, ws_parts, known = [], [], []
    empty_ws = torch.zeros(0, G.num_ws, G.config.w_dim, device=device)
    if len(real_rows):
        if picks is None:
            real = render(params[real_rows], style="photo", resolution=resolution)  # [n_real, 3, R, R]
        else:
            real = load_image_files([image_files[int(i)] for i in picks[real_rows]], resolution, pool)  # [n_real, 3, R, R]
        if jitter is not None:
            chosen, jitter_seed = jitter
            # The transform of a row depends on (seed, step, row) only, whichever process renders it.
            for j, r in enumerate(real_rows.tolist()):
                if chosen[r]:
                    real[j] = photometric_jitter(real[j : j + 1], torch.Generator().manual_seed(jitter_seed + r))[0]
        parts.append(real.to(device))
        ws_parts.append(empty_ws.new_zeros(len(real_rows), G.num_ws, G.config.w_dim))
        known.append(torch.zeros(len(real_rows), dtype=torch.bool, device=device))
    if len(gen_rows):
        ws = G.mapping(z[gen_rows].to(device), truncation_psi=1.0)  # [n_gen, num_ws, w_dim]
        parts.append(G.synthesis(ws, noise_mode="const").clamp(-1, 1))  # [n_gen, 3, R, R]
        ws_parts.append(ws)
        known.append(torch.ones(len(gen_rows), dtype=torch.bool, device=device))
    return StepBatch(images=torch.cat(parts), true_ws=torch.cat(ws_parts), has_ws=torch.cat(known))


def validation_images(cfg: EncoderTrainConfig, resolution: int, files: Optional[list[Path]], count: int = 32) -> torch.Tensor:
    """Held-out renderer photos (a seed no training step uses), or the folder's validation files."""
    if files is not None:
        return load_image_files(files, resolution, None)
    return render(sample_params(count, seed=10**9 + cfg.seed), style="photo", resolution=resolution)


# ----------------------------------------------------------------------------------------------
# Losses


def load_lpips(weight: float, device: torch.device) -> tuple[Optional[torch.nn.Module], str]:
    """LPIPS (AlexNet) when its weights can be loaded (they are downloaded once); else None and why."""
    if weight <= 0:
        return None, "LPIPS off (weight 0)"
    import warnings

    try:
        import lpips

        with warnings.catch_warnings():  # torchvision's deprecation notes about lpips' `pretrained=` call
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", verbose=False)
    except Exception as err:  # not installed, or no network for the AlexNet weights
        return None, f"LPIPS unavailable, skipped ({type(err).__name__}: {str(err)[:120]})"
    return model.to(device).eval().requires_grad_(False), "LPIPS (alex) on"


def per_image_reconstruction(fake: torch.Tensor, real: torch.Tensor, lpips_model: Optional[torch.nn.Module],
                             lpips_weight: float) -> dict[str, torch.Tensor]:
    """Per-image ``l2``, ``ssim`` (1 - SSIM) and ``lpips`` terms, each ``[n]``."""
    from pytorch_msssim import ssim

    terms = {"l2": (fake - real).square().flatten(1).mean(1)}  # [n]
    similarity = ssim((fake.clamp(-1, 1) + 1) / 2, (real + 1) / 2, data_range=1.0, size_average=False, win_size=7)  # [n]
    terms["ssim"] = 1 - similarity
    if lpips_model is not None:
        a, b = fake.clamp(-1, 1), real
        if a.shape[-1] < 64:  # AlexNet needs at least ~32 px; upsample small images
            a = F.interpolate(a, size=(64, 64), mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=(64, 64), mode="bilinear", align_corners=False)
        terms["lpips"] = lpips_weight * lpips_model(a, b).flatten()  # [n]
    return terms


def step_loss(encoder_out, batch: StepBatch, *, G: StyleGAN2Generator, cfg: EncoderTrainConfig, w_mean: torch.Tensor,
              lpips_model: Optional[torch.nn.Module]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image loss sums ``[n]`` and the per-term per-image values (for logging)."""
    ws, tokens = encoder_out.ws, encoder_out.tokens
    real = batch.images
    terms: dict[str, torch.Tensor] = {}
    if cfg.mode in ("one-stage", "two-stage"):
        refined = G.synthesis(ws, tokens=tokens, noise_mode="const")  # [n, 3, R, R]
        for k, v in per_image_reconstruction(refined, real, lpips_model, cfg.lpips_weight).items():
            terms[f"refined_{k}"] = v
        p_norm = torch.stack([t.p.square().flatten(1).mean(1) for t in tokens.layers.values()]).mean(0)  # [n]
        terms["token_reg"] = cfg.token_reg_weight * p_norm
    if cfg.mode in ("one-stage", "stage-one"):
        w_images = G.synthesis(ws, noise_mode="const")  # [n, 3, R, R]
        weight = cfg.w_image_weight if cfg.mode == "one-stage" else 1.0
        for k, v in per_image_reconstruction(w_images, real, lpips_model, cfg.lpips_weight).items():
            terms[f"w_{k}"] = weight * v
        w_error = (ws - batch.true_ws).square().flatten(1).mean(1)  # [n]
        terms["w_supervision"] = cfg.w_supervision_weight * torch.where(batch.has_ws, w_error, torch.zeros_like(w_error))
        terms["w_reg"] = cfg.w_reg_weight * (ws - w_mean).square().flatten(1).mean(1)  # [n]
    total = torch.stack(list(terms.values())).sum(0)  # [n]
    return total, terms


def learning_rate(step: int, cfg: EncoderTrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% over the planned steps."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * (0.55 + 0.45 * math.cos(math.pi * min(1.0, step / cfg.steps)))


@torch.no_grad()
def evaluate(encoder: RefineStyleEncoder, G: StyleGAN2Generator, images: torch.Tensor) -> tuple[float, float]:
    """Median PSNR of the refined and of the W+-only reconstructions of held-out photos."""
    out = encoder(images, generator=G)
    w_only = G.synthesis(out.ws).clamp(-1, 1)
    refined = G.synthesis(out.ws, tokens=out.tokens).clamp(-1, 1) if out.tokens is not None else w_only
    return psnr(refined, images).median().item(), psnr(w_only, images).median().item()


# ----------------------------------------------------------------------------------------------
# Training loop


def train(cfg: EncoderTrainConfig, *, callback: Optional[Callable[[int, int, TrainState], None]] = None) -> RefineStyleEncoder:
    """Run (or resume) training; returns the encoder (unwrapped) in eval mode."""
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = setup_distributed(cfg.device)
    try:
        return _train(cfg, dist_info, callback)
    finally:
        if dist_info.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def resume_from(ckpt_path: Path, encoder: RefineStyleEncoder, opt, *, run_config: dict, device, verbose: bool) -> tuple[int, float]:
    """Load a checkpoint of the same run (its settings must match) into the encoder and optimiser; (step, elapsed s)."""
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    # Fields added after a checkpoint was written count as their defaults (the run did not use them).
    saved = {**{f.name: f.default for f in fields(EncoderTrainConfig)}, **ckpt["run_config"]}
    changed = {k: (saved.get(k), v) for k, v in run_config.items() if saved.get(k) != v}
    if changed:
        raise ValueError(f"cannot resume {ckpt_path}: settings differ from the checkpoint's (checkpoint, now): {changed}")
    encoder.load_state_dict(ckpt["encoder"])
    opt.load_state_dict(ckpt["opt"])
    start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    if verbose:
        print(f"resumed from step {start} ({elapsed / 60:.1f} min)")
    return start, elapsed


def step_record(step: int, *, cfg: EncoderTrainConfig, per_image, terms: dict, lr: float, elapsed: float, world: int,
                validate: bool, encoder, G, val_images) -> TrainState:
    """The step's losses averaged over every process (and the validation PSNRs on the main one when due)."""
    import torch.distributed as dist

    stats = torch.stack([per_image.detach().sum()] + [v.detach().sum() for v in terms.values()]) / cfg.batch
    if world > 1:
        dist.all_reduce(stats)
    val, val_w = None, None
    if validate:
        encoder.eval()
        val, val_w = evaluate(encoder, G, val_images)
        encoder.train()
    return TrainState(step=step, total=cfg.steps, loss=stats[0].item(), terms={k: round(v.item(), 6) for k, v in zip(terms, stats[1:])},
                      val_psnr=val, val_psnr_w=val_w, lr=lr, minutes=elapsed / 60)


def _train(cfg: EncoderTrainConfig, dist_info: Distributed, callback) -> RefineStyleEncoder:
    import torch.distributed as dist

    device, world = dist_info.device, dist_info.world_size
    if cfg.batch % world:
        raise ValueError(f"--batch {cfg.batch} must be divisible by the number of processes ({world})")
    out = Path(cfg.out)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    G = load_generator(cfg.generator).to(device).eval().requires_grad_(False)
    image_files, val_files = split_image_files(list_images(cfg.images)) if cfg.images else (None, None)
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) if image_files else None
    encoder = make_encoder(cfg, G).to(device)
    freeze_for_mode(encoder, cfg.mode)
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.99))

    start, elapsed = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    run_config = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    if cfg.resume and ckpt_path.exists():
        start, elapsed = resume_from(ckpt_path, encoder, opt, run_config=run_config, device=device, verbose=dist_info.is_main)
    elif cfg.resume and dist_info.is_main:
        print(f"no checkpoint at {ckpt_path}; starting from step 0")
    if cfg.init_from and start == 0:
        init_weights(encoder, cfg.init_from, mode=cfg.mode)
        if dist_info.is_main:
            print(f"initialised from {cfg.init_from}")

    model = encoder
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(encoder, device_ids=[device.index] if device.type == "cuda" else None)
    lpips_model, lpips_note = load_lpips(cfg.lpips_weight, device)
    val_images = validation_images(cfg, G.config.resolution, val_files).to(device) if dist_info.is_main else None
    rows = step_rows(cfg.batch, dist_info)
    log = open(out / "log.jsonl", "a") if dist_info.is_main else None
    if log is not None:
        log.write(json.dumps({"event": "start", "step": start, "world_size": world, "device": str(device),
                              "lpips": lpips_note, "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
                              "trainable_parameters": sum(p.numel() for p in trainable), "config": asdict(cfg)}) + "\n")
        log.flush()
        print(lpips_note)

    def save(step: int) -> None:
        if not dist_info.is_main:
            return
        tmp = out / "checkpoint.tmp"
        torch.save({"encoder": encoder.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "run_config": run_config, "encoder_config": json.loads(json.dumps(dict(encoder.config)))}, tmp)
        tmp.replace(ckpt_path)  # atomic: an interrupted save never corrupts the last checkpoint

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train encoder ({cfg.mode})", disable=not (cfg.progress and dist_info.is_main))
    t0 = time.perf_counter() - elapsed
    step = start
    stop_at = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    encoder.train()
    while step < stop_at:
        # Every process must take the same decision, so the wall-time budget is rank 0's.
        out_of_time = torch.tensor(float(time.perf_counter() - t0 >= cfg.minutes * 60), device=device)
        if world > 1:
            dist.broadcast(out_of_time, src=0)
        if out_of_time.item():
            break
        batch = step_batch(step, cfg=cfg, G=G, rows=rows, image_files=image_files, device=device, pool=pool)
        cur_lr = learning_rate(step, cfg)
        for group in opt.param_groups:
            group["lr"] = cur_lr
        encoder_out = model(batch.images, generator=G)
        per_image, terms = step_loss(encoder_out, batch, G=G, cfg=cfg, w_mean=encoder.w_mean, lpips_model=lpips_model)
        # Sum over this process's rows / global batch, times world (DDP averages gradients): the global mean.
        loss = per_image.sum() * (world / cfg.batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t0

        record = step_record(step, cfg=cfg, per_image=per_image, terms=terms, lr=cur_lr, elapsed=elapsed, world=world,
                             validate=dist_info.is_main and (step % cfg.eval_every == 0 or step == cfg.steps),
                             encoder=encoder, G=G, val_images=val_images)
        val, val_w = record.val_psnr, record.val_psnr_w
        if log is not None and (step % cfg.log_every == 0 or val is not None or step == start + 1):
            log.write(json.dumps(asdict(record)) + "\n")
            log.flush()
        if val is not None:
            bar.set_postfix(loss=f"{record.loss:.4f}", val_psnr=f"{val:.2f}", val_psnr_w=f"{val_w:.2f}")
        if callback is not None and dist_info.is_main:
            callback(step, cfg.steps, record)
        if step % cfg.checkpoint_every == 0:
            save(step)
        bar.update(1)
    bar.close()
    if pool is not None:
        pool.shutdown()
    save(step)
    if log is not None:
        log.write(json.dumps({"event": "stop", "step": step, "minutes": elapsed / 60}) + "\n")
        log.close()
    encoder.eval()
    if cfg.export and dist_info.is_main:
        encoder.register_to_config(description=describe(cfg, step))
        dtype = torch.float16 if cfg.export_dtype == "float16" else torch.float32
        encoder.save_pretrained(cfg.export, dtype=dtype)
        print(f"exported the encoder to {cfg.export}")
    return encoder


def describe(cfg: EncoderTrainConfig, step: int) -> str:
    data = f"image folder {cfg.images}" if cfg.images else "SynthFaces photo renders"
    return (f"RefineStyle encoder, {cfg.mode}, trained {step} steps (batch {cfg.batch}, lr {cfg.lr}, seed {cfg.seed}) "
            f"on {data} and generator samples ({cfg.generated_fraction:.0%})"
            + (f", {cfg.photometric_augment:.0%} of the real images colour-jittered" if cfg.photometric_augment else ""))


def parse_args(argv: Optional[list[str]] = None) -> EncoderTrainConfig:
    defaults = EncoderTrainConfig(generator="", out="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="Hub-layout folder, generator folder or StyleGAN2 checkpoint")
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.jsonl)")
    parser.add_argument("--mode", choices=MODES, default=defaults.mode)
    parser.add_argument("--stage-one", default=None, help="two-stage: folder of an exported stage-one encoder")
    parser.add_argument("--init-from", default=None, help="start from this exported encoder's weights (same architecture)")
    parser.add_argument("--images", default=None, help="train on this image folder instead of SynthFaces renders")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="planned steps (sets the learning-rate schedule)")
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="stop (with a checkpoint) after this wall time")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps in this call")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="global batch (split over processes)")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--generated-fraction", type=float, default=defaults.generated_fraction,
                        help="share of each batch that is generator samples (the rest: renders or --images)")
    parser.add_argument("--photometric-augment", type=float, default=defaults.photometric_augment,
                        help="share of the real images given a random colour transform (input and target)")
    parser.add_argument("--num-tokens", type=int, default=None, help="K (default: the generator's num_tokens)")
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone)
    parser.add_argument("--pretrained-backbone", action="store_true", help="ResNet from ImageNet weights (downloads them)")
    parser.add_argument("--input-resolution", type=int, default=None)
    parser.add_argument("--base-channels", type=int, default=defaults.base_channels)
    parser.add_argument("--d-model", type=int, default=defaults.d_model)
    parser.add_argument("--num-heads", type=int, default=defaults.num_heads)
    parser.add_argument("--num-blocks", type=int, default=defaults.num_blocks)
    parser.add_argument("--w-head-channels", type=int, default=defaults.w_head_channels)
    parser.add_argument("--w-image-weight", type=float, default=defaults.w_image_weight)
    parser.add_argument("--lpips-weight", type=float, default=defaults.lpips_weight, help="0 disables LPIPS")
    parser.add_argument("--w-supervision-weight", type=float, default=defaults.w_supervision_weight)
    parser.add_argument("--w-reg-weight", type=float, default=defaults.w_reg_weight)
    parser.add_argument("--token-reg-weight", type=float, default=defaults.token_reg_weight)
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--export", default=None, help="save the trained encoder here (save_pretrained)")
    parser.add_argument("--export-dtype", choices=("float16", "float32"), default=defaults.export_dtype)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "no_progress"}
    return EncoderTrainConfig(**values, progress=not args.no_progress)


def main(argv: Optional[list[str]] = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
