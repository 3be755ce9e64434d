"""The Gradio app through gradio_client, in process: each endpoint, bad inputs, and serving afterwards."""

import io
import sys

import pytest
import torch
from PIL import Image

from refinestyle import DomainTokens, RefineStyleModel, StyleGAN2Generator
from refinestyle.clip import CLIPGuide

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    sys.path.insert(0, str(REPO))
    import app as app_module

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
    target, w_img, refined, edited, metrics, files = client.predict(handle_file(path), "sketch", 1.0, 10, api_name="/invert")
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
    # Before, strength 1 and the suggested strength: three rows of four, the suggestion named in the status.
    assert "suggested strength" in status
    assert Image.open(preview).height * 4 == Image.open(preview).width * 3


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
