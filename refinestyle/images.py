"""Images in and out: any PIL image, file or bytes → square RGB tensors in [-1, 1] (with clear errors), and
tensors → uint8 arrays and PNG grids; seed lists as users type them."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch, numpy and PIL are imported where used: the command line reads its seed lists (parse_seeds) from here,
# and `refinestyle --help` should answer before torch has loaded.
MIN_SIDE = 16
MAX_PIXELS = 40_000_000  # larger uploads are refused (decompression bombs, memory)
MAX_ASPECT = 4  # the centre square of a longer strip would keep too little of the picture
MAX_SEED = 2**32 - 1


class ImageError(ValueError):
    """An input that is not a usable image; the message says why and what to do."""


def open_image(source) -> "PIL.Image.Image":  # noqa: F821
    """Open a path, bytes or PIL image; honour EXIF orientation; refuse non-images, tiny and huge images."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            fp = io.BytesIO(source)
            name = "the uploaded data"
        elif isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise ImageError(f"no such image file: {source}")
            fp, name = str(source), str(source)
        else:
            raise ImageError(f"expected an image (PIL image, file path or bytes), got {type(source).__name__}")
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            img = Image.open(fp)
            img.load()
        except Image.DecompressionBombError:
            raise ImageError(f"{name} is larger than {MAX_PIXELS // 1_000_000} megapixels; downscale it first") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"{name} is a corrupt or truncated image ({err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"the image is {w}x{h} px (over {MAX_PIXELS // 1_000_000} megapixels); downscale it first")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"the image is only {w}x{h} px; give at least {MIN_SIDE}x{MIN_SIDE}")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"the image is {w}x{h} px, a strip more than {MAX_ASPECT} times longer than wide; "
                         "crop it to the face (nearly square) first")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF blocks must not stop an otherwise fine image
        pass
    return img


def to_rgb(img: "PIL.Image.Image") -> "PIL.Image.Image":  # noqa: F821
    """Any mode (L, LA, P, RGBA, CMYK, I;16, I, F ...) → RGB; transparency composited on white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def center_square(img: "PIL.Image.Image", resolution: int) -> torch.Tensor:  # noqa: F821
    """Centre-crop to a square and resize (Lanczos) → ``[3, R, R]`` in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # [R, R, 3]
    return arr.permute(2, 0, 1).float() / 127.5 - 1


def images_to_tensor(images, resolution: int) -> torch.Tensor:
    """A tensor ``[N, 3, H, W]`` in [-1, 1] (resized if needed) or a list of image inputs → ``[N, 3, R, R]``."""
    import torch

    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ImageError(f"image tensors must be float [N, 3, H, W] in [-1, 1], got {images.dtype} {list(images.shape)}")
        if not torch.isfinite(images).all():
            raise ImageError("the image tensor has NaN or infinite values")
        if images.min() < -1.5 or images.max() > 1.5:
            raise ImageError(f"image tensors must be in [-1, 1], got values in [{images.min():.2f}, {images.max():.2f}]; "
                             "map [0, 1] with x * 2 - 1 or [0, 255] with x / 127.5 - 1")
        if images.shape[-1] != resolution or images.shape[-2] != resolution:
            images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        return images
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ImageError("no images given")
    return torch.stack([center_square(to_rgb(open_image(x)), resolution) for x in images])


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of ``[N, 3, H, W]`` images, ``[N, 1, H, W]`` (in the images' own value range)."""
    return images[:, 0:1] * 0.299 + images[:, 1:2] * 0.587 + images[:, 2:3] * 0.114  # [N, 1, H, W]


def random_affine(images: torch.Tensor, *, generator: torch.Generator, scale: tuple[float, float] = (0.8, 1.0),
                  shift: float = 0.1, flip: bool = True) -> torch.Tensor:
    """One random zoom/shift/flip per image of ``[N, C, H, W]`` (differentiable; borders repeat).

    ``scale`` < 1 zooms in; ``shift`` is in units of half the image side. Draws come from ``generator`` only,
    so equal generators give equal views (``paired`` use: warp two batches with one seed).
    """
    import torch

    n = images.shape[0]
    zoom = torch.empty(n).uniform_(*scale, generator=generator)  # [N]
    offset = torch.empty(n, 2).uniform_(-shift, shift, generator=generator)  # [N, 2]
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)  # [N]
    theta = torch.zeros(n, 2, 3)  # [N, 2, 3] output → input sampling coordinates
    theta[:, 0, 0] = zoom * mirror
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = offset
    grid = torch.nn.functional.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # [N, H, W, 2]
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def parse_seeds(text: str, *, max_count: int = 1024) -> list[int]:
    """``"0-7"``, ``"1,5,9"`` or ``"0-3,10"`` → a list of at most ``max_count`` seeds (ValueError otherwise)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise ValueError(f"seeds must look like '0-7' or '1, 5, 9'; could not read {part.strip()!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"seeds must look like '0-7' or '1, 5, 9': the range {part.strip()!r} runs backwards")
        if hi > MAX_SEED:  # torch.Generator takes 64-bit seeds; a larger one overflows deep inside torch
            raise ValueError(f"seeds must be at most {MAX_SEED:,}; {part.strip()!r} is larger")
        if len(seeds) + hi - lo + 1 > max_count:  # checked before expanding: '0-999999999' allocates nothing
            raise ValueError(f"at most {max_count} seeds per request")
        seeds.extend(range(lo, hi + 1))
    return seeds


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] → uint8 ``[N, H, W, 3]``."""
    import torch

    return ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def make_grid(images: torch.Tensor, *, columns: int = 8) -> torch.Tensor:
    """``[N, 3, H, W]`` images in [-1, 1] → one uint8 ``[rows·H, cols·W, 3]`` grid on white."""
    import torch

    n, _, h, w = images.shape
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    grid = torch.full((rows * h, cols * w, 3), 255, dtype=torch.uint8)
    for idx, img in enumerate(to_uint8(images.cpu())):
        r, c = divmod(idx, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return grid


def to_pil(image: torch.Tensor):
    """``[3, H, W]`` in [-1, 1] → PIL image."""
    from PIL import Image

    return Image.fromarray(to_uint8(image[None])[0].cpu().numpy())


PREVIEW_FACE_PX = 128  # preview faces, enlarged by whole pixels (nearest) so what the model drew stays visible
LABEL_PX = 120


def labelled_rows(rows: list[tuple[str, torch.Tensor]], *, face_px: int | None = None):
    """Rows of images ``[N, 3, R, R]``, each shown at ``face_px`` after a label: a preview one can read. Smaller images
    are enlarged nearest-neighbour (the pixels the model drew stay visible), larger ones reduced with a Lanczos filter;
    ``face_px`` None: ``PREVIEW_FACE_PX``, twice that for images larger than it."""
    from PIL import Image, ImageDraw, ImageFont

    if face_px is None:
        size = max(images.shape[-1] for _, images in rows)
        face_px = PREVIEW_FACE_PX if size <= PREVIEW_FACE_PX else 2 * PREVIEW_FACE_PX

    columns = max(len(images) for _, images in rows)
    sheet = Image.new("RGB", (LABEL_PX + columns * face_px, len(rows) * face_px), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for r, (label, images) in enumerate(rows):
        draw.multiline_text((8, r * face_px + face_px // 2), label, fill=(40, 40, 40), font=font, anchor="lm")
        for c, image in enumerate(images):
            face = to_pil(image)
            face = face.resize((face_px, face_px), Image.NEAREST if face.width <= face_px else Image.LANCZOS)
            sheet.paste(face, (LABEL_PX + c * face_px, r * face_px))
    return sheet


def save_grid(images: torch.Tensor, path: str | Path, *, columns: int = 8):
    """Save ``[N, 3, H, W]`` images in [-1, 1] as one PNG grid."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, columns=columns).numpy()).save(path)
    return path
