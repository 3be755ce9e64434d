"""Half precision (bfloat16, float16) synthesis on the CPU: images close to float32 at config-f widths, both kernel
paths, with a domain residual, a zero residual still a no-op, and the two cases that used to fail (float16 returning
all zeros at 512 channels with styles near 4; a token cancelling most of a channel on the low-rank path)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from refinestyle import StyleGAN2Generator
from refinestyle.models.refinement import modulated_conv2d

from .conftest import load_bench_script, tiny_config

bench = load_bench_script("precision")
psnr = bench.psnr  # over [-1, 1]-clamped images, data range 2
HALF = [torch.bfloat16, torch.float16]


def _cpu_half_missing(dtype: torch.dtype) -> str | None:
    """Why ``dtype`` cannot run StyleGAN2's ops on this torch's CPU, or None when it can."""
    x = torch.zeros(1, 2, 4, 4, dtype=dtype)
    try:
        F.conv2d(x, torch.zeros(2, 1, 3, 3, dtype=dtype), padding=1, groups=2)
        F.conv_transpose2d(x, torch.zeros(2, 1, 3, 3, dtype=dtype), stride=2, groups=2)
        torch.bmm(x[0], x[0])
    except (RuntimeError, NotImplementedError) as err:
        return f"torch {torch.__version__} has no {dtype} convolution on the CPU ({err})"
    return None


def _skip_if_unsupported(dtype: torch.dtype) -> None:
    reason = _cpu_half_missing(dtype)
    if reason:
        pytest.skip(reason)


def _cast(G, dtype):
    return torch.nn.Module.to(copy.deepcopy(G), dtype=dtype)  # as from_pretrained(torch_dtype=...) casts


@pytest.fixture(scope="module")
def generator_256():
    """Config-f widths at 256 px (512 channels up to 64 px), random weights, conv styles near 4, in-range images."""
    return bench.precision_generator(256)


@pytest.fixture(scope="module")
def ws_256(generator_256):
    with torch.no_grad():
        return generator_256.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(0)))  # [2, 14, 512]


@pytest.fixture(scope="module")
def reference_256(generator_256, ws_256):
    with torch.no_grad():
        return generator_256.synthesis(ws_256, path="materialized")  # [2, 3, 256, 256], float32


def test_bf16_from_pretrained_draws_the_fp32_images(generator_256, ws_256, reference_256, tmp_path):
    """``from_pretrained(torch_dtype=torch.bfloat16)``: bfloat16 weights and activations, images at ≥ 30 dB."""
    assert float((reference_256.abs() > 1).float().mean()) < 0.2  # mostly inside [-1, 1]: the PSNR is not flattered
    generator_256.save_pretrained(tmp_path / "g")
    G = StyleGAN2Generator.from_pretrained(tmp_path / "g", torch_dtype=torch.bfloat16)
    assert G.synthesis.b64.conv1.weight.dtype == torch.bfloat16
    with torch.no_grad():
        img = G.synthesis(ws_256.to(torch.bfloat16))  # auto path: lowrank for a batch
        z = torch.randn(2, 512, generator=torch.Generator().manual_seed(1))
        end_to_end = G(z.to(torch.bfloat16))  # the mapping in bfloat16 too
        end_to_end_ref = generator_256(z)
    assert img.dtype == torch.bfloat16 and img.isfinite().all()
    assert psnr(img, reference_256) >= 30
    assert psnr(end_to_end, end_to_end_ref) >= 30


@pytest.mark.parametrize("path", ["materialized", "lowrank"])
def test_fp16_synthesis_on_cpu(generator_256, ws_256, reference_256, path):
    """Styles near 4 at 512 channels: ``Σ s²·W0²`` ≈ 7e4 overflowed float16 and every pixel came out 0."""
    _skip_if_unsupported(torch.float16)
    G = _cast(generator_256, torch.float16)
    with torch.no_grad():
        img = G.synthesis(ws_256.half(), path=path)
    assert img.isfinite().all() and img.abs().amax() > 0.1
    assert psnr(img, reference_256) >= 30


@pytest.fixture(scope="module")
def domain_256(generator_256, ws_256):
    tokens = bench.domain_tokens(generator_256, num_tokens=8)  # shared, rank 8, P at the layers' kernel scale
    with torch.no_grad():
        return tokens, generator_256.synthesis(ws_256, tokens=tokens, path="materialized")  # float32


@pytest.mark.parametrize("path", ["materialized", "lowrank"])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_half_paths_with_a_domain_residual(generator_256, ws_256, reference_256, domain_256, dtype, path):
    """A shared (domain) token set that moves the image by far more than 30 dB's worth; both paths in half ≥ 30 dB."""
    _skip_if_unsupported(dtype)
    tokens, want = domain_256
    with torch.no_grad():
        G = _cast(generator_256, dtype)
        img = G.synthesis(ws_256.to(dtype), tokens=tokens.to(dtype=dtype), path=path)
    assert psnr(want, reference_256) < 25  # the residual really changes the image
    assert img.isfinite().all()
    assert psnr(img, want) >= 30


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_half_per_image_and_domain_tokens_mixed(dtype):
    """Per-image tokens plus a weighted domain (the grouped side branch) in half, against float32, tiny config."""
    _skip_if_unsupported(dtype)
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(32, refine_torgb=True)).eval()
    g = torch.Generator().manual_seed(2)
    ws = G.mapping(torch.randn(3, 32, generator=g)).detach()
    per_image = G.init_tokens(batch_size=3, num_tokens=4, generator=g, layers=list(G.refinable_layers(include_torgb=True)))
    shared = G.init_tokens(num_tokens=4, generator=g)
    for t in list(per_image.layers.values()) + list(shared.layers.values()):
        t.p.copy_(torch.randn(t.p.shape, generator=g) * 0.5)
    tokens = [per_image, (shared, 0.7)]
    with torch.no_grad():
        want = G.synthesis(ws, tokens=tokens, path="materialized")
        Gh = _cast(G, dtype)
        half_tokens = [per_image.to(dtype=dtype), (shared.to(dtype=dtype), 0.7)]
        for path in ("materialized", "lowrank"):
            img = Gh.synthesis(ws.to(dtype), tokens=half_tokens, path=path)
            assert psnr(img, want) >= 30, path


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_zero_residual_is_a_no_op_in_half(dtype, batch):
    _skip_if_unsupported(dtype)
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(32, refine_torgb=True)).eval()
    ws = G.mapping(torch.randn(batch, 32)).detach().to(dtype)
    Gh = _cast(G, dtype)
    per_image = G.init_tokens(batch_size=batch, num_tokens=8).to(dtype=dtype)
    shared = G.init_tokens(num_tokens=4).to(dtype=dtype)
    with torch.no_grad():
        for path in ("auto", "lowrank", "materialized"):
            plain = Gh.synthesis(ws, path=path)
            for tokens in (per_image, shared, [per_image, (shared, 0.7)]):
                assert torch.equal(Gh.synthesis(ws, tokens=tokens, path=path), plain), path


def _layer_512(*, n=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 512, size, size, generator=g)  # [N, I, H, W]
    weight = torch.randn(512, 512, 3, 3, generator=g)  # [O, I, k, k]
    styles = 4 + 0.5 * torch.randn(n, 512, generator=g)  # [N, I], near 4
    return x, weight, styles, g


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("path", ["materialized", "lowrank"])
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.5e-2)], ids=["fp16", "bf16"])
def test_512_channels_styles_near_4_are_not_zero(dtype, tol, path, up):
    """The issue's case: float16 returned all zeros through both kernel paths; now within rounding of float64."""
    _skip_if_unsupported(dtype)
    x, weight, styles, _ = _layer_512()
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    resample = torch.outer(f, f) / 64  # [4, 4], sum 1
    want = modulated_conv2d(x.double(), weight.double(), styles.double(), up=up, resample_filter=resample.double(),
                            path="materialized")
    got = modulated_conv2d(x.to(dtype), weight.to(dtype), styles.to(dtype), up=up, resample_filter=resample,
                           path=path).double()
    assert got.isfinite().all() and got.abs().amax() > 0.5
    assert float((got - want).norm() / want.norm()) < tol


def _cancelling_tokens(weight, styles, eps, g):
    """Rank 2 per-image tokens: token 0 removes ``1 - eps`` of output channel 0's kernel ``s⊙W0[0]`` in every sample
    (``‖Wd[0]‖² = eps²·‖s⊙W0[0]‖²``); token 1 is a small random residual on every channel."""
    n, o = styles.shape[0], weight.shape[0]
    p = torch.zeros(n, 2, o)  # [N, R, O]
    q = torch.randn(n, 2, weight[0].numel(), generator=g) * 0.1  # [N, R, I*k*k]
    q[:, 0] = (weight[0][None] * styles[:, :, None, None]).reshape(n, -1)
    p[:, 0, 0] = -(1 - eps)
    p[:, 1] = 0.01 * torch.randn(n, o, generator=g)
    return p, q


@pytest.mark.parametrize("eps", [1e-2, 1e-3])
def test_cancelling_token_both_paths_agree_in_fp32(eps):
    """The closed-form demodulation ``Σ s²‖W0‖² + 2·Σ P⟨W0, s⊙Q⟩ + Pᵀ(QQᵀ)P`` cancels here; it left the low-rank
    path 9 % (ε = 1e-3) off before it was accumulated in float64. Both paths: the cancelled channel to 3e-3.

    What remains on the low-rank path is the float32 rounding of its two convolutions, whose outputs cancel to ε of
    their size: about ``2⁻²⁴·√(I·k²)/ε`` ≈ 4e-3 at worst for ε = 1e-3 (measured 4e-4 to 1.4e-3, by CPU)."""
    x, weight, styles, g = _layer_512()
    p, q = _cancelling_tokens(weight, styles, eps, g)
    want = modulated_conv2d(x.double(), weight.double(), styles.double(), residual_p=p.double(), residual_q=q.double(),
                            path="materialized")[:, 0]  # [N, H, W]
    out = {path: modulated_conv2d(x, weight, styles, residual_p=p, residual_q=q, path=path) for path in ("materialized", "lowrank")}
    mat, low = out["materialized"][:, 0].double(), out["lowrank"][:, 0].double()
    assert float((low - mat).norm() / mat.norm()) < 3e-3
    assert float((low - want).norm() / want.norm()) < 3e-3
    assert float((mat - want).norm() / want.norm()) < 1e-4
    rest = out["lowrank"][:, 1:].double()
    assert float((rest - out["materialized"][:, 1:]).norm() / rest.norm()) < 1e-5  # the other channels untouched


@pytest.mark.parametrize("dtype", [torch.float32] + HALF, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("eps", [1e-2, 0.0])
def test_cancelling_token_stays_finite_and_sized_like_the_materialised_path(dtype, eps):
    """In half a cancelled channel is rounding noise on both paths; the low-rank one must not turn it into a negative
    norm (NaN) or a huge gain: its output has the materialised one's size. ``eps = 0`` cancels the channel exactly."""
    _skip_if_unsupported(dtype)
    x, weight, styles, g = _layer_512()
    p, q = _cancelling_tokens(weight, styles, eps, g)
    out = {path: modulated_conv2d(x.to(dtype), weight.to(dtype), styles.to(dtype), residual_p=p.to(dtype),
                                  residual_q=q.to(dtype), path=path).double() for path in ("materialized", "lowrank")}
    assert out["lowrank"].isfinite().all() and out["materialized"].isfinite().all()
    ratio = float(out["lowrank"][:, 0].norm() / out["materialized"][:, 0].norm())
    assert 0.5 < ratio < 2, ratio


def test_bf16_at_1024_px():
    """Full config-f at 1024 px in bfloat16 (about 3 s on one CPU thread): ≥ 30 dB against float32."""
    G = bench.precision_generator(1024)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)))
        want = G.synthesis(ws)
        img = _cast(G, torch.bfloat16).synthesis(ws.to(torch.bfloat16))
    assert img.shape == (1, 3, 1024, 1024) and img.isfinite().all()
    assert psnr(img, want) >= 30


def test_half_convolutions_without_native_cpu_support_run_in_float32(monkeypatch):
    """A CPU without AVX-512 BF16/FP16 runs torch's half convolutions through a reference loop hundreds of times slower
    than float32; there each convolution runs in float32 and rounds back, so its result is exactly the float32
    convolution rounded to the half dtype. Where the CPU has them, half convolutions stay half."""
    from refinestyle.models import refinement

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 6, generator=g).bfloat16()  # [N, I, H, W]
    w = torch.randn(8, 8, 3, 3, generator=g).bfloat16()  # [O, I, k, k]
    monkeypatch.setattr(refinement, "cpu_has_native", lambda dtype: dtype == torch.float32)
    assert refinement.conv_dtype(x) == torch.float32 and refinement.conv_dtype(x.float()) == torch.float32
    got = refinement._conv(x, w, up=False, groups=1)
    assert got.dtype == torch.bfloat16 and torch.equal(got, F.conv2d(x.float(), w.float(), padding=1).bfloat16())
    up = refinement._conv(x, w, up=True, groups=1)
    assert up.dtype == torch.bfloat16 and torch.equal(up, F.conv_transpose2d(x.float(), w.float().transpose(0, 1), stride=2).bfloat16())
    monkeypatch.setattr(refinement, "cpu_has_native", lambda dtype: True)
    assert refinement.conv_dtype(x) == torch.bfloat16
