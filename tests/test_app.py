"""The Gradio app through gradio_client, in process: each endpoint, bad inputs, and serving afterwards."""

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from refinestyle import DomainTokens, RefineStyleModel, StyleGAN2Generator
from refinestyle.clip import CLIPGuide

from .conftest import REPO, load_app_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app_module = load_app_module()

    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2, num_tokens=4)
    clip = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())
    model = RefineStyleModel(generator=G, clip=clip)
    dom = DomainTokens.from_generator(G, num_tokens=4, seed=1)
    with torch.no_grad():
        for p in dom.p.values():
            p.normal_(generator=torch.Generator().manual_seed(3))
    model.add_domain(dom, name="sketch")
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    model = RefineStyleModel.from_pretrained(folder)
    demo = app_module.build_demo(model, invert_steps=10)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    from gradio_client import Client

    client = Client(demo.local_url, verbose=False)
    client.demo = demo  # the in-process app, for the tests that look behind the API
    yield client, tmp_path_factory.mktemp("files")
    demo.close()


def _file(client_dir, name, data: bytes) -> str:
    path = client_dir / name
    path.write_bytes(data)
    return str(path)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_generate_endpoint(served):
    client, _ = served
    out = client.predict("0-3", 0.7, "sketch: 0.5", 1.0, api_name="/generate")
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] >= 64
    plain = Image.open(client.predict("0-3", 0.7, "", 1.0, api_name="/generate"))
    assert img.tobytes() != plain.tobytes()


def test_invert_endpoint_with_domain(served):
    from gradio_client import handle_file

    client, d = served
    path = _file(d, "face.png", _png(Image.new("RGB", (48, 40), (200, 120, 90))))
    target, w_img, refined, edited, metrics, files, pasted = client.predict(handle_file(path), "sketch", 1.0, 10, api_name="/invert")
    assert pasted is None  # not a face model: nothing to paste back
    assert all(Image.open(p).format == "PNG" for p in (target, w_img, refined, edited))
    assert "PSNR" in metrics and "RefineStyle" in metrics
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert names == ["inversion.safetensors", "result.png"]


def test_adapt_endpoint_then_use_domain_in_same_session(served):
    client, _ = served
    job = client.submit("a photo of a face", "a sketch of a face", None, 5, 0, 0, "mine", api_name="/adapt")  # lr 0: automatic
    outputs = job.result()
    preview, _, status = outputs[0], outputs[1], outputs[2]
    assert "domain **mine** ready" in status
    assert Image.open(preview).format == "PNG"
    # Before, strength 1 and the suggested strength: three labelled rows of four, the suggestion named in the status.
    assert "suggested strength" in status
    sheet = Image.open(preview)
    from refinestyle.images import LABEL_PX, PREVIEW_FACE_PX
    assert sheet.height == 3 * PREVIEW_FACE_PX and sheet.width == LABEL_PX + 4 * PREVIEW_FACE_PX


@pytest.mark.parametrize("args,message", [
    (("7-3", 0.7, "", 1.0), "runs backwards"),
    (("0-100000", 0.7, "", 1.0), "at most 64 seeds"),
    (("0-3", 5.0, "", 1.0), "greater than maximum value 1.2"),
    (("0-3", 0.7, "zombie: 1", 1.0), "unknown domain 'zombie'"),
    (("0-3", 0.7, "sketch: lots", 1.0), "weights must be numbers"),
])
def test_bad_generate_requests_then_good_ones(served, args, message):
    client, _ = served
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")
    assert Image.open(client.predict("1", 0.7, "", 1.0, api_name="/generate")).format == "PNG"


def test_bad_uploads_are_explained(served):
    from gradio_client import handle_file

    client, d = served
    cases = {
        "notes.png": (b"this is not an image", "not an image"),
        "tiny.png": (_png(Image.new("RGB", (4, 4))), "only 4x4 px"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(_file(d, name, data)), "(none)", 1.0, 10, api_name="/invert")
    with pytest.raises(Exception, match="type a target prompt"):
        client.predict("a photo of a face", "", None, 5, 0.02, 0, "", api_name="/adapt")
    with pytest.raises(Exception, match=r"learning rate must be 0 \(automatic\) or between 0.0001 and 0.5"):
        client.predict("a photo of a face", "a sketch", None, 5, 0.00001, 0, "", api_name="/adapt")
    good = _file(d, "ok.png", _png(Image.new("RGBA", (32, 32), (0, 0, 255, 128))))
    assert "PSNR" in client.predict(handle_file(good), "(none)", 1.0, 10, api_name="/invert")[4]


def test_sessions_do_not_share_domains(served):
    from gradio_client import Client

    client, _ = served
    job = client.submit("a photo of a face", "a sketch of a face", None, 5, 0.02, 0, "private", api_name="/adapt")
    assert "domain **private** ready" in job.result()[2]
    assert Image.open(client.predict("0-1", 0.7, "private: 1", 1.0, api_name="/generate")).format == "PNG"  # the owner sees it
    other = Client(client.src, verbose=False)
    with pytest.raises(Exception, match="unknown domain 'private'"):
        other.predict("0-1", 0.7, "private: 1", 1.0, api_name="/generate")


# --------------------------------------------------------------------------------------------------
# A public Space: cancel that stops, visitor-scoped pushes, per-session files, errors without server details


class _Request:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def _handlers(client):
    return client.demo.app_handlers


def _adapt_threads() -> int:
    import threading

    return sum(t.name.startswith("adapt-") and t.is_alive() for t in threading.enumerate())


def _wait(predicate, timeout=60.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_cancel_button_stops_the_optimisation_and_says_cancelled(served):
    client, _ = served
    job = client.submit("a photo of a face", "a sketch of a face", None, 300, 0, 0, "long", api_name="/adapt")
    assert _wait(lambda: len(job.outputs()) >= 1), "no progress from the adaptation"
    _handlers(client).cancel(_Request(client.session_hash))
    outputs = job.result(timeout=60)
    assert outputs[2].startswith("**adaptation cancelled after") and "of 300 steps" in outputs[2]
    assert _wait(lambda: _adapt_threads() == 0, timeout=5)


def test_cancelled_api_job_stops_the_optimisation(served):
    client, _ = served
    job = client.submit("a photo of a face", "a sketch of a face", None, 300, 0, 0, "gone", api_name="/adapt")
    assert _wait(lambda: len(job.outputs()) >= 1), "no progress from the adaptation"
    assert _adapt_threads() == 1
    job.cancel()
    # The loop checks its stop signal before every step: it ends within one step (well under a second here).
    assert _wait(lambda: _adapt_threads() == 0, timeout=5), "the optimisation kept running after the cancel"


def test_closing_the_tab_stops_work_and_deletes_the_session_files(served):
    from gradio_client import handle_file

    client, d = served
    handlers = _handlers(client)
    path = _file(d, "face2.png", _png(Image.new("RGB", (40, 40), (90, 120, 200))))
    files = client.predict(handle_file(path), "(none)", 1.0, 10, api_name="/invert")[5]
    assert files
    folder = handlers.files_root / client.session_hash
    assert folder.is_dir() and any(folder.rglob("inversion.safetensors"))
    handlers.end_session(_Request(client.session_hash))
    assert not folder.exists()


def test_session_keeps_its_last_domains(served):
    app_module = load_app_module()

    client, _ = served
    handlers = _handlers(client)
    G = handlers.model.generator
    session = {}
    for i in range(app_module.MAX_SESSION_DOMAINS + 2):
        dom = DomainTokens.from_generator(G, num_tokens=1, seed=i)
        dom.history = type("History", (), {"states": [], "stopped_early": None})()
        status = handlers._finish_adapt(dom, None, f"d{i}", session, handlers.session_dir(None))[2]
    assert len(session) == app_module.MAX_SESSION_DOMAINS and "d0" not in session and "d1" not in session
    assert "d1 removed" in status


def test_push_uses_the_visitors_login_never_the_servers_token(served, monkeypatch):
    import gradio as gr

    client, _ = served
    handlers = _handlers(client)
    monkeypatch.setenv("HF_TOKEN", "server-secret")
    pushed = []
    monkeypatch.setattr(DomainTokens, "push_to_hub", lambda self, repo_id, *, token=None, **kw: pushed.append((repo_id, token)) or repo_id)
    session = {"mine": DomainTokens.from_generator(handlers.model.generator, num_tokens=1)}
    with pytest.raises(gr.Error, match="log in with your Hugging Face account"):
        handlers.push("mine", "owner/repo", session, None)
    assert pushed == []
    assert handlers.push("mine", "visitor/repo", session, gr.OAuthToken(token="visitor-token", scope="write-repos", expires_at=0))
    assert pushed == [("visitor/repo", "visitor-token")]
    assert handlers.push_button_state(None)["interactive"] is False
    handlers.allow_server_token = True  # the operator's explicit choice, for local use
    try:
        handlers.push("mine", "owner/repo", session, None)
    finally:
        handlers.allow_server_token = False
    assert pushed[-1] == ("owner/repo", "server-secret")


def test_errors_name_the_input_without_server_details(served, monkeypatch, caplog):
    from gradio_client import handle_file

    client, d = served
    caplog.set_level("INFO", logger="refinestyle.app")
    strip = _file(d, "strip.png", _png(Image.new("RGB", (4000, 20))))
    text = _file(d, "text.png", b"just text")
    for path, message in ((strip, "strip more than 4 times"), (text, "the uploaded file is not an image")):
        with pytest.raises(Exception, match=message) as info:
            client.predict(handle_file(path), "(none)", 1.0, 10, api_name="/invert")
        assert "/tmp" not in str(info.value) and "gradio" not in str(info.value).lower()
    for args, message in ((("99999999999999999999", 0.7, "", 1.0), "at most 4,294,967,295"),
                          (("0-1", 0.7, ":0.5", 1.0), "a domain name is missing")):
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/generate")
    handlers = _handlers(client)
    monkeypatch.setattr(handlers.model, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom at /srv/secret/x.py")))
    with pytest.raises(Exception, match=r"internal error [0-9a-f]{8}") as info:
        client.predict("0-1", 0.7, "", 1.0, api_name="/generate")
    assert "secret" not in str(info.value)
    ident = __import__("re").search(r"internal error ([0-9a-f]{8})", str(info.value)).group(1)
    record = next(r for r in caplog.records if ident in r.getMessage())
    assert record.exc_info and "boom at /srv/secret" in str(record.exc_info[1])
    assert any(r.getMessage().startswith("user error: ") for r in caplog.records)


def test_host_and_port_follow_gradios_environment(tmp_path):
    import os
    import socket
    import subprocess
    import urllib.request

    app_module = load_app_module()

    args = app_module.argparse.Namespace(host=None, port=None)
    assert app_module.launch_options(args)["server_name"] is None and app_module.launch_options(args)["server_port"] is None
    torch.manual_seed(0)
    RefineStyleModel(generator=StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8],
                                                  mapping_layers=2)).save_pretrained(tmp_path / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "REFINESTYLE_TEST_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(REPO / "app.py"), "--model", str(tmp_path / "model")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        # Both listen: the first on the port from the environment, the second on the next free one.
        for offset in (0, 1):
            def up(p=port + offset):
                try:
                    return urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=1).status == 200
                except OSError:
                    return False
            assert _wait(up, timeout=90), f"nothing listens on {port + offset}"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def face_model_client(tmp_path_factory):
    """A (random-weight) face model: model_index.json declares FFHQ alignment and a calibrated domain check."""
    pytest.importorskip("dlib", reason="pip install 'refinestyle[faces]'")
    from gradio_client import Client

    from refinestyle.inversion import DomainCheck

    app_module = load_app_module()
    torch.manual_seed(0)
    model = RefineStyleModel(generator=StyleGAN2Generator(z_dim=8, w_dim=16, resolution=32, channels=[16, 16, 8, 8],
                                                          mapping_layers=2, num_tokens=2))
    model.face_alignment = "ffhq"
    model.domain_check = DomainCheck(score="refined_psnr", threshold=30.0, method="optimize")  # random weights: all out
    folder = tmp_path_factory.mktemp("face-model")
    model.save_pretrained(folder)
    demo = app_module.build_demo(RefineStyleModel.from_pretrained(folder), invert_steps=10)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    yield Client(demo.local_url, verbose=False), tmp_path_factory.mktemp("photos")
    demo.close()


def test_face_model_aligns_pastes_back_and_says_out_of_domain(face_model_client):
    from gradio_client import handle_file
    from skimage import data

    client, d = face_model_client
    photo = Image.fromarray(data.astronaut())
    path = _file(d, "astronaut.png", _png(photo))
    target, _, refined, _, metrics, _, pasted = client.predict(handle_file(path), "(none)", 1.0, 10, api_name="/invert")
    assert Image.open(target).size[0] >= 32 and Image.open(pasted).size == photo.size
    assert "aligned the FFHQ way" in metrics and "Identity against your face" in metrics
    assert "Outside this model's domain" in metrics and "not a reconstruction of yours" in metrics
    # outside the feathered face region the photo comes back untouched
    corner = (slice(0, 10), slice(0, 10))
    assert (np.asarray(Image.open(pasted).convert("RGB"))[corner] == np.asarray(photo)[corner]).all()
    cat = _file(d, "cat.png", _png(Image.fromarray(data.chelsea())))
    with pytest.raises(Exception, match="no face was found in the photo"):
        client.predict(handle_file(cat), "(none)", 1.0, 10, api_name="/invert")


def test_adapt_refuses_prompts_the_guide_cannot_read(served):
    client, _ = served
    with pytest.raises(Exception, match=r"names no style this model's guide knows; use one of: photo, sketch"):
        client.predict("a photo of a face", "a face", None, 5, 0, 0, "", api_name="/adapt")
    with pytest.raises(Exception, match=r"does not know the words \['charcoal'\]"):
        client.predict("a photo of a face", "a charcoal sketch of a face", None, 5, 0, 0, "", api_name="/adapt")


def test_a_downloaded_domain_zip_loads_back_in_another_session(served, tmp_path):
    import zipfile

    from gradio_client import Client, handle_file

    client, _ = served
    outputs = client.submit("a photo of a face", "a sketch of a face", None, 5, 0, 0, "keep", api_name="/adapt").result()
    archive = outputs[-1]  # the domain zip (the session state is not part of the API's outputs)
    assert zipfile.ZipFile(archive).namelist()
    other = Client(client.src, verbose=False)
    status = other.predict(handle_file(archive), api_name="/load_domain")[0]
    assert status.startswith("domain **keep** loaded")
    assert Image.open(other.predict("0-1", 0.7, "keep: 1", 1.0, api_name="/generate")).format == "PNG"
    # hostile or wrong archives are refused with a reason
    cases = {"climb.zip": ({"keep/../../evil.json": b"{}"}, "one domain folder|exactly"),
             "extra.zip": ({"keep/config.json": b"{}", "keep/diffusion_pytorch_model.safetensors": b"", "keep/run.py": b""}, "exactly"),
             "two.zip": ({"a/config.json": b"{}", "b/config.json": b"{}"}, "one domain folder"),
             "big.zip": ({"keep/config.json": b"{}", "keep/diffusion_pytorch_model.safetensors": b"\0" * 25_000_000}, "more than 20 MB")}
    for name, (members, message) in cases.items():
        with zipfile.ZipFile(tmp_path / name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        with pytest.raises(Exception, match=message):
            other.predict(handle_file(str(tmp_path / name)), api_name="/load_domain")
    (tmp_path / "not.zip").write_bytes(b"hello")
    with pytest.raises(Exception, match="not a zip archive"):
        other.predict(handle_file(str(tmp_path / "not.zip")), api_name="/load_domain")


def test_generate_tab_lists_domains_with_weights(served):
    import pandas as pd

    client, _ = served
    handlers = _handlers(client)
    session = {"mine": DomainTokens.from_generator(handlers.model.generator, num_tokens=1)}
    table = handlers.domain_table(session)
    assert table == [["sketch", 0.0], ["mine", 0.0]]
    table[0][1] = 0.6
    kept = handlers.domain_table(session, pd.DataFrame(table, columns=["domain", "weight"]))
    assert kept == [["sketch", 0.6], ["mine", 0.0]]
    assert handlers.mix_from_table(pd.DataFrame([["sketch", 0.6], ["mine", 0], ["", 1]])) == "sketch: 0.6"
    with pytest.raises(ValueError, match="weight of mine must be a number"):
        handlers.mix_from_table([["mine", "lots"]])


def test_a_large_model_gets_a_lighter_workload_with_progress(tmp_path, monkeypatch):
    """Above 256 px on a CPU: Generate draws one face per progress update (the grid equals one batched call), and an
    adaptation runs at batch 2 with one augmented view, previews every 5 steps, from the app's own default steps.
    Up to 256 px the app keeps the SynthFaces recipe (model.adapt's batch 8 and 4 views)."""
    import asyncio

    app_module = load_app_module()
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=16, resolution=512, channels=[8] * 8, mapping_layers=2)
    clip = CLIPGuide.create_synthfaces(vocabulary="a photo sketch of face".split())
    app = app_module.App(RefineStyleModel(generator=G, clip=clip), files_root=tmp_path)
    small = app_module.App(RefineStyleModel(generator=StyleGAN2Generator(resolution=16, channels=[8, 8, 8], z_dim=8,
                                                                         w_dim=8, mapping_layers=1), clip=clip), files_root=tmp_path)
    ticks = []
    grid = app.generate("0-2", 0.7, "", 1.0, {}, progress=lambda value, desc=None: ticks.append(value))
    assert ticks == [(0, 3), (1, 3), (2, 3)]
    want = app_module.upscale(app_module.grid(app.model.generate(seeds=[0, 1, 2], truncation_psi=0.7), columns=3), 256 * 3)
    assert np.abs(np.asarray(grid, dtype=float) - np.asarray(want, dtype=float)).max() <= 1  # rounding of the batch paths

    seen = {}

    def fake_adapt(self, source, target, **kwargs):
        seen[self.generator.config.resolution] = kwargs
        raise ValueError("stop here")

    monkeypatch.setattr(RefineStyleModel, "adapt", fake_adapt)
    for each in (app, small):
        async def drain():
            with pytest.raises(Exception, match="stop here"):
                async for _ in each.adapt("a photo of a face", "a sketch of a face", None, 0, 0, 0, "", {}, None,
                                          progress=lambda *a, **k: None):
                    pass
        asyncio.run(drain())
    big_run, small_run = seen[512], seen[16]
    assert (big_run["steps"], big_run["batch"], big_run["augment_views"], big_run["preview_every"]) == (30, 2, 1, 5)
    assert (small_run["steps"], small_run["batch"], small_run["augment_views"], small_run["preview_every"]) == (60, 8, 4, 10)
    assert app.invert_steps == 50 and small.invert_steps == 150
    # Large faces in the preview rows: 256 px, reduced with a Lanczos filter (not nearest, which aliases).
    faces = app.model.generate(seeds=[0], truncation_psi=0.7)  # [1, 3, 512, 512]
    from PIL import Image as PILImage

    from refinestyle.images import LABEL_PX, labelled_rows, to_pil
    sheet = labelled_rows([("before", faces)])
    assert sheet.size == (LABEL_PX + 256, 256)
    want = to_pil(faces[0]).resize((256, 256), PILImage.LANCZOS)
    assert np.array_equal(np.asarray(sheet)[:, LABEL_PX:], np.asarray(want))
