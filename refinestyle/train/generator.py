"""Train the SynthFaces generator: ``G(z)`` regresses ``render(z_to_params(z), "photo")``.

The loss weights small parts (eyes, brows, mouth, glasses) up through the renderer's part masks, so
capacity is not all spent on large flat areas. Fixed seed; the batch at step ``i`` depends only on
``(seed, i)``, so a resumed run sees the same data as an uninterrupted one.

    python -m refinestyle.train.generator --out runs/synthfaces-generator --minutes 60
    python -m refinestyle.train.generator --out runs/synthfaces-generator --minutes 60 --resume
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data.synthfaces import ATTRIBUTES, categorical_z_edges, render, z_to_params
from ..convert import estimate_w_avg
from ..evaluation import psnr, ssim
from ..models.stylegan2 import StyleGAN2Generator

SMALL_PARTS = ("eyes", "brows", "mouth", "glasses")
# Extra loss weight inside each small part's mask (the loss weight map is 1 plus this; see ``targets``).
DEFAULT_PART_WEIGHTS = {part: 4.0 for part in SMALL_PARTS}


SHIPPED_CHANNELS = (64, 64, 64, 32, 16)
TRAIN_PARTS = ("all", "mapping")


def synthfaces_generator_config(*, resolution: int = 64, channels: Optional[tuple[int, ...]] = None,
                                z_bins: bool = True, mapping_width: Optional[int] = None,
                                mapping_per_layer: bool = False) -> dict:
    """The narrow 64 px generator: channels 64/64/64/32/16 (one per resolution from 4 px), mapping lr
    multiplier 1, z not normalised (z is the Gaussianised parameter vector: its norm carries information),
    and (``z_bins``) the renderer's categorical attributes also as one-hot inputs of the mapping: a smooth
    mapping glides through a middle category (blue eyes, between brown and green) instead of drawing it."""
    n_res = int(math.log2(resolution)) - 1
    channels = list(channels) if channels is not None else list(SHIPPED_CHANNELS)
    if len(channels) < n_res:
        raise ValueError(f"channels: need one width per resolution from 4 to {resolution} px ({n_res}), got {len(channels)}")
    bins = [[ATTRIBUTES.index(name), edges] for name, edges in categorical_z_edges().items()] if z_bins else None
    return dict(z_dim=len(ATTRIBUTES), w_dim=128, resolution=resolution, channels=channels[:n_res],
                mapping_layers=4, mapping_lr_multiplier=1.0, num_tokens=8, normalize_z=False, z_bins=bins,
                mapping_hidden_dim=mapping_width, mapping_per_layer=mapping_per_layer)


def train_blocks(train_parts: str, G: StyleGAN2Generator) -> list[str]:
    """``--train``: ``all``, ``mapping``, or ``mapping+b64[+b32...]`` (the mapping and these synthesis blocks)."""
    if train_parts in TRAIN_PARTS:
        return []
    names = [name for name, _ in G.synthesis.named_children()]
    head, *blocks = train_parts.split("+")
    if head == "mapping" and blocks and all(b in names for b in blocks):
        return blocks
    raise ValueError(f"--train {train_parts!r}: choose all, mapping, or mapping+<blocks> with blocks from {', '.join(names)} "
                     f"(e.g. mapping+{names[-1]})")


def batch_z(step: int, *, batch: int, seed: int, z_dim: int) -> torch.Tensor:
    return torch.randn(batch, z_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))


def targets(z: torch.Tensor, *, resolution: int, device: torch.device = torch.device("cpu"),
            part_weights: Optional[dict[str, float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Renderer images and the loss weight map (1 + 4 on small parts by default), on ``device``.

    The renderer runs on the CPU (its float64 geometry is cheap there); only the results move."""
    weights = DEFAULT_PART_WEIGHTS if part_weights is None else part_weights
    images, masks = render(z_to_params(z), style="photo", resolution=resolution, return_masks=True)
    # The union of the parts gets the smallest weight once (overlaps such as glasses on eyes are not
    # counted twice); each part adds what its own weight exceeds that by.
    base = min(weights.values())
    union = torch.stack([masks[m] for m in weights]).sum(0).clamp(0, 1)  # [N, 1, R, R]
    extra = base * union + torch.stack([(w - base) * masks[m] for m, w in weights.items()]).sum(0)  # [N, 1, R, R]
    return images.to(device), (1.0 + extra).to(device)


def parse_part_weights(text: str) -> dict[str, float]:
    """``"eyes=16,mouth=4"`` → weights; parts not named keep their default (4)."""
    weights = dict(DEFAULT_PART_WEIGHTS)
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if name not in SMALL_PARTS:
            raise ValueError(f"--part-weights: unknown part {name!r}; parts: {', '.join(SMALL_PARTS)} (e.g. eyes=16,mouth=8)")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--part-weights: {item!r} needs a number after '=' (e.g. eyes=16)") from None
        if not weights[name] >= 0:
            raise ValueError(f"--part-weights: {item!r} must be a weight of 0 or more")
    return weights


def weighted_loss(fake: torch.Tensor, real: torch.Tensor, weight: torch.Tensor, *, ssim_weight: float = 0.0) -> torch.Tensor:
    """L1 + L2 weighted per pixel by the part masks, plus ``ssim_weight * (1 - SSIM)`` (the card's SSIM, 7x7 window)."""
    diff = fake - real
    loss = ((diff.abs() + diff.square()) * weight).mean()
    if ssim_weight:
        # A pixel loss spends little on local structure; SSIM rewards it directly (the card measures it).
        loss = loss + ssim_weight * (1 - ssim(fake, real)).mean()
    return loss


@dataclass
class TrainState:
    step: int
    total: int
    loss: float
    val_psnr: Optional[float]
    minutes: float


def train(
    *,
    out: Path,
    steps: int,
    minutes: float,
    batch: int = 16,
    lr: float = 5e-3,
    ema_beta: float = 0.995,
    seed: int = 0,
    resolution: int = 64,
    resume: bool = False,
    channels: Optional[tuple[int, ...]] = None,
    z_bins: bool = True,
    init_from: Optional[Path] = None,
    train_parts: str = "all",
    device: str = "cpu",
    prefetch: Optional[bool] = None,
    part_weights: Optional[dict[str, float]] = None,
    mapping_width: Optional[int] = None,
    ssim_weight: float = 0.0,
    mapping_per_layer: bool = False,
    checkpoint_every: int = 200,
    eval_every: int = 250,
    callback: Optional[Callable[[int, int, TrainState], None]] = None,
    progress: bool = True,
) -> StyleGAN2Generator:
    if not ssim_weight >= 0:
        raise ValueError(f"--ssim-weight {ssim_weight}: must be 0 (off) or more")
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    G = StyleGAN2Generator(**synthfaces_generator_config(resolution=resolution, channels=channels, z_bins=z_bins,
                                                         mapping_width=mapping_width, mapping_per_layer=mapping_per_layer))
    if init_from is not None:
        start_from(G, init_from, z_bins=z_bins, mapping_per_layer=mapping_per_layer, seed=seed)
    freeze_all_but(G, train_parts)
    G = G.to(dev)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99))
    start, elapsed = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        start, elapsed = resume_from(ckpt_path, G, G_ema, opt, train_parts=train_parts, mapping_per_layer=mapping_per_layer,
                                     device=dev)
    val_z = batch_z(10**9, batch=64, seed=seed + 1, z_dim=G.config.z_dim)
    val_img, _ = targets(val_z, resolution=resolution, device=dev)
    val_z = val_z.to(dev)
    log = open(out / "log.jsonl", "a")

    def save(step: int) -> None:
        # Truncation pulls toward w_avg: keep it the mean of the EMA generator's mapping output.
        G_ema.mapping.w_avg.copy_(estimate_w_avg(G_ema))
        tmp = out / "checkpoint.tmp"
        torch.save({"G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed, "config": dict(G.config), "train_parts": train_parts}, tmp)
        tmp.replace(ckpt_path)  # atomic: an interrupted save never corrupts the last checkpoint

    from tqdm import tqdm

    def make_batch(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = batch_z(i, batch=batch, seed=seed, z_dim=G.config.z_dim)
        real, weight = targets(z, resolution=resolution, part_weights=part_weights)
        return z, real, weight

    # On a GPU the CPU renderer would leave it idle half the time: render the next batch in a thread
    # (torch ops release the GIL). The batch of step i is still a function of (seed, i) alone.
    if prefetch is None:
        prefetch = dev.type == "cuda"
    pool = ThreadPoolExecutor(max_workers=1) if prefetch else None
    pending = pool.submit(make_batch, start) if pool is not None else None
    bar = tqdm(total=steps, initial=start, desc="train generator", disable=not progress)
    t0 = time.perf_counter() - elapsed
    step = start
    while step < steps and (time.perf_counter() - t0) < minutes * 60:
        if pool is not None:
            z, real, weight = pending.result()
            pending = pool.submit(make_batch, step + 1)
        else:
            z, real, weight = make_batch(step)
        z, real, weight = z.to(dev), real.to(dev), weight.to(dev)
        # Warm-up then cosine decay over the planned steps.
        cur_lr = lr * min(1.0, (step + 1) / 200) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, step / steps)))
        for group in opt.param_groups:
            group["lr"] = cur_lr
        fake = G.synthesis(G.mapping(z), noise_mode="const")
        loss = weighted_loss(fake, real, weight, ssim_weight=ssim_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(G_ema, G, beta=min(ema_beta, (1 + step) / (10 + step)))
        step += 1
        elapsed = time.perf_counter() - t0
        val = None
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                val = psnr(G_ema.synthesis(G_ema.mapping(val_z)), val_img).mean().item()
        record = TrainState(step=step, total=steps, loss=loss.item(), val_psnr=val, minutes=elapsed / 60)
        if step % 10 == 0 or val is not None:
            log.write(json.dumps(record.__dict__) + "\n")
            log.flush()
        if val is not None:
            bar.set_postfix(loss=f"{record.loss:.4f}", val_psnr=f"{val:.2f}")
        if callback is not None:
            callback(step, steps, record)
        if step % checkpoint_every == 0:
            save(step)
        bar.update(1)
    bar.close()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    save(step)
    log.write(json.dumps({"event": "stop", "step": step, "minutes": elapsed / 60}) + "\n")  # the exact last step
    log.close()
    return G_ema.cpu()


def start_from(G: StyleGAN2Generator, init_from: Path, *, z_bins: bool, mapping_per_layer: bool, seed: int) -> None:
    """Fine-tune a saved generator (same config): its W space stays close, so encoders trained on it transfer."""
    source = StyleGAN2Generator.from_pretrained(init_from)
    resolution = G.config.resolution
    if source.config.channels != G.config.channels or source.config.resolution != resolution:
        raise ValueError(f"--init-from {init_from}: channels {list(source.config.channels)} at {source.config.resolution} px, "
                         f"but this run builds {list(G.config.channels)} at {resolution} px; pass matching --channels")
    if source.config.z_bins and not z_bins:
        raise ValueError(f"--init-from {init_from}: that generator has z_bins inputs; drop --no-z-bins")
    width = G.mapping.hidden_dim
    if source.mapping.hidden_dim > width:
        raise ValueError(f"--init-from {init_from}: its mapping is {source.mapping.hidden_dim} wide; "
                         f"pass --mapping-width {source.mapping.hidden_dim} or more")
    if source.mapping.hidden_dim < width:
        # Same images at the start; the new units learn from there (see with_wider_mapping).
        source = source.with_wider_mapping(width, seed=seed)
    if source.config.get("mapping_per_layer", False) and not mapping_per_layer:
        raise ValueError(f"--init-from {init_from}: that generator has per-layer mapping outputs; pass --mapping-per-layer")
    missing, unexpected = G.load_state_dict(source.state_dict(), strict=False)
    # A generator without bin inputs or per-layer maps starts this one exactly: those stay zero (a no-op).
    if unexpected or set(missing) - {"mapping.fc0_bins", "mapping.layer_maps", "mapping.layer_biases"}:
        raise ValueError(f"--init-from {init_from}: missing keys {missing}, unexpected keys {unexpected}")


def freeze_all_but(G: StyleGAN2Generator, train_parts: str) -> None:
    """Only ``train_parts`` learn. Synthesis frozen: every W+ keeps its image, so encoders and domains made on this
    synthesis still hold; named blocks (mapping+b64) train too, and their images change (re-measure encoders, domains)."""
    blocks = train_blocks(train_parts, G)
    if train_parts != "all":
        G.synthesis.requires_grad_(False)
        for block in blocks:
            getattr(G.synthesis, block).requires_grad_(True)


def resume_from(ckpt_path: Path, G, G_ema, opt, *, train_parts: str, mapping_per_layer: bool,
                device: torch.device) -> tuple[int, float]:
    """Load a checkpoint of the same run into the networks and optimiser; returns (step, elapsed seconds)."""
    ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
    theirs = ckpt["config"].get("mapping_hidden_dim")
    if theirs != G.config.mapping_hidden_dim:
        raise ValueError(f"--resume: {ckpt_path} has a mapping {theirs or G.config.w_dim} wide; "
                         f"resume it with --mapping-width {theirs or G.config.w_dim}")
    if ckpt["config"].get("mapping_per_layer", False) != mapping_per_layer:
        flag = "with" if ckpt["config"].get("mapping_per_layer", False) else "without"
        raise ValueError(f"--resume: {ckpt_path} was trained {flag} per-layer mapping outputs; resume it {flag} --mapping-per-layer")
    if ckpt.get("train_parts", "all") != train_parts:
        raise ValueError(f"--resume: {ckpt_path} trained --train {ckpt.get('train_parts', 'all')}; resume it with that")
    G.load_state_dict(ckpt["G"])
    G_ema.load_state_dict(ckpt["G_ema"])
    opt.load_state_dict(ckpt["opt"])
    start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    print(f"resumed from step {start} ({elapsed / 60:.1f} min)")
    return start, elapsed


@torch.no_grad()
def update_ema(G_ema: StyleGAN2Generator, G: StyleGAN2Generator, *, beta: float) -> None:
    """``G_ema ← β·G_ema + (1-β)·G``; buffers copied, except ``w_avg`` (estimated for G_ema at each checkpoint)."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for (name, b_ema), b in zip(G_ema.named_buffers(), G.buffers()):
        if not name.endswith("w_avg"):
            b_ema.copy_(b)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: this torch build sees no CUDA device; use --device cpu")
    return dev


def _channels_arg(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 128,128,128,64,32") from None
    if any(c < 1 for c in channels):
        raise argparse.ArgumentTypeError(f"{text!r}: every width must be a positive integer")
    return channels


def _part_weights_arg(text: str) -> dict[str, float]:
    try:
        return parse_part_weights(text)
    except ValueError as err:  # argparse would otherwise replace the message with "invalid value"
        raise argparse.ArgumentTypeError(str(err).removeprefix("--part-weights: ")) from None


def _train_parts_arg(text: str) -> str:
    # The block names depend on the resolution: their existence is checked by train_blocks.
    blocks = text.split("+")[1:]
    if text in TRAIN_PARTS or (text.startswith("mapping+") and all(re.fullmatch(r"b\d+", b) for b in blocks)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give all, mapping, or mapping+<synthesis blocks>, e.g. mapping+b32+b64")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/synthfaces-generator"))
    parser.add_argument("--steps", type=int, default=6000, help="planned steps (sets the learning-rate schedule)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop (with a checkpoint) after this wall time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--channels", type=_channels_arg, default=None,
                        help="widths per resolution from 4 px, comma-separated (default: 64,64,64,32,16)")
    parser.add_argument("--init-from", type=Path, default=None, help="fine-tune this saved generator folder (same config)")
    parser.add_argument("--train", dest="train_parts", type=_train_parts_arg, default="all",
                        help="what to optimise: everything (all), the mapping only (mapping; with --init-from the "
                             "synthesis, and so the encoders and domains made on it, stay exactly as they were), or the "
                             "mapping and the named synthesis blocks (e.g. mapping+b32+b64)")
    parser.add_argument("--no-z-bins", dest="z_bins", action="store_false",
                        help="no one-hot inputs for the categorical attributes (to retrain or extend a generator made without them)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--part-weights", type=_part_weights_arg, default=None,
                        help="extra loss weight per small part, e.g. eyes=16 (default 4 for eyes, brows, mouth, glasses)")
    parser.add_argument("--mapping-width", type=int, default=None,
                        help="hidden width of the mapping (default: w_dim, 128); with --init-from a narrower generator "
                             "is widened first, drawing the same images (StyleGAN2Generator.with_wider_mapping)")
    parser.add_argument("--ssim-weight", type=float, default=0.0,
                        help="add this weight times (1 - SSIM) to the pixel loss (default 0: off)")
    parser.add_argument("--mapping-per-layer", action="store_true",
                        help="give each synthesis layer its own linear map of w (a W+ mapping; zero at start, so "
                             "--init-from a generator without it starts from its very images)")
    parser.add_argument("--export", type=Path, default=None, help="save the EMA generator here (save_pretrained, fp16)")
    args = parser.parse_args(argv)
    if not args.ssim_weight >= 0:
        parser.error(f"--ssim-weight {args.ssim_weight}: give 0 (off) or a positive weight, e.g. 4")
    if args.threads:
        torch.set_num_threads(args.threads)
    G_ema = train(out=args.out, steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, seed=args.seed,
                  resume=args.resume, channels=args.channels, z_bins=args.z_bins, init_from=args.init_from,
                  train_parts=args.train_parts, device=args.device,
                  part_weights=args.part_weights, mapping_width=args.mapping_width, ssim_weight=args.ssim_weight,
                  mapping_per_layer=args.mapping_per_layer)
    if args.export is not None:
        G_ema.save_pretrained(args.export, dtype=torch.float16)
        print(f"exported EMA generator to {args.export}")


if __name__ == "__main__":
    main()
