"""The refinestyle CLI: convert then generate, and clear errors for bad input."""

import json

import pytest
from PIL import Image

from refinestyle.cli import main, parse_seeds


def test_convert_then_generate(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["convert", str(fixtures_dir / "nvlabs-tiny-32.state_dict.pt"), str(out)]) == 0
    assert json.loads((out / "model_index.json").read_text())["generator"][1] == "StyleGAN2Generator"
    card = (out / "README.md").read_text()
    assert "parity check" in card and "resolution 32" in card
    assert main(["generate", "--model", str(out), "--seeds", "0-5", "--truncation", "0.7", "--columns", "3",
                 "--out", str(tmp_path / "grid.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "grid.png").size == (3 * 32, 2 * 32)
    # The same grid straight from the checkpoint file.
    assert main(["generate", "--model", str(fixtures_dir / "rosinality-tiny-32.pt"), "--seeds", "0-5", "--truncation", "0.7",
                 "--columns", "3", "--out", str(tmp_path / "grid2.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "grid.png").tobytes() == Image.open(tmp_path / "grid2.png").tobytes()


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    assert main(["convert", str(tmp_path / "bad.pt"), str(tmp_path / "o")]) == 2
    assert "is a text file, not a StyleGAN2 checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--model", "x", "--seeds", "7-3"])
    assert "seeds must look like" in capsys.readouterr().err
    assert parse_seeds("0-3,9") == [0, 1, 2, 3, 9]
