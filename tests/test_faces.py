"""Real photographs that ship inside packages (scikit-image's astronaut, matplotlib's Grace Hopper), aligned the
FFHQ way, pasted back and compared by identity. No downloads: dlib's models come with face_recognition_models."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

faces = pytest.importorskip("refinestyle.faces")
pytest.importorskip("dlib", reason="pip install 'refinestyle[faces]'")
skimage_data = pytest.importorskip("skimage.data")

R = 256
FRAME = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=np.float64)  # the crop's corners, in units of R


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def hopper():
    import matplotlib

    return Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")


@pytest.fixture(scope="module")
def aligned(astronaut):
    return faces.align_face(astronaut, resolution=R)


def _frame_error(image) -> float:
    """How far the FFHQ square of an aligned crop's own landmarks lies from the crop's frame, as a share of R."""
    (_, landmarks), *_ = faces.detect_faces(image)
    return float(np.abs(faces.ffhq_quad(landmarks) / image.size[0] - FRAME).max())


def _psnr(a, b) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255**2 / (d**2).mean()))


def test_aligned_crop_puts_eyes_and_mouth_where_the_recipe_does(aligned, hopper):
    assert aligned.image.size == (R, R) and aligned.quad.shape == (4, 2) and aligned.landmarks.shape == (68, 2)
    # Landmarks re-detected on the output give back the output's own frame: centre, size and angle within 2%.
    assert _frame_error(aligned.image) < 0.02
    assert _frame_error(faces.align_face(hopper, resolution=R).image) < 0.04
    # The square itself: its side is the larger of 4x the eye distance and 3.6x the eye-to-mouth distance.
    lm = aligned.landmarks
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_to_mouth = (lm[48] + lm[54]) / 2 - (eye_left + eye_right) / 2
    side = np.hypot(*(aligned.quad[3] - aligned.quad[0]))
    assert side == pytest.approx(max(4 * np.hypot(*(eye_right - eye_left)), 3.6 * np.hypot(*eye_to_mouth)), rel=1e-9)


@pytest.mark.parametrize("variant", ["rotated", "near-edge", "6000px", "256px"])
def test_the_same_face_aligns_to_the_same_frame(astronaut, aligned, variant):
    image = {
        "rotated": lambda: astronaut.rotate(25, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128)),
        "near-edge": lambda: astronaut.crop((150, 40, 512, 512)),  # the square leaves the photo: padded
        "6000px": lambda: astronaut.resize((6000, 6000), Image.LANCZOS),
        "256px": lambda: astronaut.resize((256, 256), Image.LANCZOS),
    }[variant]()
    again = faces.align_face(image, resolution=R)
    assert _frame_error(again.image) < 0.03
    # the face region (the padding differs where the photo was cut) matches the upright, uncut alignment
    box = (R // 4, R // 4, 3 * R // 4, 3 * R // 4)
    assert _psnr(again.image.crop(box), aligned.image.crop(box)) > (22 if variant == "256px" else 25)


def test_no_face_is_said_plainly():
    cat = Image.fromarray(skimage_data.chelsea())
    for image in (cat, Image.new("RGB", (300, 300), (90, 160, 200))):
        with pytest.raises(faces.NoFaceError, match="no face was found.*align='none'"):
            faces.align_face(image)


def test_paste_back_leaves_the_photo_outside_the_mask_bit_identical(aligned, astronaut):
    edited = Image.fromarray(255 - np.asarray(aligned.image))  # an edit that changes every pixel of the crop
    pasted = np.asarray(faces.paste_back(aligned, edited)).astype(np.int16)
    photo = np.asarray(astronaut).astype(np.int16)
    mask = np.asarray(faces.feather_mask(R).transform(
        astronaut.size, Image.AFFINE, data=tuple(np.linalg.inv(np.vstack([faces._square_to_quad(aligned.quad, R), [0, 0, 1]]))[:2].flatten()),
        resample=Image.BILINEAR, fillcolor=0))
    outside = mask == 0
    assert outside.mean() > 0.5 and (pasted[outside] == photo[outside]).all()
    inside = mask == 255
    assert inside.sum() > 1000 and np.abs(pasted[inside] - photo[inside]).mean() > 50
    # the crop pasted back unchanged restores the face region closely (two resamplings apart)
    restored = faces.paste_back(aligned, aligned.image)
    assert _psnr(np.asarray(restored)[inside], photo[inside]) > 28
    # a [3, R, R] tensor in [-1, 1] is accepted as the edit
    tensor = torch.from_numpy(np.asarray(aligned.image).copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert np.array_equal(np.asarray(faces.paste_back(aligned, tensor)), np.asarray(restored))


def test_identity_similarity_orders_same_shifted_other(astronaut, hopper, aligned):
    same = faces.identity_similarity(astronaut, astronaut)
    shifted = faces.identity_similarity(astronaut, astronaut.transform(astronaut.size, Image.AFFINE, (1, 0, 12, 0, 1, -8)))
    crop = faces.identity_similarity(astronaut, aligned.image)
    other = faces.identity_similarity(astronaut, hopper)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert 1.0 >= shifted > other and 1.0 >= crop > other
    # dlib's verdict: the same person below 0.6, another above
    assert faces.identity_distance(astronaut, aligned.image) < faces.SAME_PERSON_DISTANCE < faces.identity_distance(astronaut, hopper)
    noise = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    with pytest.raises(faces.NoFaceError, match="no face was found to compare"):
        faces.identity_similarity(astronaut, noise)


def test_several_faces_largest_first(astronaut, hopper):
    both = Image.new("RGB", (1100, 620), "white")
    both.paste(hopper.resize((460, 540)), (600, 40))
    both.paste(astronaut.resize((300, 300)), (40, 160))
    found = faces.align_faces(both, resolution=64)
    assert len(found) == 2
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in found]
    assert areas[0] > areas[1]
    assert faces.align_face(both, resolution=64).box == found[0].box
    assert found[0].box[0] > 550  # the larger face is Grace Hopper's, on the right


def test_a_face_turned_from_the_camera_is_found_by_the_cnn_detector():
    cameraman = Image.fromarray(skimage_data.camera()).convert("RGB")  # three-quarter profile: the HOG detector misses it
    assert len(faces._detector()(np.asarray(cameraman), 1)) == 0
    (box, landmarks), *_ = faces.detect_faces(cameraman)
    left, top, right, bottom = box
    assert 150 < left < right < 300 and 90 < top < bottom < 230  # his face, not the camera or the tripod
    assert faces.align_face(cameraman, resolution=64).image.size == (64, 64)
