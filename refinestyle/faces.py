"""Real photos for face models: FFHQ-style alignment, paste-back into the photo, and identity similarity.

Every StyleGAN face model (FFHQ, and the e4e / pSp / ReStyle / HyperStyle / PTI encoders made for it) expects
faces cut the way the FFHQ dataset was: dlib's 68 landmarks give the eye and mouth centres, which fix an oriented
square (its centre a little below the eyes, its size from the eye-to-eye and eye-to-mouth distances, its angle from
the eye line); the crop reflect-pads where the square leaves the photo, fading the padding into a blur, and is
resampled with antialiasing.

The landmark and descriptor models are dlib's, shipped inside the ``face_recognition_models`` package and run by
the ``dlib-bin`` wheel: ``pip install refinestyle[faces]``. Nothing is downloaded.

Examples:
    ```py
    >>> from refinestyle.faces import align_face, paste_back  # doctest: +SKIP
    >>> aligned = align_face("portrait.jpg", resolution=1024)  # doctest: +SKIP
    >>> aligned.image.size, aligned.quad.shape, aligned.landmarks.shape  # doctest: +SKIP
    ((1024, 1024), (4, 2), (68, 2))
    >>> restored = paste_back(aligned, aligned.image)  # the photo again, the face put back in place  # doctest: +SKIP
    ```
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .images import ImageError, open_image, to_rgb

DETECT_MAX_SIDE = 1024  # faces are found on a copy this size at most; landmarks and crops use the full photo
CNN_MAX_SIDE = 512  # the CNN detector, tried when the fast one finds nothing, reads a copy this size (~2 s on a CPU)
IDENTITY_CHIP = 150  # dlib's face-descriptor network reads 150 px aligned chips


class NoFaceError(ImageError):
    """No face was found in an image that a face model was asked to align."""


class FacesUnavailableError(ImportError):
    """dlib or its models are not installed."""


@dataclass
class AlignedFace:
    """One face cut the FFHQ way.

    Attributes:
        image: the aligned crop, ``resolution`` × ``resolution`` RGB.
        quad: ``[4, 2]`` corners of the crop in the source photo (top-left, bottom-left, bottom-right, top-right),
            in pixels; the crop maps onto it by a similarity transform.
        landmarks: ``[68, 2]`` dlib landmarks in source-photo pixels.
        source: the source photo (RGB), kept so that ``paste_back`` can put an edit back into it.
        box: the detected face rectangle ``(left, top, right, bottom)`` in source pixels.
    """

    image: "PIL.Image.Image"  # noqa: F821
    quad: np.ndarray
    landmarks: np.ndarray
    source: "PIL.Image.Image"  # noqa: F821
    box: tuple[float, float, float, float]

    @property
    def resolution(self) -> int:
        return self.image.size[0]


# --------------------------------------------------------------------------------------------------
# dlib's models


def _model_file(name: str) -> str:
    # face_recognition_models/__init__.py imports pkg_resources (gone from current setuptools): find its folder instead.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FacesUnavailableError("the face models are not installed: pip install 'refinestyle[faces]' "
                                    "(dlib-bin and face_recognition_models; nothing is downloaded at run time)")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise FacesUnavailableError(f"face_recognition_models has no {name}; reinstall it: pip install 'refinestyle[faces]'")
    return str(path)


@functools.lru_cache(maxsize=1)
def _dlib():
    try:
        import dlib
    except ImportError:
        raise FacesUnavailableError("dlib is not installed: pip install 'refinestyle[faces]' (the dlib-bin wheel, "
                                    "no compiler needed)") from None
    return dlib


@functools.lru_cache(maxsize=1)
def _detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _cnn_detector():
    return _dlib().cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))


@functools.lru_cache(maxsize=1)
def _landmarker():
    return _dlib().shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))


@functools.lru_cache(maxsize=1)
def _descriptor():
    return _dlib().face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))


def _as_rgb(image) -> "PIL.Image.Image":  # noqa: F821
    import torch

    if isinstance(image, torch.Tensor):  # [3, H, W] in [-1, 1], as the library's images are
        from .images import to_uint8
        from PIL import Image

        return Image.fromarray(to_uint8(image[None] if image.dim() == 3 else image)[0].cpu().numpy())
    return to_rgb(open_image(image))


def detect_faces(image) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
    """Every face as ``(box, landmarks [68, 2])`` in the photo's pixels, largest first.

    Detection runs on a copy at most ``DETECT_MAX_SIDE`` on a side, upsampled once when faces would be small,
    so it copes with 256 px to 6000 px photos; the landmarks are then fitted on the full photo. dlib's fast (HOG)
    detector misses faces turned away from the camera; when it finds nothing, its CNN detector (in the same
    package) looks again on a smaller copy.
    """
    dlib = _dlib()
    photo = _as_rgb(image)

    def copy_at_most(side: int):
        scale = min(1.0, side / max(photo.size))
        small = photo if scale == 1.0 else photo.resize((round(photo.width * scale), round(photo.height * scale)), 1)  # LANCZOS
        return np.asarray(small), scale

    pixels, scale = copy_at_most(DETECT_MAX_SIDE)
    rects = list(_detector()(pixels, 1))
    if not rects:
        pixels, scale = copy_at_most(CNN_MAX_SIDE)
        rects = [found.rect for found in _cnn_detector()(pixels, 0)]
    full = np.asarray(photo)
    faces = []
    for rect in rects:
        box = (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)
        shape = _landmarker()(full, dlib.rectangle(*(int(round(v)) for v in box)))
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # [68, 2]
        faces.append((box, landmarks))
    faces.sort(key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
    return faces


# --------------------------------------------------------------------------------------------------
# The FFHQ crop


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The oriented square of the FFHQ recipe from 68 landmarks: ``[4, 2]`` corners (TL, BL, BR, TR)."""
    eye_left = landmarks[36:42].mean(axis=0)  # [2]
    eye_right = landmarks[42:48].mean(axis=0)  # [2]
    mouth_avg = (landmarks[48] + landmarks[54]) / 2  # [2] the two mouth corners
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    # The square's x axis: the eye line, tilted by the eye-to-mouth direction turned a quarter; its half-size the
    # larger of 2× the eye distance and 1.8× the eye-to-mouth distance.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # x turned a quarter: the square's y axis
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])  # [4, 2]


def _padded(photo: "PIL.Image.Image", quad: np.ndarray):  # noqa: F821
    """The photo extended by reflection wherever the quad leaves it, the padding fading into a blur and the
    mean colour (so the mirror images do not read as a second face); returns the image and the shifted quad."""
    from PIL import Image, ImageFilter

    size = np.hypot(*(quad[3] - quad[0]))
    lo, hi = np.floor(quad.min(axis=0)), np.ceil(quad.max(axis=0))
    border = max(round(size * 0.1), 3)
    pad = np.maximum(np.concatenate([-lo, hi - np.array(photo.size)]) + border, 0).astype(int)  # left, top, right, bottom
    if not pad.any():
        return photo, quad
    arr = np.asarray(photo, dtype=np.float32)  # [H, W, 3]
    h, w = arr.shape[:2]
    arr = np.pad(arr, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    yy, xx = np.mgrid[: arr.shape[0], : arr.shape[1]].astype(np.float32)
    # distance into the padding, as a share of the pad on that side: 0 on the photo, 1 at the outer edge
    fade = np.maximum.reduce([
        (pad[0] - xx) / max(pad[0], 1), (xx - (pad[0] + w - 1)) / max(pad[2], 1),
        (pad[1] - yy) / max(pad[1], 1), (yy - (pad[1] + h - 1)) / max(pad[3], 1), np.zeros_like(xx)])
    fade = np.clip(fade, 0, 1)[..., None]  # [H', W', 1]
    blur_radius = float(max(size * 0.02, 1))
    blurred = np.asarray(Image.fromarray(arr.round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur_radius)), dtype=np.float32)
    arr = arr + (blurred - arr) * np.clip(fade * 3, 0, 1)  # the reflection dissolves into the blur
    arr = arr + (np.median(arr, axis=(0, 1)) - arr) * fade  # and the blur into the mean colour
    return Image.fromarray(np.clip(arr.round(), 0, 255).astype(np.uint8)), quad + pad[:2]


def _crop_quad(photo: "PIL.Image.Image", quad: np.ndarray, resolution: int) -> "PIL.Image.Image":  # noqa: F821
    from PIL import Image

    size = np.hypot(*(quad[3] - quad[0]))
    shrink = int(size // (2 * resolution))
    if shrink > 1:  # downscale first (antialiased) so the bilinear transform below never skips pixels
        photo = photo.reduce(shrink)
        quad = quad / shrink
    photo, quad = _padded(photo, quad)
    over = 2 * resolution  # transform at twice the size, then antialias down
    warped = photo.transform((over, over), Image.QUAD, data=tuple((quad + 0.5).flatten()), resample=Image.BILINEAR)
    return warped.resize((resolution, resolution), Image.LANCZOS)


def align_faces(image, *, resolution: int = 1024) -> list[AlignedFace]:
    """Every face in the photo cut the FFHQ way, largest first (``NoFaceError`` when there is none)."""
    if not isinstance(resolution, int) or not 8 <= resolution <= 4096:
        raise ValueError(f"resolution must be an integer from 8 to 4096, got {resolution!r}")
    photo = _as_rgb(image)
    faces = detect_faces(photo)
    if not faces:
        raise NoFaceError("no face was found in the image; for a picture that is already a cropped face, or not a "
                          "face at all, pass align='none'")
    out = []
    for box, landmarks in faces:
        quad = ffhq_quad(landmarks)
        out.append(AlignedFace(image=_crop_quad(photo, quad, resolution), quad=quad, landmarks=landmarks, source=photo, box=box))
    return out


def align_face(image, *, resolution: int = 1024) -> AlignedFace:
    """The largest face of the photo cut the FFHQ way (``align_faces`` for all of them)."""
    return align_faces(image, resolution=resolution)[0]


# --------------------------------------------------------------------------------------------------
# Back into the photo


def _square_to_quad(quad: np.ndarray, resolution: int) -> np.ndarray:
    """The affine map (2×3) from aligned-crop pixels to source pixels."""
    origin = quad[0]
    ax_x = (quad[3] - quad[0]) / resolution  # one crop pixel along x, in source pixels
    ax_y = (quad[1] - quad[0]) / resolution
    return np.array([[ax_x[0], ax_y[0], origin[0]], [ax_x[1], ax_y[1], origin[1]]])


def feather_mask(resolution: int, *, feather: float = 0.25) -> "PIL.Image.Image":  # noqa: F821
    """An ``L`` mask over the aligned crop: the head as the FFHQ recipe frames it (an ellipse around the centre,
    a little below it), 255 inside, fading to 0 over the outer ``feather`` of its radius (cosine). The crop's
    corners stay out, so the photo's own background and shoulders are kept."""
    from PIL import Image

    t = (np.arange(resolution) + 0.5) / resolution  # [R] pixel centres in units of R
    dx = (t[None, :] - 0.5) / 0.40  # [1, R]
    dy = (t[:, None] - 0.52) / 0.47  # [R, 1]
    radius = np.sqrt(dx**2 + dy**2)  # [R, R] 1 on the ellipse
    ramp = np.clip((1 - radius) / feather, 0, 1)
    return Image.fromarray(((0.5 - 0.5 * np.cos(np.pi * ramp)) * 255).round().astype(np.uint8))


def paste_back(aligned: AlignedFace, edited, *, feather: float = 0.25) -> "PIL.Image.Image":  # noqa: F821
    """``edited`` (a crop of the aligned face: PIL or ``[3, R, R]`` in [-1, 1], any size) warped back into the
    source photo through a feathered mask; pixels the mask does not reach are the photo's own, bit for bit."""
    from PIL import Image

    crop = _as_rgb(edited).resize((aligned.resolution, aligned.resolution), Image.LANCZOS)
    to_source = np.vstack([_square_to_quad(aligned.quad, aligned.resolution), [0, 0, 1]])
    to_crop = np.linalg.inv(to_source)[:2].flatten()  # PIL asks, per output (source) pixel, where to read in the crop
    size = aligned.source.size
    warped = crop.transform(size, Image.AFFINE, data=tuple(to_crop), resample=Image.BILINEAR)
    mask = feather_mask(aligned.resolution, feather=feather).transform(size, Image.AFFINE, data=tuple(to_crop),
                                                                       resample=Image.BILINEAR, fillcolor=0)
    return Image.composite(warped, aligned.source, mask)


# --------------------------------------------------------------------------------------------------
# Identity


SAME_PERSON_DISTANCE = 0.6  # dlib's rule for its descriptors: closer than this is the same person
DESCRIPTOR_MIN_SIDE = 256  # small images (a 64 px crop) are enlarged so the HOG detector sees the face


def face_descriptor(image, *, aligned: bool = False) -> np.ndarray:
    """dlib's 128-D descriptor of the image's largest face. No detected face raises ``NoFaceError``, unless
    ``aligned`` says the image is an FFHQ-style crop, whose face then is read from where the recipe puts it."""
    from PIL import Image

    dlib = _dlib()
    photo = _as_rgb(image)
    if min(photo.size) < DESCRIPTOR_MIN_SIDE:
        factor = DESCRIPTOR_MIN_SIDE / min(photo.size)
        photo = photo.resize((round(photo.width * factor), round(photo.height * factor)), Image.LANCZOS)
    pixels = np.asarray(photo)
    faces = _detector()(pixels, 1)
    if faces:
        rect = max(faces, key=lambda r: r.width() * r.height())
    elif aligned:  # the FFHQ crop puts the eyes at ~40% height and the mouth at ~70%: the face box around them
        w, h = photo.size
        rect = dlib.rectangle(round(w * 0.22), round(h * 0.25), round(w * 0.78), round(h * 0.85))
    else:
        raise NoFaceError("no face was found to compare")
    shape = _landmarker()(pixels, rect)
    chip = dlib.get_face_chip(pixels, shape, size=IDENTITY_CHIP)
    return np.array(_descriptor().compute_face_descriptor(chip), dtype=np.float64)  # [128]


def identity_similarity(a, b, *, aligned: bool = False) -> float:
    """Cosine similarity of dlib's face descriptors of two images (1: the same face). These descriptors are far from
    centred (unrelated faces, even noise, score 0.85-0.9), so for a verdict use ``identity_distance``."""
    da, db = face_descriptor(a, aligned=aligned), face_descriptor(b, aligned=aligned)
    return float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))


def identity_distance(a, b, *, aligned: bool = False) -> float:
    """Euclidean distance of dlib's face descriptors; below ``SAME_PERSON_DISTANCE`` (0.6) dlib calls it one person."""
    return float(np.linalg.norm(face_descriptor(a, aligned=aligned) - face_descriptor(b, aligned=aligned)))
