"""RefineStyle Gradio app: invert a photo, adapt the generator from text on the fly, generate.

    python app.py                                   # the SynthFaces default model, offline
    python app.py --model org/repo --device cuda    # any RefineStyle Hub repo or folder

Named API endpoints (gradio_client): /invert, /adapt, /generate. The library never imports gradio;
this file adapts its callbacks to gr.Progress.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import zipfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from refinestyle import DomainTokens, RefineStyleModel  # noqa: E402
from refinestyle.cli import make_grid, parse_seeds, to_uint8  # noqa: E402
from refinestyle.evaluation import psnr, ssim  # noqa: E402
from refinestyle.images import ImageError, images_to_tensor  # noqa: E402

try:  # Hugging Face Spaces with ZeroGPU provide this; elsewhere the decorator is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host
    def gpu(fn):
        return fn

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = str(ROOT / "hub" / "refinestyle-synthfaces")
EXAMPLES = ROOT / "examples"
MAX_SEEDS = 64
USER_ERRORS = (ValueError, TypeError, KeyError, ImageError)


def to_pil(image: torch.Tensor):
    """``[3, H, W]`` in [-1, 1] → PIL image."""
    from PIL import Image

    return Image.fromarray(to_uint8(image[None])[0].cpu().numpy())


def grid(images: torch.Tensor, columns: int = 4):
    from PIL import Image

    return Image.fromarray(make_grid(images, columns=columns).numpy())


def upscale(pil, size: int = 256):
    from PIL import Image

    return pil.resize((size, size * pil.height // pil.width), Image.NEAREST) if pil.width < size else pil


def psnr_ssim(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    return psnr(a[None], b[None]).item(), ssim(a[None], b[None]).item()


def parse_mix(text: str) -> dict[str, float]:
    """'sketch: 0.6, zombie: 0.4' → {'sketch': 0.6, 'zombie': 0.4}; a bare name means weight 1."""
    mix = {}
    for part in str(text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            mix[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"domain weights must be numbers, as in 'sketch: 0.6, zombie: 0.4'; could not read {part!r}") from None
    return mix


class App:
    """The handlers, bound to one loaded model; per-user domains live in gr.State."""

    def __init__(self, model: RefineStyleModel, *, invert_steps: int = 150):
        self.model = model
        self.invert_steps = invert_steps

    def domain_choices(self, session: dict | None) -> list[str]:
        return ["(none)"] + sorted(self.model.domains) + sorted((session or {}))

    def resolve(self, name: str, session: dict | None):
        if not name or name == "(none)":
            return None
        if session and name in session:
            return session[name]
        if name in self.model.domains:
            return name
        raise ValueError(f"unknown domain {name!r}; choose one of {self.domain_choices(session)[1:]}")

    # --------------------------------------------------------------------------------------------
    @gpu
    def invert(self, image, domain_name: str = "(none)", strength: float = 1.0, steps: float = 0, session: dict | None = None,
               progress=gr.Progress()):
        """Image → W+ and refined reconstructions, metrics, the domain-applied result and downloads."""
        try:
            if image is None:
                raise ValueError("upload an image (PNG or JPEG) or pick an example first")
            strength = _number(strength, "strength", -2.0, 2.0)
            steps = int(_number(steps or self.invert_steps, "steps", 1, 1000))
            R = self.model.generator.config.resolution
            target = images_to_tensor([image], R)
            method = "encoder" if self.model.encoder is not None else "optimize"
            out = self.model.invert(target, method=method, steps=steps,
                                    callback=lambda s, t, st: progress((s, t), desc=f"inverting ({st.stage})"))
            dom = self.resolve(domain_name, session)
            edited = self.model.generate(ws=out.ws, tokens=out.tokens, domain={dom: 1.0}, strength=strength) \
                if dom is not None else out.images
            w_psnr, w_ssim = psnr_ssim(out.w_images[0], out.targets[0])
            r_psnr, r_ssim = psnr_ssim(out.images[0], out.targets[0])
            metrics = (f"| | PSNR (dB) | SSIM |\n|---|---|---|\n| W+ only | {w_psnr:.2f} | {w_ssim:.3f} |\n"
                       f"| RefineStyle | {r_psnr:.2f} | {r_ssim:.3f} |\n\n{out.method}: {out.seconds * 1000:.0f} ms")
            files = self._inversion_files(out, edited)
            # No domain: no fourth image (an identical one would share Gradio's content-addressed cache file).
            return (upscale(to_pil(out.targets[0])), upscale(to_pil(out.w_images[0])), upscale(to_pil(out.images[0])),
                    upscale(to_pil(edited[0])) if dom is not None else None, metrics, files)
        except USER_ERRORS as err:
            raise gr.Error(_message(err)) from None

    def _inversion_files(self, out, edited) -> list[str]:
        from safetensors.torch import save_file

        folder = Path(tempfile.mkdtemp(prefix="refinestyle-"))
        state = {"ws": out.ws.detach().cpu().contiguous()}
        state.update({f"tokens.{k}": v.detach().cpu().contiguous() for k, v in out.tokens.state_dict().items()})
        save_file(state, str(folder / "inversion.safetensors"), metadata={"format": "pt", "model": str(self.model.source)})
        to_pil(edited[0]).save(folder / "result.png")
        return [str(folder / "result.png"), str(folder / "inversion.safetensors")]

    # --------------------------------------------------------------------------------------------
    @gpu
    def adapt(self, source: str, target: str, reference=None, steps: float = 60, lr: float = 0, seed: float = 0,
              name: str = "", session: dict | None = None, progress=gr.Progress()):
        """Optimise a new domain; yields previews while it runs. Final output adds the domain to this session."""
        import pandas as pd

        session = dict(session or {})
        try:
            steps = int(_number(steps, "steps", 1, 1000))
            # 0 (or empty): model.adapt's automatic rate for these steps (0.01 for the default 60)
            lr = _number(lr or 0, "learning rate", 0, 0.5)
            if 0 < lr < 1e-4:
                raise ValueError(f"learning rate must be 0 (automatic) or between 0.0001 and 0.5, got {lr}")
            lr = lr or None
            seed = int(_number(seed, "seed", 0, 2**31 - 1))
            name = (name or "").strip() or f"custom-{len(session) + 1}"
            if not re.fullmatch(r"[\w-]{1,40}", name) or name in self.model.domains:
                raise ValueError(f"domain name {name!r}: use 1-40 letters, digits, '-' or '_' and not a built-in name")
            target_images = images_to_tensor([reference], self.model.generator.config.resolution) if reference is not None else None
            if target_images is None and not (target or "").strip():
                raise ValueError("type a target prompt (e.g. 'a pencil sketch of a face') or give a reference image")
            if not (source or "").strip():
                raise ValueError("type a source prompt, e.g. 'a photo of a face'")
        except USER_ERRORS as err:
            raise gr.Error(_message(err)) from None

        updates: list = []
        done = threading.Event()
        result: dict = {}

        def callback(step, total, state):
            updates.append(state)

        def run():
            try:
                result["domain"] = self.model.adapt(source, target if target_images is None else None, target_images=target_images,
                                                    steps=steps, lr=lr, seed=seed, callback=callback, preview_every=10)
            except USER_ERRORS as err:
                result["error"] = _message(err)
            except Exception as err:  # keep serving; report what happened
                result["error"] = f"adaptation failed: {type(err).__name__}: {err}"
            finally:
                done.set()

        threading.Thread(target=run, daemon=True).start()
        seen, last_preview = 0, None
        while True:
            finished = done.wait(0.5)
            if len(updates) > seen:
                seen = len(updates)
                states = updates[:seen]
                state = states[-1]
                progress((state.step, state.total), desc="adapting")
                previews = [s for s in states if s.preview is not None]
                if previews:
                    last_preview = grid(previews[-1].preview, columns=4)
                frame = pd.DataFrame({"step": [s.step for s in states], "loss": [s.loss for s in states]})
                yield last_preview, frame, f"step {state.step}/{state.total}, loss {state.loss:.4f}", session, gr.update(), None
            if finished:
                break
        if "error" in result:
            raise gr.Error(result["error"])
        dom = result["domain"]
        session[name] = dom
        history = dom.history
        frame = pd.DataFrame({"step": [s["step"] for s in history.states], "loss": [s["loss"] for s in history.states]})
        z = torch.randn(4, self.model.generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
        rows = [self.model.generate(z=z, truncation_psi=0.7), self.model.generate(z=z, truncation_psi=0.7, domain={dom: 1.0})]
        suggested = dom.config.suggested_strength
        if suggested is not None:
            rows.append(self.model.generate(z=z, truncation_psi=0.7, domain=dom, strength="suggested"))
        status = f"domain **{name}** ready ({dom.num_parameters():,} parameters)" + (
            f"; suggested strength **{suggested:g}** (bottom row: where the CLIPs see the style reached; 1 = as optimised, "
            "stronger)" if suggested is not None else "") + (
            f"; stopped early: {history.stopped_early}" if history.stopped_early else "")
        choices = self.domain_choices(session)
        yield (grid(torch.cat(rows), columns=4), frame, status, session,
               gr.update(choices=choices, value=name), self._domain_zip(dom, name))

    def _domain_zip(self, dom: DomainTokens, name: str) -> str:
        folder = Path(tempfile.mkdtemp(prefix="refinestyle-domain-"))
        dom.save_pretrained(folder / name)
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for f in (folder / name).iterdir():
                zf.write(f, f"{name}/{f.name}")
        return str(path)

    def push(self, name: str, repo_id: str, session: dict | None = None):
        try:
            if not os.environ.get("HF_TOKEN"):
                raise ValueError("pushing needs a Hugging Face token: set HF_TOKEN for this app")
            if not session or name not in session:
                raise ValueError("adapt a domain in this session first; built-in domains are already on the Hub")
            return f"pushed to {session[name].push_to_hub(repo_id)}"
        except USER_ERRORS as err:
            raise gr.Error(_message(err)) from None
        except OSError as err:
            raise gr.Error(f"push failed: {err}") from None

    # --------------------------------------------------------------------------------------------
    def generate(self, seeds: str = "0-7", truncation: float = 0.7, mix: str = "", strength: float = 1.0, session: dict | None = None):
        """Seeds → an image grid, with an optional domain mix such as 'sketch: 0.6, zombie: 0.4'."""
        try:
            seed_list = parse_seeds(seeds, max_count=MAX_SEEDS)
            psi = _number(truncation, "truncation", 0.0, 1.5)
            strength = _number(strength, "strength", -2.0, 2.0)
            weights = {}
            for name, w in parse_mix(mix).items():
                dom = self.resolve(name, session)
                if dom is not None:
                    weights[dom] = _number(w, f"weight of {name}", -2.0, 2.0)
            images = self.model.generate(seeds=seed_list, truncation_psi=psi, domain=weights or None, strength=strength)
            return upscale(grid(images, columns=min(8, len(seed_list))), 512)
        except USER_ERRORS as err:
            raise gr.Error(_message(err)) from None


class UploadImage(gr.Image):
    """An image input that hands the raw uploaded file to our loader (which explains bad files) instead of
    decoding it in Gradio first (whose errors name no fix)."""

    def preprocess(self, payload):
        return None if payload is None else payload.path

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # rendered by Gradio's own image front-end


def _number(value, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (lo <= v <= hi):
        raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


def _message(err: Exception) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def build_demo(model: RefineStyleModel, *, invert_steps: int = 150) -> gr.Blocks:
    app = App(model, invert_steps=invert_steps)
    examples = sorted(str(p) for p in EXAMPLES.glob("*.png")) if EXAMPLES.exists() else []
    res = model.generator.config.resolution
    with gr.Blocks(title="RefineStyle") as demo:
        session = gr.State({})
        gr.Markdown(f"# RefineStyle\nDynamic convolution refinement for StyleGAN2: invert, adapt from text, generate. "
                    f"Model: `{model.source or 'in memory'}` ({res} px"
                    f"{', encoder' if model.encoder is not None else ''}{', CLIP' if model.clip is not None else ''}).")
        with gr.Tab("Invert & edit"):
            with gr.Row():
                inp = UploadImage(type="filepath", label="input image", sources=["upload", "clipboard"], height=256, elem_id="inv-input")
                with gr.Column():
                    dom_inv = gr.Dropdown(app.domain_choices({}), value="(none)", label="apply a domain")
                    strength_inv = gr.Slider(-1, 2, value=1.0, step=0.05, label="domain strength")
                    steps_inv = gr.Slider(10, 500, value=invert_steps, step=10, label="optimisation steps (without encoder)")
                    run_inv = gr.Button("Invert", variant="primary")
            if examples:
                gr.Examples(examples, inputs=[inp], label="examples (renderer images, in and out of domain)")
            with gr.Row():
                o_target = gr.Image(label="input (cropped)", format="png", elem_id="inv-target")
                o_w = gr.Image(label="W+ reconstruction", format="png", elem_id="inv-w")
                o_ref = gr.Image(label="RefineStyle reconstruction", format="png", elem_id="inv-refined")
                o_edit = gr.Image(label="with domain", format="png", elem_id="inv-edited")
            metrics = gr.Markdown()
            files = gr.File(label="downloads (PNG, ws + tokens)", file_count="multiple")
            run_inv.click(app.invert, [inp, dom_inv, strength_inv, steps_inv, session],
                          [o_target, o_w, o_ref, o_edit, metrics, files], api_name="invert")
        with gr.Tab("Adapt from text"):
            with gr.Row():
                with gr.Column():
                    src = gr.Textbox("a photo of a face", label="source prompt")
                    tgt = gr.Textbox("a pencil sketch of a face", label="target prompt")
                    ref = UploadImage(type="filepath", label="or a reference image (replaces the target prompt)", height=160)
                    with gr.Row():
                        steps_ad = gr.Slider(5, 300, value=60, step=5, label="steps")
                        lr_ad = gr.Number(0, label="learning rate (0: automatic, by the steps)")
                        seed_ad = gr.Number(0, label="seed", precision=0)
                    name_ad = gr.Textbox("", label="domain name (optional)")
                    with gr.Row():
                        run_ad = gr.Button("Adapt", variant="primary")
                        cancel_ad = gr.Button("Cancel")
                with gr.Column():
                    preview = gr.Image(label="preview (before; after; at the suggested strength)", format="png")
                    loss_plot = gr.LinePlot(x="step", y="loss", label="loss")
                    status = gr.Markdown()
                    dom_file = gr.File(label="download the domain")
                    repo = gr.Textbox("", label="push to Hub repo (user/name; needs HF_TOKEN)")
                    push_btn = gr.Button("Push to Hub")
                    push_status = gr.Markdown()
        with gr.Tab("Generate"):
            with gr.Row():
                seeds = gr.Textbox("0-7", label="seeds")
                psi = gr.Slider(0, 1.2, value=0.7, step=0.05, label="truncation")
                mix = gr.Textbox("", label="domain mix, e.g. 'sketch: 0.6, zombie: 0.4'")
                strength_gen = gr.Slider(-1, 2, value=1.0, step=0.05, label="strength")
            run_gen = gr.Button("Generate", variant="primary")
            gallery = gr.Image(label="grid", format="png", elem_id="gen-grid")
            run_gen.click(app.generate, [seeds, psi, mix, strength_gen, session], gallery, api_name="generate")
        event = run_ad.click(app.adapt, [src, tgt, ref, steps_ad, lr_ad, seed_ad, name_ad, session],
                             [preview, loss_plot, status, session, dom_inv, dom_file], api_name="adapt")
        cancel_ad.click(None, None, None, cancels=[event])
        push_btn.click(app.push, [name_ad, repo, session], push_status, api_name=False)
    demo.queue(max_size=16, default_concurrency_limit=2)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RefineStyle Gradio app")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local folder (default: the SynthFaces model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--invert-steps", type=int, default=150)
    args = parser.parse_args(argv)
    model = RefineStyleModel.from_pretrained(args.model, device=args.device)
    build_demo(model, invert_steps=args.invert_steps).launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
