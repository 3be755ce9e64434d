"""RefineStyle Gradio app: invert a photo, adapt the generator from text on the fly, generate.

    python app.py                                   # the SynthFaces default model, offline
    python app.py --model org/repo --device cuda    # any RefineStyle Hub repo or folder

Named API endpoints (gradio_client): /invert, /adapt, /generate. The library never imports gradio;
this file adapts its callbacks to gr.Progress.

Built to run as a public Space: pushes use the visitor's own Hugging Face login (never the server's
token unless the operator passes --allow-server-token), Cancel (or a cancelled API job, or a closed
tab) stops an adaptation within one step, each session's files are deleted when it ends, adaptations
run at most --max-adaptations at a time (the rest wait in the queue), and visitors see one sentence
per error, never a server path or a traceback (those go to the log, under an id).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import html
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from refinestyle import Cancelled, DomainTokens, RefineStyleModel  # noqa: E402
from refinestyle.clip import WordTokenizer  # noqa: E402
from refinestyle.evaluation import psnr, ssim  # noqa: E402
from refinestyle.hub import HubError  # noqa: E402
from refinestyle.images import ImageError, images_to_tensor, labelled_rows, make_grid, parse_seeds, to_pil  # noqa: E402
from refinestyle.options import MAX_TRUNCATION  # noqa: E402

try:  # Hugging Face Spaces with ZeroGPU provide this; elsewhere the decorator is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host
    def gpu(fn):
        return fn

log = logging.getLogger("refinestyle.app")
ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = str(ROOT / "hub" / "refinestyle-synthfaces")
EXAMPLES = ROOT / "examples"
MAX_SEEDS = 64
MAX_SESSION_DOMAINS = 8  # adapted domains kept per visitor (a few KB each, plus their optimiser history)
SESSION_TTL_S = 3 * 3600  # a visitor's domains are dropped after this long without use
USER_ERRORS = (ValueError, TypeError, KeyError, ImageError, HubError)


@dataclass(frozen=True)
class Workload:
    """What the app asks of the model by default, scaled to its size so that a 2-core CPU answers in minutes."""

    adapt_steps: int
    adapt_batch: int
    augment_views: int
    preview_every: int  # adaptation steps between previews
    invert_steps: int  # optimisation inversion (models without an encoder)
    seeds: str  # the Generate tab's default
    generate_chunk: int  # images drawn between progress updates
    result_faces: int  # faces in the before / after rows shown when an adaptation ends


def workload_for(resolution: int, device: str) -> Workload:
    """The SynthFaces recipe up to 256 px and on a GPU; above 256 px on a CPU, the load cut to what 2 cores do in
    minutes. There a step draws and back-propagates the blocks up to 256 px only (the guides read that skip image),
    and each image drawn at full size costs seconds (bench/full_size.py), so the batch is 2 with one augmented
    view, previews come every 5 steps, Generate draws 4 faces, one per progress update, and the result rows show 2
    faces (six full-size images, about 30 s at 1024 px)."""
    if resolution <= 256 or device != "cpu":
        return Workload(adapt_steps=60, adapt_batch=8, augment_views=4, preview_every=10, invert_steps=150,
                        seeds="0-7", generate_chunk=MAX_SEEDS, result_faces=4)
    return Workload(adapt_steps=30, adapt_batch=2, augment_views=1, preview_every=5, invert_steps=50,
                    seeds="0-3", generate_chunk=1, result_faces=2)


PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}[\\/]?")  # an absolute path inside a message


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
        if not name.strip():
            raise ValueError(f"a domain name is missing before {part!r}; write it as 'sketch: 0.6'")
        try:
            mix[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"domain weights must be numbers, as in 'sketch: 0.6, zombie: 0.4'; could not read {part!r}") from None
    return mix


def model_label(model: RefineStyleModel) -> str:
    """What the header calls the model: a repo id as given, a local folder by its name only."""
    source = model.source or "in memory"
    return Path(source).name if Path(source).exists() else source


def public_message(err: Exception, *, uploads=()) -> str:
    """One sentence for a visitor: no server paths (an upload is 'the uploaded file'), HTML-escaped."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    for path in uploads:
        if path:
            text = text.replace(str(path), "the uploaded file")
    text = PATH_RE.sub("<a server path>", text)
    return html.escape(text.strip().splitlines()[0] if text.strip() else type(err).__name__, quote=False)


def as_gradio_error(err: Exception, *, uploads=()) -> gr.Error:
    """User errors: their one sentence, one log line. Anything else: an id for the visitor, the traceback in the log."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        message = public_message(err, uploads=uploads)
        log.info("user error: %s", message)
        return gr.Error(message, print_exception=False)
    ident = uuid.uuid4().hex[:8]
    log.error("internal error %s", ident, exc_info=err)
    return gr.Error(f"internal error {ident}; the server log has the details", print_exception=False)


def release_freed_memory() -> None:
    """Hand freed heap back to the OS. glibc keeps what a thread freed in that thread's arena, and every adaptation
    runs in a thread of its own: without this the app grew by ~200 MB per adaptation (to 2 GB after eight)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def session_key(request: Optional[gr.Request]) -> str:
    """The visitor's session id, safe as a folder name."""
    raw = getattr(request, "session_hash", None) or "anonymous"
    return re.sub(r"[^\w-]", "_", str(raw))[:64]


class App:
    """The handlers, bound to one loaded model; per-visitor domains live in gr.State, files in a per-session folder."""

    def __init__(self, model: RefineStyleModel, *, invert_steps: Optional[int] = None, allow_server_token: bool = False,
                 oauth: Optional[bool] = None, files_root: Optional[Path] = None):
        self.model = model
        self.workload = workload_for(model.generator.config.resolution, model.device.type)
        self.invert_steps = invert_steps or self.workload.invert_steps
        self.allow_server_token = allow_server_token
        # A Space (SPACE_ID set) has real Hugging Face OAuth; elsewhere Gradio could only mock it.
        self.oauth = bool(os.environ.get("SPACE_ID")) if oauth is None else oauth
        self.files_root = Path(files_root or tempfile.mkdtemp(prefix="refinestyle-app-"))
        self._queued: dict[str, threading.Event] = {}  # made by the Adapt button, before the job leaves the queue
        self._running: dict[str, threading.Event] = {}

    def session_dir(self, request: Optional[gr.Request]) -> Path:
        folder = self.files_root / session_key(request) / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        return folder

    def end_session(self, request: gr.Request):
        """The visitor left (tab closed or reloaded): stop their adaptation, delete their files."""
        key = session_key(request)
        for table in (self._queued, self._running):
            event = table.pop(key, None)
            if event is not None:
                event.set()
        shutil.rmtree(self.files_root / key, ignore_errors=True)

    def style_words(self) -> Optional[list[str]]:
        """The style words the model's guides all know (None: open-vocabulary guides, any text). Named open_clip
        guides read any text, so only the stored ones count, and nothing is loaded here."""
        known = [set(words) for words in (clip.style_words() for clip in self.model.stored_guides) if words is not None]
        return sorted(set.intersection(*known)) if known else None

    def domain_table(self, session: dict | None = None, current=None):
        """Every domain the visitor can use (built-in, then their own), each with a weight; weights already set stay."""
        kept = {}
        if current is not None:
            rows = current.values.tolist() if hasattr(current, "values") else list(current)
            kept = {str(r[0]): r[1] for r in rows if len(r) >= 2}
        return [[name, kept.get(name, 0.0)] for name in self.domain_choices(session)[1:]]

    @staticmethod
    def mix_from_table(table) -> str:
        """The table's non-zero weights as the mix text ``/generate`` takes ('sketch: 0.6, zombie: 0.4')."""
        rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
        parts = []
        for row in rows:
            if len(row) < 2 or not str(row[0]).strip():
                continue
            weight = _number(row[1] if row[1] not in (None, "") else 0, f"weight of {row[0]}", -2.0, 2.0)
            if weight:
                parts.append(f"{str(row[0]).strip()}: {weight:g}")
        return ", ".join(parts)

    def domain_choices(self, session: dict | None) -> list[str]:
        return ["(none)"] + sorted(self.model.domains) + sorted((session or {}))

    def resolve(self, name: str, session: dict | None):
        if not name or name == "(none)":
            return None
        # Names only (load=False): what visitors type must never make the server read files or download repos.
        return self.model.resolve_domain(name, session=session, load=False)

    # --------------------------------------------------------------------------------------------
    @gpu
    def invert(self, image, domain_name: str = "(none)", strength: float = 1.0, steps: float = 0, session: dict | None = None,
               request: gr.Request = None, progress=gr.Progress()):
        """Image → W+ and refined reconstructions, metrics with an in/out-of-domain word, the domain-applied result,
        for face models the edit pasted back into the photo, and downloads."""
        try:
            if image is None:
                raise ValueError("upload an image (PNG or JPEG) or pick an example first")
            strength = _number(strength, "strength", -2.0, 2.0)
            steps = int(_number(steps or self.invert_steps, "steps", 1, 1000))
            method = "encoder" if self.model.encoder is not None else "optimize"
            out, alignment_note = self._invert_photo(image, method=method, steps=steps, progress=progress)
            dom = self.resolve(domain_name, session)
            edited = self.model.generate(ws=out.ws, tokens=out.tokens, domain={dom: 1.0}, strength=strength) \
                if dom is not None else out.images
            pasted = None
            if out.aligned is not None:
                from refinestyle.faces import paste_back

                pasted = paste_back(out.aligned[0], edited[0])
            metrics = self._inversion_report(out, edited if dom is not None else None, alignment_note)
            files = self._inversion_files(out, edited, self.session_dir(request))
            # No domain: no fourth image (an identical one would share Gradio's content-addressed cache file).
            return (upscale(to_pil(out.targets[0])), upscale(to_pil(out.w_images[0])), upscale(to_pil(out.images[0])),
                    upscale(to_pil(edited[0])) if dom is not None else None, metrics, files, pasted)
        except Exception as err:
            raise as_gradio_error(err, uploads=[image]) from None

    def _invert_photo(self, image, *, method: str, steps: int, progress):
        """Invert as the model declares (aligned the FFHQ way for face models); a face model without the faces
        extra falls back to a centre crop and says so."""
        from refinestyle.faces import FacesUnavailableError, NoFaceError

        started = time.perf_counter()

        def report(step, total, state):
            left = (time.perf_counter() - started) / step * (total - step)  # the steps so far, extrapolated
            progress((step, total), desc=f"inverting ({state.stage}), about {left:.0f} s left")

        def run(align):
            return self.model.invert([image], method=method, steps=steps, align=align, callback=report)

        try:
            return run("auto"), None
        except NoFaceError:
            raise ValueError("no face was found in the photo; this face model needs one (a face seen from the front, "
                             "not too small)") from None
        except FacesUnavailableError:
            return run("none"), ("the photo was centre-cropped, not aligned the FFHQ way this face model expects "
                                 "(the server lacks `refinestyle[faces]`): expect a poor reconstruction")

    def _inversion_report(self, out, edited, alignment_note: Optional[str]) -> str:
        w_psnr, w_ssim = psnr_ssim(out.w_images[0], out.targets[0])
        r_psnr, r_ssim = psnr_ssim(out.images[0], out.targets[0])
        lines = [f"| | PSNR (dB) | SSIM |\n|---|---|---|\n| W+ only | {w_psnr:.2f} | {w_ssim:.3f} |\n"
                 f"| RefineStyle | {r_psnr:.2f} | {r_ssim:.3f} |\n\n{out.method}: {out.seconds * 1000:.0f} ms"]
        if out.aligned is not None:
            crop = to_pil(out.targets[0])
            identity = [f"reconstruction {_identity(crop, to_pil(out.images[0]))}"]
            if edited is not None:
                identity.append(f"edit {_identity(crop, to_pil(edited[0]))}")
            lines.append("aligned the FFHQ way. Identity against your face (dlib's face descriptors: cosine similarity, "
                         "and distance, where below 0.6 is the same person): " + "; ".join(identity))
        if alignment_note:
            lines.append(f"⚠ {alignment_note}")
        if out.in_domain is not None and not out.in_domain[0]:
            check = self.model.domain_check
            lines.append(f"⚠ **Outside this model's domain.** `{model_label(self.model)}` draws "
                         f"{self.model.generator.config.resolution} px images like those it was trained on; this one scores "
                         f"{float(out.domain_score[0]):.1f} dB where the model's own kind score {check.threshold:.1f} dB or more. "
                         "The result is the nearest image the model can draw, not a reconstruction of yours.")
        elif out.in_domain is not None:
            lines.append("within the model's domain")
        return "\n\n".join(lines)

    def _inversion_files(self, out, edited, folder: Path) -> list[str]:
        from safetensors.torch import save_file

        state = {"ws": out.ws.detach().cpu().contiguous()}
        state.update({f"tokens.{k}": v.detach().cpu().contiguous() for k, v in out.tokens.state_dict().items()})
        save_file(state, str(folder / "inversion.safetensors"), metadata={"format": "pt", "model": model_label(self.model)})
        to_pil(edited[0]).save(folder / "result.png")
        return [str(folder / "result.png"), str(folder / "inversion.safetensors")]

    # --------------------------------------------------------------------------------------------
    def begin_adapt(self, request: gr.Request):
        """Runs at the click, before the job waits in the queue: Cancel can then stop it even while it waits."""
        self._queued[session_key(request)] = threading.Event()

    def cancel(self, request: gr.Request):
        key = session_key(request)
        events = [e for e in (self._queued.get(key), self._running.get(key)) if e is not None]
        for event in events:
            event.set()
        return "cancelling…" if events else "nothing to cancel"

    def _check_adapt_inputs(self, source, target, reference, steps, lr, seed, name, session) -> dict:
        steps = int(_number(steps or self.workload.adapt_steps, "steps", 1, 1000))  # 0: the app's default
        # 0 (or empty): model.adapt's automatic rate for these steps (0.01 for the default 60)
        lr = _number(lr or 0, "learning rate", 0, 0.5)
        if 0 < lr < 1e-4:
            raise ValueError(f"learning rate must be 0 (automatic) or between 0.0001 and 0.5, got {lr}")
        seed = int(_number(seed, "seed", 0, 2**31 - 1))
        name = (name or "").strip() or f"custom-{len(session) + 1}"
        if not re.fullmatch(r"[\w-]{1,40}", name) or name in self.model.domains:
            raise ValueError(f"domain name {name!r}: use 1-40 letters, digits, '-' or '_' and not a built-in name")
        target_images = images_to_tensor([reference], self.model.generator.config.resolution) if reference is not None else None
        if target_images is None and not (target or "").strip():
            raise ValueError("type a target prompt (e.g. 'a pencil sketch of a face') or give a reference image")
        if not (source or "").strip():
            raise ValueError("type a source prompt, e.g. 'a photo of a face'")
        styles = self.style_words()
        if target_images is None and styles and not set(WordTokenizer.split(target)) & set(styles):
            raise ValueError(f"the target prompt {target.strip()!r} names no style this model's guide knows; "
                             f"use one of: {', '.join(styles)}")
        return dict(source=source, target=target if target_images is None else None, target_images=target_images,
                    steps=steps, lr=lr or None, seed=seed, name=name)

    @gpu
    async def adapt(self, source: str, target: str, reference=None, steps: float = 0, lr: float = 0, seed: float = 0,
                    name: str = "", session: dict | None = None, request: gr.Request = None, progress=gr.Progress()):
        """Optimise a new domain; yields previews while it runs. Final output adds the domain to the visitor's session."""
        import pandas as pd

        session = dict(session or {})
        try:
            run = self._check_adapt_inputs(source, target, reference, steps, lr, seed, name, session)
        except Exception as err:
            raise as_gradio_error(err, uploads=[reference]) from None
        key = session_key(request)
        stop = self._queued.pop(key, None) or threading.Event()
        self._running[key] = stop
        updates: list = []
        done = threading.Event()
        result: dict = {}

        def work():
            try:
                load = self.workload
                dom = self.model.adapt(run["source"], run["target"], target_images=run["target_images"], steps=run["steps"],
                                       lr=run["lr"], seed=run["seed"], batch=load.adapt_batch, augment_views=load.augment_views,
                                       callback=lambda step, total, state: updates.append(state),
                                       preview_every=load.preview_every, stop=stop)
                result["domain"], result["grid"] = dom, self._before_after(dom, run["seed"])
            except Exception as err:  # reported by the handler below, which is still serving
                result["error"] = err
            finally:
                release_freed_memory()
                done.set()

        threading.Thread(target=work, daemon=True, name=f"adapt-{key}").start()
        try:
            seen, last_preview = 0, None
            while not done.is_set():
                await asyncio.sleep(0.5)  # a cancelled job is interrupted here, and the finally below stops the work
                if len(updates) > seen:
                    seen = len(updates)
                    state = updates[seen - 1]
                    progress((state.step, state.total), desc="adapting")
                    previews = [s for s in updates[:seen] if s.preview is not None]
                    if previews:
                        last_preview = labelled_rows([("before", previews[-1].preview_before),
                                                      (f"step {previews[-1].step}", previews[-1].preview)])
                    frame = pd.DataFrame({"step": [s.step for s in updates[:seen]], "loss": [s.loss for s in updates[:seen]]})
                    left = state.seconds / state.step * (state.total - state.step)  # the steps so far, extrapolated
                    yield (last_preview, frame, f"step {state.step}/{state.total}, loss {state.loss:.4f}, about {left:.0f} s left",
                           session, gr.update(), None)
        finally:
            stop.set()  # whatever ended this handler (Cancel, a cancelled API job, a closed tab) ends the optimisation too
            if self._running.get(key) is stop:
                del self._running[key]
        if isinstance(result.get("error"), Cancelled):
            yield last_preview, gr.update(), f"**{result['error']}**", session, gr.update(), None
            return
        if "error" in result:
            raise as_gradio_error(result["error"])
        yield self._finish_adapt(result["domain"], result["grid"], run["name"], session, self.session_dir(request))

    def _before_after(self, dom: DomainTokens, seed: int):
        z = torch.randn(self.workload.result_faces, self.model.generator.config.z_dim,
                        generator=torch.Generator().manual_seed(seed))
        rows = [("before", self.model.generate(z=z, truncation_psi=0.7)),
                ("after\n(strength 1)", self.model.generate(z=z, truncation_psi=0.7, domain={dom: 1.0}))]
        if dom.config.suggested_strength is not None:
            rows.append((f"suggested\n(strength {dom.config.suggested_strength:g})",
                         self.model.generate(z=z, truncation_psi=0.7, domain=dom, strength="suggested")))
        return labelled_rows(rows)

    def _finish_adapt(self, dom: DomainTokens, preview, name: str, session: dict, folder: Path):
        import pandas as pd

        dropped = self._add_to_session(session, name, dom)
        history = dom.history
        frame = pd.DataFrame({"step": [s["step"] for s in history.states], "loss": [s["loss"] for s in history.states]})
        suggested = dom.config.suggested_strength
        status = f"domain **{name}** ready ({dom.num_parameters():,} parameters)" + (
            f"; suggested strength **{suggested:g}** (bottom row: where the CLIPs see the style reached; 1 = as optimised, "
            "stronger)" if suggested is not None else "") + (
            f"; stopped early: {history.stopped_early}" if history.stopped_early else "") + (
            f"; {', '.join(dropped)} removed (each visitor keeps their last {MAX_SESSION_DOMAINS} domains; download to keep more)"
            if dropped else "")
        return (preview, frame, status, session, gr.update(choices=self.domain_choices(session), value=name),
                self._domain_zip(dom, name, folder))

    def _domain_zip(self, dom: DomainTokens, name: str, folder: Path) -> str:
        dom.save_pretrained(folder / name)
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for f in (folder / name).iterdir():
                zf.write(f, f"{name}/{f.name}")
        return str(path)

    def load_domain_zip(self, upload, session: dict | None = None, request: gr.Request = None):
        """A domain zip this app made (``<name>/config.json`` + safetensors), back into the visitor's session."""
        session = dict(session or {})
        try:
            if upload is None:
                raise ValueError("choose a domain .zip (the file this app offers after an adaptation)")
            folder = self.session_dir(request)
            name = extract_domain_zip(upload, folder)
            if name in self.model.domains:
                raise ValueError(f"{name!r} is a built-in domain's name; rename the folder inside the zip")
            dom = DomainTokens.from_pretrained(folder / name)
            dom.check_compatible(self.model.generator)
            dropped = self._add_to_session(session, name, dom.eval().requires_grad_(False))
            note = f"; {', '.join(dropped)} removed (each visitor keeps their last {MAX_SESSION_DOMAINS})" if dropped else ""
            return (f"domain **{name}** loaded ({dom.num_parameters():,} parameters){note}", session,
                    gr.update(choices=self.domain_choices(session), value=name))
        except Exception as err:
            raise as_gradio_error(err, uploads=[upload]) from None

    @staticmethod
    def _add_to_session(session: dict, name: str, dom: DomainTokens) -> list[str]:
        """Add a domain, dropping the oldest beyond ``MAX_SESSION_DOMAINS``; returns the names dropped."""
        dropped = []
        session.pop(name, None)
        session[name] = dom
        while len(session) > MAX_SESSION_DOMAINS:
            dropped.append(next(iter(session)))
            del session[dropped[-1]]
        return dropped

    # --------------------------------------------------------------------------------------------
    def push(self, name: str, repo_id: str, session: dict | None = None, oauth_token: gr.OAuthToken | None = None):
        """Push one of the visitor's domains with the visitor's own login (the server's token only when the operator allows)."""
        try:
            if oauth_token is not None:
                token = oauth_token.token
            elif self.allow_server_token and os.environ.get("HF_TOKEN"):
                token = os.environ["HF_TOKEN"]
            else:
                raise ValueError("log in with your Hugging Face account (the Login button) to push; this app never "
                                 "pushes with the server's token")
            if not session or name not in session:
                raise ValueError("adapt a domain first; built-in domains are already on the Hub")
            return f"pushed to {session[name].push_to_hub((repo_id or '').strip(), token=token)}"
        except OSError as err:
            raise as_gradio_error(ValueError(f"the push failed ({err}); check the repo id and your write access")) from None
        except Exception as err:
            raise as_gradio_error(err) from None

    def push_button_state(self, profile: gr.OAuthProfile | None = None):
        """The Push button is live only for a logged-in visitor (or an operator who allowed the server's token)."""
        if self.allow_server_token:
            return gr.update(interactive=True, value="Push to Hub (with this server's HF_TOKEN)")
        if profile is None:
            return gr.update(interactive=False, value="Push to Hub (log in first)")
        return gr.update(interactive=True, value=f"Push to Hub as {profile.username}")

    # --------------------------------------------------------------------------------------------
    def generate(self, seeds: str = "0-7", truncation: float = 0.7, mix: str = "", strength: float = 1.0, session: dict | None = None,
                 progress=gr.Progress()):
        """Seeds → an image grid, with an optional domain mix such as 'sketch: 0.6, zombie: 0.4'; large models draw
        a few images at a time and report each."""
        try:
            seed_list = parse_seeds(seeds, max_count=MAX_SEEDS)
            psi = _number(truncation, "truncation", 0.0, MAX_TRUNCATION)
            strength = _number(strength, "strength", -2.0, 2.0)
            weights = {}
            for name, w in parse_mix(mix).items():
                dom = self.resolve(name, session)
                if dom is not None:
                    weights[dom] = _number(w, f"weight of {name}", -2.0, 2.0)
            chunk = self.workload.generate_chunk
            parts = []
            for start in range(0, len(seed_list), chunk):
                if len(seed_list) > chunk:
                    progress((start, len(seed_list)), desc="drawing")
                parts.append(self.model.generate(seeds=seed_list[start:start + chunk], truncation_psi=psi,
                                                 domain=weights or None, strength=strength))
            images = torch.cat(parts)
            columns = min(4, len(seed_list))  # rows of four, each face at least 128 px (256 for a few)
            return upscale(grid(images, columns=columns), (256 if len(seed_list) <= 8 else 128) * columns)
        except Exception as err:
            raise as_gradio_error(err) from None


class UploadImage(gr.Image):
    """An image input that hands the raw uploaded file to our loader (which explains bad files) instead of
    decoding it in Gradio first (whose errors name no fix)."""

    def preprocess(self, payload):
        return None if payload is None else payload.path

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # rendered by Gradio's own image front-end


DOMAIN_ZIP_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
DOMAIN_ZIP_EXTRAS = ("README.md", "metrics.json", "preview.png")  # written beside a domain; ignored on the way in
MAX_DOMAIN_ZIP_BYTES = 20_000_000  # uncompressed; a domain is kilobytes to a few MB


def extract_domain_zip(path, folder: Path) -> str:
    """Check a domain zip and write its two files under ``folder/<name>/``; returns the name. Refuses anything else:
    other files, paths that climb out, several folders, declared or real sizes over ``MAX_DOMAIN_ZIP_BYTES``."""
    if not zipfile.is_zipfile(path):
        raise ValueError("the uploaded file is not a zip archive; upload the domain .zip this app made")
    with zipfile.ZipFile(path) as archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        names = {i.filename.split("/")[0] for i in entries}
        if len(names) != 1 or len(entries) > len(DOMAIN_ZIP_FILES) + len(DOMAIN_ZIP_EXTRAS):
            raise ValueError("the zip must hold one domain folder, <name>/config.json and its safetensors")
        name = names.pop()
        if not re.fullmatch(r"[\w-]{1,40}", name):
            raise ValueError(f"the folder name {name!r} in the zip: use 1-40 letters, digits, '-' or '_'")
        wanted = {f"{name}/{f}": f for f in DOMAIN_ZIP_FILES}
        allowed = set(wanted) | {f"{name}/{f}" for f in DOMAIN_ZIP_EXTRAS}
        if not {i.filename for i in entries} <= allowed or not set(wanted) <= {i.filename for i in entries}:
            raise ValueError(f"the zip must hold exactly {name}/config.json and {name}/diffusion_pytorch_model.safetensors "
                             "(plus the README, metrics and preview this app writes)")
        if sum(i.file_size for i in entries) > MAX_DOMAIN_ZIP_BYTES:
            raise ValueError(f"the zip unpacks to more than {MAX_DOMAIN_ZIP_BYTES // 1_000_000} MB; a domain is far smaller")
        (folder / name).mkdir(parents=True)
        for member, filename in wanted.items():
            with archive.open(member) as src:
                data = src.read(MAX_DOMAIN_ZIP_BYTES + 1)  # a member lying about its size is still cut here
            if len(data) > MAX_DOMAIN_ZIP_BYTES:
                raise ValueError(f"the zip unpacks to more than {MAX_DOMAIN_ZIP_BYTES // 1_000_000} MB")
            (folder / name / filename).write_bytes(data)
    return name


def _identity(face, other) -> str:
    from refinestyle.faces import NoFaceError, identity_distance, identity_similarity

    try:
        distance = identity_distance(face, other)
    except NoFaceError:
        return "**no face found** in it"
    verdict = "same person" if distance < 0.6 else "another person"
    return f"similarity {identity_similarity(face, other):.2f}, distance **{distance:.2f}** ({verdict})"


def _number(value, name: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (lo <= v <= hi):
        raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


def build_demo(model: RefineStyleModel, *, invert_steps: Optional[int] = None, allow_server_token: bool = False,
               oauth: Optional[bool] = None, max_adaptations: int = 1) -> gr.Blocks:
    app = App(model, invert_steps=invert_steps, allow_server_token=allow_server_token, oauth=oauth)
    examples = sorted(str(p) for p in EXAMPLES.glob("*.png")) if EXAMPLES.exists() else []
    res = model.generator.config.resolution
    # Gradio's copies of returned files: swept every 10 minutes once an hour old (the session folders go at unload).
    with gr.Blocks(title="RefineStyle", delete_cache=(600, 3600)) as demo:
        demo.app_handlers = app  # for tests and the benchmark
        session = gr.State({}, time_to_live=SESSION_TTL_S)
        gr.Markdown(f"# RefineStyle\nDynamic convolution refinement for StyleGAN2: invert, adapt from text, generate. "
                    f"Model: `{model_label(model)}` ({res} px"
                    f"{', encoder' if model.encoder is not None else ''}{(', guides: ' + ', '.join(model.guide_names)) if model.guide_names else ''}).")
        with gr.Tab("Invert & edit"):
            with gr.Row():
                inp = UploadImage(type="filepath", label="input image", sources=["upload", "clipboard"], height=256, elem_id="inv-input")
                with gr.Column():
                    dom_inv = gr.Dropdown(app.domain_choices({}), value="(none)", label="apply a domain")
                    strength_inv = gr.Slider(-1, 2, value=1.0, step=0.05, label="domain strength")
                    # the encoder inverts in one pass: the optimisation's steps only matter without one
                    steps_inv = gr.Slider(10, 500, value=app.invert_steps, step=10, label="optimisation steps",
                                          visible=model.encoder is None)
                    run_inv = gr.Button("Invert", variant="primary")
            if examples:
                gr.Examples(examples, inputs=[inp], label="examples (renderer images, in and out of domain)")
            with gr.Row():
                o_target = gr.Image(label="input (aligned)" if model.face_alignment != "none" else "input (cropped)",
                                    format="png", elem_id="inv-target")
                o_w = gr.Image(label="W+ reconstruction", format="png", elem_id="inv-w")
                o_ref = gr.Image(label="RefineStyle reconstruction", format="png", elem_id="inv-refined")
                o_edit = gr.Image(label="with domain", format="png", elem_id="inv-edited")
            metrics = gr.Markdown()
            o_pasted = gr.Image(label="pasted back into your photo", format="png", elem_id="inv-pasted",
                                visible=model.face_alignment != "none")
            files = gr.File(label="downloads (PNG, ws + tokens)", file_count="multiple")
            run_inv.click(app.invert, [inp, dom_inv, strength_inv, steps_inv, session],
                          [o_target, o_w, o_ref, o_edit, metrics, files, o_pasted], api_name="invert")
        with gr.Tab("Adapt from text"):
            with gr.Row():
                with gr.Column():
                    src = gr.Textbox("a photo of a face", label="source prompt")
                    tgt = gr.Textbox("a pencil sketch of a face", label="target prompt")
                    styles = app.style_words()
                    gr.Markdown(f"This model's guide knows these style words: {', '.join(styles)} (and the words of its "
                                "captions: hair, glasses, smile, colours)" if styles else
                                "This model's guide is an open-vocabulary CLIP: any text", elem_id="guide-words")
                    ref = UploadImage(type="filepath", label="or a reference image (replaces the target prompt)", height=160)
                    with gr.Row():
                        steps_ad = gr.Slider(5, 300, value=app.workload.adapt_steps, step=5, label="steps")
                        lr_ad = gr.Number(0, label="learning rate (0: automatic, by the steps)")
                        seed_ad = gr.Number(0, label="seed", precision=0)
                    name_ad = gr.Textbox("", label="domain name (optional)")
                    with gr.Row():
                        run_ad = gr.Button("Adapt", variant="primary")
                        cancel_ad = gr.Button("Cancel", elem_id="adapt-cancel")
                with gr.Column():
                    preview = gr.Image(label="preview (rows labelled)", format="png")
                    loss_plot = gr.LinePlot(x="step", y="loss", label="loss")
                    status = gr.Markdown(elem_id="adapt-status")
                    dom_file = gr.File(label="download the domain")
                    with gr.Row():
                        zip_in = gr.File(label="load a domain .zip made here", file_types=[".zip"], type="filepath")
                        load_zip = gr.Button("Load domain")
                    repo = gr.Textbox("", label="push to Hub repo (user/name, with your own Hugging Face login)")
                    with gr.Row():
                        if app.oauth:
                            gr.LoginButton()
                        push_btn = gr.Button("Push to Hub (log in first)", interactive=False)
                    if not app.oauth and not allow_server_token:
                        gr.Markdown("Pushing needs a Hugging Face login, which this app offers when it runs as a Space "
                                    "(`hf_oauth: true`); locally, start it with `--allow-server-token` to push with your HF_TOKEN.")
                    push_status = gr.Markdown()
        with gr.Tab("Generate"):
            with gr.Row():
                seeds = gr.Textbox(app.workload.seeds, label="seeds")
                psi = gr.Slider(0, MAX_TRUNCATION, value=0.7, step=0.05, label="truncation")
                strength_gen = gr.Slider(-1, 2, value=1.0, step=0.05, label="strength")
            weights_table = gr.Dataframe(app.domain_table({}), headers=["domain", "weight"], datatype=["str", "number"],
                                         column_count=(2, "fixed"), interactive=True, elem_id="gen-domains",
                                         label="domains to mix: set a weight (0 = off); yours join the list when made")
            # what /generate takes (and API clients send): the table's non-zero rows as 'sketch: 0.6, zombie: 0.4'
            mix = gr.Textbox("", label="domain mix", visible=False)
            weights_table.change(app.mix_from_table, weights_table, mix, api_name=False, queue=False)
            run_gen = gr.Button("Generate", variant="primary")
            gallery = gr.Image(label="grid", format="png", elem_id="gen-grid")
            run_gen.click(app.generate, [seeds, psi, mix, strength_gen, session], gallery, api_name="generate")
        run_ad.click(app.begin_adapt, None, None, queue=False, api_name=False).then(
            app.adapt, [src, tgt, ref, steps_ad, lr_ad, seed_ad, name_ad, session],
            [preview, loss_plot, status, session, dom_inv, dom_file], api_name="adapt",
            concurrency_limit=max_adaptations, concurrency_id="adapt").then(
            app.domain_table, [session, weights_table], weights_table, api_name=False, queue=False)
        # Not Gradio's `cancels=`: that marks every output with an error; the handler sees the signal and says "cancelled".
        cancel_ad.click(app.cancel, None, status, queue=False, api_name=False)
        push_btn.click(app.push, [name_ad, repo, session], push_status, api_name=False)
        load_zip.click(app.load_domain_zip, [zip_in, session], [status, session, dom_inv], api_name="load_domain").then(
            app.domain_table, [session, weights_table], weights_table, api_name=False, queue=False)
        demo.load(app.push_button_state, None, push_btn, api_name=False)
        demo.unload(app.end_session)
    demo.queue(max_size=64, default_concurrency_limit=2)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RefineStyle Gradio app")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local folder (default: the SynthFaces model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, else 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT, else the first free port from 7860")
    parser.add_argument("--invert-steps", type=int, default=None,
                        help="optimisation inversion steps for models without an encoder (default: 150, 50 for a model "
                             "above 256 px on a CPU)")
    parser.add_argument("--max-adaptations", type=int, default=1, help="adaptations run at once; more wait in the queue")
    parser.add_argument("--allow-server-token", action="store_true",
                        help="local use only: let Push to Hub use this server's HF_TOKEN (never on a public Space)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = RefineStyleModel.from_pretrained(args.model, device=args.device)
    demo = build_demo(model, invert_steps=args.invert_steps, allow_server_token=args.allow_server_token,
                      max_adaptations=args.max_adaptations)
    demo.launch(**launch_options(args))


def launch_options(args: argparse.Namespace) -> dict:
    """Flags win when given; otherwise Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (and scans for a free port)."""
    return dict(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
