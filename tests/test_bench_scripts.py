"""The benchmark scripts' own logic that the tables rest on (their numbers come from runs, not tests)."""

import json

import pytest

from .conftest import load_bench_script


def test_sweep_recipes_are_typed_by_adaptconfig_and_bad_ones_named():
    sweep = load_bench_script("adaptation_sweep")
    assert sweep.parse_recipe("defaults:") == ("defaults", {})
    name, overrides = sweep.parse_recipe("mix:lr=0.005,global_weight=1,augment_views=8,warmup_steps=None,lr_schedule=constant")
    assert name == "mix" and overrides == {"lr": 0.005, "global_weight": 1.0, "augment_views": 8, "warmup_steps": None,
                                           "lr_schedule": "constant"}
    assert isinstance(overrides["global_weight"], float) and isinstance(overrides["augment_views"], int)
    for text, message in [("nocolon", "write name:field=value"), ("x:colour=red", "not field=value with a field of AdaptConfig"),
                          ("x:steps=10", "set by the sweep itself"), ("x:lr=-1", "lr must be None"),
                          ("x:global_weight=lots", "is not a number")]:
        with pytest.raises(ValueError, match=message):
            sweep.parse_recipe(text)


def test_sweep_merge_joins_disjoint_seeds_and_refuses_mixed_settings(tmp_path, capsys):
    sweep = load_bench_script("adaptation_sweep")

    def run(seed, acc, psnr):
        q = {"step": 150, "seconds": 1.0, "psnr": psnr, "ssim": 0.5, "style_acc": acc, "content": 1.0}
        return {"seed": seed, "wall_s": 1.0, "curve": [q], "final": q}

    def write(name, seeds, style="sketch", recipes=None):
        recipes = recipes or {"a": {}}
        data = {"style": style, "steps": 150, "device": "cpu",
                "recipes": recipes, "runs": {r: [run(s, 0.95 if s % 2 else 0.5, 13.0) for s in seeds] for r in recipes}}
        (tmp_path / name).write_text(json.dumps(data))
        return tmp_path / name

    results, recipes = sweep.merge([write("w0.json", [0, 2]), write("w1.json", [1, 3])])
    assert sorted(r["seed"] for r in results["a"]) == [0, 1, 2, 3] and recipes == {"a": {}}
    sweep.print_table(results, recipes, style_target=0.9, psnr_floor=11.58)
    assert "| a | (defaults) | 4 | 2 of 4 | 13.00 | 0.72 (0.50-0.95) | 1.0 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="repeats seeds"):
        sweep.merge([tmp_path / "w0.json", write("w2.json", [2])])
    with pytest.raises(ValueError, match="differ from the first file"):
        sweep.merge([tmp_path / "w0.json", write("w3.json", [5], style="zombie")])
    with pytest.raises(ValueError, match="recipe 'a' is"):
        sweep.merge([tmp_path / "w0.json", write("w4.json", [7], recipes={"a": {"lr": 0.005}})])


def test_look_capacity_fits_tokens_to_the_renderer():
    import torch

    from refinestyle import StyleGAN2Generator
    from refinestyle.data.synthfaces import ATTRIBUTES, render, z_to_params

    from .conftest import tiny_config

    capacity = load_bench_script("look_capacity")
    torch.manual_seed(0)
    G = StyleGAN2Generator(**tiny_config(16, z_dim=len(ATTRIBUTES), num_tokens=2)).eval().requires_grad_(False)
    domain = capacity.fit(G, "zombie", k=2, steps=40, batch=8, lr=0.01, seed=0)
    z = torch.randn(16, len(ATTRIBUTES), generator=torch.Generator().manual_seed(99))  # faces the fit never drew
    truth = render(z_to_params(z), style="zombie", resolution=16)
    with torch.no_grad():
        before = (G.synthesis(G.mapping(z)) - truth).square().mean()
        after = (G.synthesis(G.mapping(z), tokens=domain.token_set()) - truth).square().mean()
    assert after < 0.8 * before  # the tokens learnt the style, not the training faces
    assert not any(p.requires_grad for p in domain.parameters())
