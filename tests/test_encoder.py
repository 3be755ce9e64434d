"""RefineStyleEncoder and its training script on tiny configs."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from PIL import Image

from refinestyle import RefineStyleModel, StyleGAN2Generator
from refinestyle.hub import HubError
from refinestyle.images import images_to_tensor
from refinestyle.models.encoder import RefineStyleEncoder, resolution_groups, w_index_resolution
from refinestyle.train import encoder as train_encoder

REPO = Path(__file__).resolve().parents[1]
TINY_ENCODER = dict(base_channels=8, d_model=16, num_heads=2, num_blocks=1, w_head_channels=8)
TINY_ARGS = ["--batch", "4", "--base-channels", "8", "--d-model", "16", "--num-heads", "2", "--num-blocks", "1",
             "--w-head-channels", "8", "--lpips-weight", "0", "--no-progress", "--log-every", "1", "--eval-every", "1000"]


def tiny_generator(seed: int = 0, channels=(16, 16, 8)) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=list(channels), mapping_layers=2, num_tokens=4)
    with torch.no_grad():  # a w_avg that is the real mean of mapping outputs
        G.mapping.w_avg.copy_(G.mapping.w(torch.randn(2000, 8)).mean(0))
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.fixture(scope="module")
def generator_dir(G, tmp_path_factory):
    return G.save_pretrained(tmp_path_factory.mktemp("generator") / "gen")


def images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def perturbed(enc: RefineStyleEncoder, seed: int = 1) -> RefineStyleEncoder:
    """Give every parameter (zero-initialised heads included) random values, as training would."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.05)
    return enc


# ----------------------------------------------------------------------------------------------
# The model


def test_output_shapes_groups_and_gains(G):
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    out = enc(images(3))
    assert out.ws.shape == (3, G.num_ws, 16) and out.reconstruction is None
    assert list(out.tokens.layers) == list(G.refinable_layers())
    for name, (o, i, k) in G.refinable_layers().items():
        t = out.tokens.layers[name]
        assert t.p.shape == (3, 4, o) and t.q.shape == (3, 4, i * k * k) and t.gain.dim() == 0
        assert t.gain.item() == pytest.approx(G.kernel_scale(name))
    G.check_tokens(out.tokens, batch_size=3)
    # Untrained W+ heads start at the mean w (here close to w_avg, the mean of other samples).
    assert torch.equal(out.ws, enc.w_mean.expand(3, G.num_ws, -1))
    assert torch.allclose(enc.w_mean, G.mapping.w_avg, atol=0.1) and torch.equal(enc.w_avg, G.mapping.w_avg)
    # Groups: contiguous, near-equal thirds of the block resolutions; every w index maps to a block.
    assert resolution_groups(16) == {4: "coarse", 8: "medium", 16: "fine"}
    assert resolution_groups(64) == {4: "coarse", 8: "coarse", 16: "medium", 32: "medium", 64: "fine"}
    assert [g for r, g in sorted(resolution_groups(1024).items())].count("fine") == 3
    assert [w_index_resolution(j, 64) for j in range(10)] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 64]
    assert set(enc.token_groups) == {"coarse", "medium", "fine"}
    # A W+-only (stage-one) encoder and a single-w encoder.
    ws, tokens = RefineStyleEncoder.from_generator(G, token_branch=False, **TINY_ENCODER).invert(images(2))
    assert ws.shape == (2, G.num_ws, 16) and tokens.layers == {}
    ws1 = perturbed(RefineStyleEncoder.from_generator(G, w_plus=False, **TINY_ENCODER))(images(2)).ws
    assert torch.equal(ws1, ws1[:, :1].expand_as(ws1))


def test_untrained_token_branch_is_exact_noop(G):
    for token_input in ("image", "image+reconstruction"):
        enc = RefineStyleEncoder.from_generator(G, token_input=token_input, **TINY_ENCODER)
        with torch.no_grad():  # train the W+ part a little (random), leave the P heads at zero
            for module in enc.w_plus_modules():
                for p in module.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
        for n in (1, 3):  # both kernel paths (materialised for one image, low-rank for a batch)
            ws, tokens = enc.invert(images(n, seed=n), generator=G)
            assert any(t.q.abs().sum() > 0 for t in tokens.layers.values())
            assert torch.equal(G.synthesis(ws, tokens=tokens), G.synthesis(ws))


def test_trained_tokens_change_the_image(G):
    enc = perturbed(RefineStyleEncoder.from_generator(G, **TINY_ENCODER))
    ws, tokens = enc.invert(images(2), generator=G)
    assert (G.synthesis(ws, tokens=tokens) - G.synthesis(ws)).abs().max() > 1e-3


def test_save_load_round_trip_is_exact(G, tmp_path):
    for token_input in ("image", "image+reconstruction"):
        enc = perturbed(RefineStyleEncoder.from_generator(G, token_input=token_input, **TINY_ENCODER)).eval()
        enc.save_pretrained(tmp_path / token_input)
        loaded = RefineStyleEncoder.from_pretrained(tmp_path / token_input)
        assert loaded.layers == enc.layers
        a, b = enc(images(2), generator=G), loaded(images(2), generator=G)
        assert torch.equal(a.ws, b.ws)
        for name in enc.layers:
            for x, y in zip(vars(a.tokens.layers[name]).values(), vars(b.tokens.layers[name]).values()):
                assert torch.equal(x, y)
    # fp16 storage loads back as float32 and still fits its generator.
    enc.save_pretrained(tmp_path / "half", dtype=torch.float16)
    half = RefineStyleEncoder.from_pretrained(tmp_path / "half")
    assert half.w_avg.dtype == torch.float32
    half.check_generator(G)
    assert (half(images(2), generator=G).ws - enc(images(2), generator=G).ws).abs().max() < 1e-2


def test_layer_order_does_not_depend_on_config_dict_order(G):
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    cfg = dict(enc.config)
    for key in ("layer_shapes", "layer_resolutions", "layer_w_index", "layer_gains"):
        cfg[key] = dict(reversed(list(cfg[key].items())))
    other = RefineStyleEncoder(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    assert other.layers == enc.layers == list(G.refinable_layers())
    assert set(other.state_dict()) == set(enc.state_dict())


def test_encoder_fits_a_generator_whose_mapping_alone_changed(G, tmp_path):
    """An encoder records its generator's synthesis digest: a copy with a retrained mapping (w_avg moved far past
    the 1% check) still fits it, a copy with one synthesis weight changed does not; the digest is the same for the
    fp16 file loaded in fp32 and ignores the mapping. An encoder without a digest (older folders) keeps the w_avg check."""
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    assert enc.config.synthesis_digest == G.synthesis_digest()
    G.save_pretrained(tmp_path / "g", dtype=torch.float16)
    half_then_full = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    assert half_then_full.synthesis_digest() == StyleGAN2Generator.from_pretrained(tmp_path / "g", torch_dtype=torch.float16).synthesis_digest()
    remapped = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    with torch.no_grad():
        for p in remapped.mapping.parameters():
            p.mul_(1.5)
        remapped.mapping.w_avg.mul_(1.5)  # as a retrained mapping re-estimates it
    assert remapped.synthesis_digest() == half_then_full.synthesis_digest()
    stamped = RefineStyleEncoder.from_generator(half_then_full, **TINY_ENCODER)
    stamped.check_generator(remapped)
    stamped.check_generator(remapped)  # the digest again (cached): still fits ...
    with torch.no_grad():
        next(remapped.synthesis.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="a different w_avg and synthesis"):  # ... until a synthesis weight changes in place
        stamped.check_generator(remapped)
    retouched = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    with torch.no_grad():
        retouched.mapping.w_avg.mul_(1.5)
        next(retouched.synthesis.parameters()).add_(0.01)
    assert retouched.synthesis_digest() != half_then_full.synthesis_digest()
    with pytest.raises(ValueError, match="a different w_avg and synthesis"):
        stamped.check_generator(retouched)
    unstamped = RefineStyleEncoder(**{**{k: v for k, v in stamped.config.items() if not k.startswith("_")}, "synthesis_digest": None})
    unstamped.load_state_dict(stamped.state_dict())
    with pytest.raises(ValueError, match="a different w_avg"):
        unstamped.check_generator(remapped)


def test_mismatched_generator_gives_clear_errors(G, tmp_path):
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    narrow = tiny_generator(channels=(16, 8, 8))
    with pytest.raises(ValueError, match="does not fit the generator.*shape"):
        enc.invert(images(1), generator=narrow)
    bigger = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=32, channels=[16, 16, 8, 8], mapping_layers=2)
    with pytest.raises(ValueError, match="resolution 32"):
        enc.check_generator(bigger)
    other_weights = tiny_generator(seed=1)  # same architecture, another W space
    with pytest.raises(ValueError, match="w_avg"):
        enc.check_generator(other_weights)
    with pytest.raises(TypeError, match="StyleGAN2Generator"):
        enc.check_generator(enc)
    two_stage = RefineStyleEncoder.from_generator(G, token_input="image+reconstruction", **TINY_ENCODER)
    assert (enc.kind, two_stage.kind) == ("one-stage", "two-stage")
    with pytest.raises(ValueError, match="generator=G"):
        two_stage(images(1))
    # The pipeline refuses an encoder made for another generator.
    RefineStyleModel(generator=G).save_pretrained(tmp_path / "repo")
    RefineStyleEncoder.from_generator(narrow, **TINY_ENCODER).save_pretrained(tmp_path / "repo" / "encoder")
    index = json.loads((tmp_path / "repo" / "model_index.json").read_text())
    index["encoder"] = ["refinestyle", "RefineStyleEncoder"]
    (tmp_path / "repo" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="does not fit"):
        RefineStyleModel.from_pretrained(tmp_path / "repo")
    with pytest.raises(ValueError, match="from_generator"):
        RefineStyleEncoder()


def test_bad_inputs_give_clear_errors(G):
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    with pytest.raises(TypeError, match="uint8|float"):
        enc(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="images_to_tensor"):
        enc(Image.new("RGB", (16, 16)))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        enc(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        enc(torch.zeros(0, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        enc(torch.full((1, 3, 16, 16), 255.0))
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="square"):
        enc(torch.zeros(1, 3, 16, 24))
    # Other sizes are resized (antialiased); a single [3, H, W] image and float64 are accepted.
    big = torch.nn.functional.interpolate(images(2), size=(48, 48), mode="bilinear", align_corners=False)
    assert enc(big).ws.shape == (2, G.num_ws, 16)
    assert enc(images(1)[0].double()).ws.shape == (1, G.num_ws, 16)
    with pytest.raises(ValueError, match="positive integer"):
        RefineStyleEncoder.from_generator(G, num_blocks=0)
    with pytest.raises(ValueError, match="backbone"):
        RefineStyleEncoder.from_generator(G, backbone="vit")
    with pytest.raises(ValueError, match="token_input"):
        RefineStyleEncoder.from_generator(G, token_input="reconstruction")


def test_resnet_backbone_and_optional_imagenet_weights(G, monkeypatch):
    enc = RefineStyleEncoder.from_generator(G, backbone="resnet18", input_resolution=64, d_model=16, num_heads=2, num_blocks=1)
    ws, tokens = enc.invert(images(1), generator=G)  # 16 px images, resized to the 64 px backbone input
    assert ws.shape == (1, G.num_ws, 16) and torch.equal(G.synthesis(ws, tokens=tokens), G.synthesis(ws))
    with pytest.raises(ValueError, match="at least 64"):
        RefineStyleEncoder.from_generator(G, backbone="resnet18")
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(HubError, match="pretrained_backbone=False"):
        RefineStyleEncoder.from_generator(G, backbone="resnet18", pretrained_backbone=True, input_resolution=64,
                                          d_model=16, num_heads=2, num_blocks=1)


def test_pipeline_saves_loads_and_inverts_with_the_encoder(G, tmp_path):
    enc = perturbed(RefineStyleEncoder.from_generator(G, token_input="image+reconstruction", **TINY_ENCODER))
    model = RefineStyleModel(generator=G)
    model.encoder = enc
    model.save_pretrained(tmp_path / "repo")
    index = json.loads((tmp_path / "repo" / "model_index.json").read_text())
    assert index["encoder"] == ["refinestyle", "RefineStyleEncoder"]
    loaded = RefineStyleModel.from_pretrained(tmp_path / "repo")
    assert isinstance(loaded.encoder, RefineStyleEncoder)
    pil = [Image.fromarray((torch.rand(20, 24, 3) * 255).byte().numpy()) for _ in range(2)]
    out = loaded.invert(pil, method="encoder")
    assert out.method == "encoder" and out.images.shape == (2, 3, 16, 16) and out.ws.shape == (2, G.num_ws, 16)
    assert torch.equal(out.w_images, loaded.generate(ws=out.ws))
    assert torch.equal(out.images, loaded.generate(ws=out.ws, tokens=out.tokens))
    ws, _ = enc.invert(out.targets, generator=G)
    assert torch.equal(ws, out.ws)


# ----------------------------------------------------------------------------------------------
# Training


def test_training_steps_reduce_the_loss_on_a_fixed_batch(G):
    cfg = train_encoder.EncoderTrainConfig(generator="", out="", batch=8, lpips_weight=0.0)
    enc = RefineStyleEncoder.from_generator(G, **TINY_ENCODER)
    dist_info = train_encoder.Distributed(rank=0, world_size=1, device=torch.device("cpu"))
    batch = train_encoder.step_batch(0, cfg=cfg, G=G, rows=train_encoder.step_rows(8, dist_info), image_files=None,
                                     device=torch.device("cpu"))
    assert batch.images.shape == (8, 3, 16, 16) and batch.has_ws.tolist() == [False] * 4 + [True] * 4
    opt = torch.optim.Adam(enc.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        per_image, terms = train_encoder.step_loss(enc(batch.images, generator=G), batch, G=G, cfg=cfg,
                                                   w_mean=enc.w_mean, lpips_model=None)
        loss = per_image.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert {"refined_l2", "refined_ssim", "w_l2", "w_ssim", "w_supervision", "w_reg", "token_reg"} <= set(terms)
    assert losses[-1] < 0.8 * losses[0], losses
    # The token branch learned something: the refined image now differs from the W+-only one.
    out = enc(batch.images, generator=G)
    assert (G.synthesis(out.ws, tokens=out.tokens) - G.synthesis(out.ws)).abs().max() > 1e-4


def test_batches_depend_only_on_seed_and_step(G):
    cfg = train_encoder.EncoderTrainConfig(generator="", out="", batch=4)
    one = train_encoder.Distributed(rank=0, world_size=1, device=torch.device("cpu"))
    full = train_encoder.step_batch(7, cfg=cfg, G=G, rows=train_encoder.step_rows(4, one), image_files=None, device=one.device)
    again = train_encoder.step_batch(7, cfg=cfg, G=G, rows=train_encoder.step_rows(4, one), image_files=None, device=one.device)
    assert torch.equal(full.images, again.images)
    # Two processes' rows together are the one-process batch.
    halves = [train_encoder.step_batch(7, cfg=cfg, G=G, image_files=None, device=one.device,
                                       rows=train_encoder.step_rows(4, train_encoder.Distributed(r, 2, one.device)))
              for r in range(2)]
    # Renders are bit-identical; generator samples agree to float tolerance (G's kernel path depends on the batch size).
    assert torch.equal(halves[0].images[0], full.images[0]) and torch.equal(halves[1].images[0], full.images[1])
    assert torch.allclose(halves[0].images[1], full.images[2], atol=1e-5)
    assert torch.allclose(halves[1].images[1], full.images[3], atol=1e-5)
    assert torch.allclose(torch.cat([halves[0].true_ws[1:], halves[1].true_ws[1:]]), full.true_ws[2:])


def test_photometric_augment_is_a_colour_transform_of_the_renders(G):
    one = train_encoder.Distributed(rank=0, world_size=1, device=torch.device("cpu"))
    plain_cfg = train_encoder.EncoderTrainConfig(generator="", out="", batch=8)
    cfg = train_encoder.EncoderTrainConfig(generator="", out="", batch=8, photometric_augment=1.0)
    rows = train_encoder.step_rows(8, one)
    plain = train_encoder.step_batch(3, cfg=plain_cfg, G=G, rows=rows, image_files=None, device=one.device)
    jittered = train_encoder.step_batch(3, cfg=cfg, G=G, rows=rows, image_files=None, device=one.device)
    # Generator samples untouched; every render changed, within range.
    assert torch.allclose(jittered.images[4:], plain.images[4:], atol=1e-6)
    assert all(not torch.equal(jittered.images[i], plain.images[i]) for i in range(4))
    assert jittered.images.abs().max() <= 1
    # The same rows in a two-process split get the same transforms.
    halves = [train_encoder.step_batch(3, cfg=cfg, G=G, image_files=None, device=one.device,
                                       rows=train_encoder.step_rows(8, train_encoder.Distributed(r, 2, one.device)))
              for r in range(2)]
    assert torch.equal(halves[0].images[1], jittered.images[2]) and torch.equal(halves[1].images[0], jittered.images[1])
    # Closed form: saturation 0, contrast 1, no brightness and no tint give the Rec. 601 grey image.
    x = plain.images[:2]
    grey = (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114).expand(-1, 3, -1, -1)  # written out: the truth
    draws = iter([torch.zeros(2, 1, 1, 1), torch.full((2, 1, 1, 1), 0.5), torch.full((2, 1, 1, 1), 0.5)])  # sat, contrast, brightness
    with mock.patch.object(torch, "rand", side_effect=lambda *a, **k: next(draws)), \
            mock.patch.object(torch, "randn", side_effect=lambda *a, **k: torch.zeros(2, 3, 1, 1)):  # log tint
        assert torch.allclose(train_encoder.photometric_jitter(x, torch.Generator()), grey, atol=1e-6)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def test_resume_equals_uninterrupted_run(generator_dir, tmp_path):
    base = ["--generator", str(generator_dir), "--steps", "6", *TINY_ARGS]
    train_encoder.main(base + ["--out", str(tmp_path / "straight")])
    train_encoder.main(base + ["--out", str(tmp_path / "split"), "--stop-after", "3"])
    assert _state(tmp_path / "split")["step"] == 3
    train_encoder.main(base + ["--out", str(tmp_path / "split"), "--resume"])
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "split")
    assert a["step"] == b["step"] == 6
    assert a["encoder"].keys() == b["encoder"].keys()
    assert all(torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])
    assert all(torch.equal(x["exp_avg"], y["exp_avg"]) for x, y in zip(a["opt"]["state"].values(), b["opt"]["state"].values()))
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    # A checkpoint written before a config field existed resumes as if it had the field's default.
    ckpt = _state(tmp_path / "split")
    del ckpt["run_config"]["photometric_augment"]
    torch.save(ckpt, tmp_path / "split" / "checkpoint.pt")
    train_encoder.main(base + ["--out", str(tmp_path / "split"), "--resume"])  # no "settings differ" error
    # Changing what the run is made of refuses to resume.
    with pytest.raises(ValueError, match="settings differ"):
        train_encoder.main(base + ["--out", str(tmp_path / "split"), "--resume", "--lr", "0.1"])


def test_two_stage_training_keeps_the_stage_one_w_plus_part(G, generator_dir, tmp_path):
    base = ["--generator", str(generator_dir), "--steps", "2", *TINY_ARGS]
    train_encoder.main(base + ["--out", str(tmp_path / "s1"), "--mode", "stage-one", "--export", str(tmp_path / "s1" / "export"),
                               "--export-dtype", "float32"])
    stage_one = RefineStyleEncoder.from_pretrained(tmp_path / "s1" / "export")
    assert not stage_one.config.token_branch and "stage-one" in stage_one.config.description
    with pytest.raises(ValueError, match="--stage-one"):
        train_encoder.main(base + ["--out", str(tmp_path / "s2"), "--mode", "two-stage"])
    train_encoder.main(base + ["--out", str(tmp_path / "s2"), "--mode", "two-stage", "--stage-one", str(tmp_path / "s1" / "export"),
                               "--export", str(tmp_path / "s2" / "export"), "--export-dtype", "float32"])
    two = RefineStyleEncoder.from_pretrained(tmp_path / "s2" / "export")
    assert two.config.token_input == "image+reconstruction"
    frozen = stage_one.w_plus_state_dict()
    assert all(torch.equal(frozen[k], v) for k, v in two.w_plus_state_dict().items())
    out = two(images(2), generator=G)
    assert torch.equal(out.ws, stage_one(images(2)).ws) and out.reconstruction.shape == (2, 3, 16, 16)
    log = [json.loads(line) for line in (tmp_path / "s2" / "log.jsonl").read_text().splitlines()]
    assert log[0]["trainable_parameters"] < log[0]["encoder_parameters"]
    # --init-from a two-stage encoder keeps the W+ part of the new --stage-one (another seed here).
    train_encoder.main(base + ["--out", str(tmp_path / "s1b"), "--mode", "stage-one", "--seed", "1", "--export",
                               str(tmp_path / "s1b" / "export"), "--export-dtype", "float32"])
    train_encoder.main(base + ["--out", str(tmp_path / "s2b"), "--mode", "two-stage", "--stage-one", str(tmp_path / "s1b" / "export"),
                               "--init-from", str(tmp_path / "s2" / "export"), "--stop-after", "0",
                               "--export", str(tmp_path / "s2b" / "export"), "--export-dtype", "float32"])
    restarted = RefineStyleEncoder.from_pretrained(tmp_path / "s2b" / "export").state_dict()
    new_w_plus = RefineStyleEncoder.from_pretrained(tmp_path / "s1b" / "export").w_plus_state_dict()
    assert all(torch.equal(restarted[k], v) for k, v in new_w_plus.items())
    old = two.state_dict()
    assert all(torch.equal(restarted[k], old[k]) for k in old if k not in new_w_plus)
    # --mode stage-one --init-from a two-stage encoder starts from its W+ part: the stage one it was built on.
    train_encoder.main(base + ["--out", str(tmp_path / "s1c"), "--mode", "stage-one", "--init-from", str(tmp_path / "s2" / "export"),
                               "--stop-after", "0", "--export", str(tmp_path / "s1c" / "export"), "--export-dtype", "float32"])
    recovered = RefineStyleEncoder.from_pretrained(tmp_path / "s1c" / "export")
    assert not recovered.config.token_branch
    assert recovered.w_plus_state_dict().keys() == frozen.keys()
    assert all(torch.equal(recovered.w_plus_state_dict()[k], v) for k, v in frozen.items())


def test_init_from_an_encoder_of_an_earlier_generator(generator_dir, tmp_path):
    base = ["--steps", "2", *TINY_ARGS, "--export-dtype", "float32"]
    train_encoder.main(["--generator", str(generator_dir), "--out", str(tmp_path / "old"), *base,
                        "--export", str(tmp_path / "old" / "export")])
    old = RefineStyleEncoder.from_pretrained(tmp_path / "old" / "export")
    # The same architecture with other weights (as a generator trained further would be).
    new_G = tiny_generator(seed=7)
    new_dir = new_G.save_pretrained(tmp_path / "new-generator")
    with pytest.raises(ValueError, match="another generator"):
        old.check_generator(new_G)
    train_encoder.main(["--generator", str(new_dir), "--out", str(tmp_path / "new"), *base, "--stop-after", "0",
                        "--init-from", str(tmp_path / "old" / "export"), "--export", str(tmp_path / "new" / "export")])
    started = RefineStyleEncoder.from_pretrained(tmp_path / "new" / "export")
    started.check_generator(new_G)  # w_avg and w_mean are the new generator's ...
    fresh = RefineStyleEncoder.from_generator(new_G, token_branch=True, token_input="image", **TINY_ENCODER)
    assert torch.equal(started.w_mean, fresh.w_mean)
    old_state, new_state = old.state_dict(), started.state_dict()
    assert all(torch.equal(old_state[k], v) for k, v in new_state.items() if k not in ("w_avg", "w_mean"))  # ... the rest is old
    with pytest.raises(ValueError, match="architecture differs in .*d_model"):
        train_encoder.main(["--generator", str(new_dir), "--out", str(tmp_path / "bad"), *base, "--d-model", "32",
                            "--init-from", str(tmp_path / "old" / "export")])


def test_image_folder_training(generator_dir, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i, mode in enumerate(["RGB", "RGBA", "L", "P", "RGB", "RGB", "CMYK", "RGB"]):
        arr = (torch.rand(20 + i, 24, 3, generator=rng) * 255).byte().numpy()
        Image.fromarray(arr).convert(mode).save(folder / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
    (folder / "notes.txt").write_text("not an image")
    run = tmp_path / "run"
    train_encoder.main(["--generator", str(generator_dir), "--steps", "2", "--images", str(folder), "--out", str(run), *TINY_ARGS])
    assert _state(run)["step"] == 2
    files = train_encoder.list_images(str(folder))
    assert len(files) == 8
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        assert torch.equal(train_encoder.load_image_files(files[:3], 16, pool), images_to_tensor(files[:3], 16))
    with pytest.raises(FileNotFoundError, match="no image files"):
        train_encoder.list_images(str(tmp_path / "run"))


def test_lpips_is_skipped_when_unavailable(monkeypatch):
    lpips = pytest.importorskip("lpips")

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(lpips, "LPIPS", offline)
    model, note = train_encoder.load_lpips(0.8, torch.device("cpu"))
    assert model is None and "unavailable" in note
    assert train_encoder.load_lpips(0.0, torch.device("cpu")) == (None, "LPIPS off (weight 0)")


@pytest.mark.slow
def test_ddp_two_cpu_processes(generator_dir, tmp_path):
    args = ["--generator", str(generator_dir), "--steps", "2", "--threads", "1", *TINY_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "refinestyle.train.encoder", *args, "--out", str(tmp_path / "ddp")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _state(tmp_path / "ddp")["step"] == 2
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2
    # Same global batch and loss as one process.
    train_encoder.main(args + ["--out", str(tmp_path / "single")])
    single = [json.loads(line) for line in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    assert log[1]["step"] == single[1]["step"] == 1
    assert log[1]["loss"] == pytest.approx(single[1]["loss"], rel=1e-5)


def test_cascade_commands_are_valid_for_the_training_clis():
    # hub/cascade.sh (dry run) prints every command it would run; the encoder rounds must parse with the real
    # CLI (a renamed flag or a two-stage run without --stage-one would only fail an hour into a cascade).
    printed = subprocess.run(["bash", str(REPO / "hub" / "cascade.sh")], env={**os.environ, "TAG": "t1", "SEED": "3", "DRY_RUN": "1"},
                             capture_output=True, text=True, check=True).stdout.splitlines()
    encoder_runs = [shlex.split(line[2:].split("  > ")[0]) for line in printed if "refinestyle.train.encoder" in line]
    modes = []
    for argv in encoder_runs:
        cfg = train_encoder.parse_args(argv[argv.index("refinestyle.train.encoder") + 1:])
        modes.append(cfg.mode)
        assert cfg.out.startswith("runs/t1-") and cfg.export == f"{cfg.out}/export"
        assert (cfg.seed, cfg.photometric_augment) == ((3, 0.5) if cfg.mode != "stage-one" else (0, 0.0))
    assert sorted(modes) == ["one-stage", "stage-one", "two-stage"]
    assembled = next(line for line in printed if "--parts encoders" in line)
    assert "--encoder-runs t1-enc-one-stage t1-enc-two-stage" in assembled
    without = subprocess.run(["bash", str(REPO / "hub" / "cascade.sh")], env={**os.environ, "TAG": "t1", "DRY_RUN": "1"},
                             capture_output=True, text=True)
    assert without.returncode != 0 and "set SEED" in without.stderr
