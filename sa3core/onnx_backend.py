"""The onnxruntime backend: the pipeline's four model parts run from an ONNX export.

Importing this module registers ``"onnx"`` in :data:`sa3core.backends.BACKENDS`
(``sa3core.backends`` imports it on first use of that name), so ``--backend onnx`` works on
every command and in the daemon.

Where the files are: ``Pipeline.load(FOLDER, backend="onnx")`` takes either an export folder
(``sa3 export onnx -o FOLDER``: it holds ``manifest.json``, the ``.onnx`` files and a copy of
``model.json``) or a model folder with such an export in its ``onnx/`` subfolder.

Speed and memory choices:
- Graph optimisations ``ORT_ENABLE_ALL``; the optimised graph is cached next to the export
  (``FOLDER/cache/<part>.<ort version>.onnx``) so later loads skip the optimisation. A
  read-only export still works, uncached.
- ``intra_op_num_threads`` = physical cores (hyper-threads share one core's matmul units and
  only add contention), sequential execution (the graphs are one chain of ops).
- The intra-op pool's idle threads sleep instead of spinning (``session.intra_op.allow_spinning``
  0), as sa3's OpenMP threads do (``OMP_WAIT_POLICY=PASSIVE``, sa3/cli/threads.py): beside a core
  another program keeps busy (a DAW playing back) a spinning thread takes the core that program
  needs. The shipped model's 4 s take beside one busy core of two: 1.49 s instead of 2.22 s
  (1.38 s with the sa3 command's passive OpenMP threads as well), idle no slower (``sa3 bench threads --backend onnx --wait-policies --busy 1``, docs/benchmarks.md).
  ``SA3_ORT_SPINNING=1`` in the environment keeps onnxruntime's spinning (for that comparison).
- Memory: lengths change from request to request, so ORT's memory *pattern* planner, which
  plans for one shape, is off; the CPU arena is off too by default (``arena=True`` turns it
  on), so freed buffers return to the system instead of the arena keeping the peak of the
  longest request. The autoencoder runs in chunks of ``chunk_frames`` with exact context, the
  way ``SAME`` does, so its peak memory does not grow with the length.

Results match the torch backend within the manifest's tolerance for the same seeds and lengths.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from . import timebase
from .backends import BACKENDS
from .cpus import physical_cores
from .errors import Sa3Error
from .manifest import MANIFEST_NAME, Manifest, read_manifest
from .musical import MUSIC_DIM
from .scale_lock import SemitoneLayout


def open_session(
    path: Path, threads: int | None = None, cache_dir: Path | None = None, arena: bool = False, lean: bool = False
) -> ort.InferenceSession:
    """An onnxruntime CPU session with the settings above; caches the optimised graph in ``cache_dir``.

    ``lean``: for a graph whose activations grow with the request's length. The allocation plan
    reuses a buffer only for tensors of the same symbolic shape, so each shape class keeps as many
    buffers as it ever has alive at once; lean turns that reuse off and takes every buffer from
    the CPU arena instead, which gives its memory back after each run when the run passes
    :func:`lean_run_options`. Peak memory of the released small DiT step then grows 1.8x from 10 s
    to 120 s instead of 2.5x, at the same speed (docs/export.md)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_mem_pattern = False  # planned for one shape only; lengths vary per request
    options.enable_mem_reuse = not lean
    spinning = "1" if os.environ.get("SA3_ORT_SPINNING") == "1" else "0"  # the module docstring says why
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.enable_cpu_mem_arena = arena or lean
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the "hardware specific" note is why the cache key names the CPU
    source = path
    if cache_dir is not None:
        # ORT_ENABLE_ALL bakes in CPU-specific layouts: key the cache by ORT version and CPU.
        cached = cache_dir / f"{path.stem}.ort{ort.__version__}-{_cpu_tag()}.onnx"
        if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
            source = cached
        elif _writable(cache_dir):
            options.optimized_model_filepath = str(cached)
            # large graphs (the small DiT is 1.7 GB) exceed protobuf's 2 GB: weights go beside it
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", cached.name + ".data"
            )
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def lean_run_options() -> ort.RunOptions:
    """Run options for a ``lean`` session: the CPU arena shrinks back after the run."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _cpu_tag() -> str:
    """A short hash of this CPU's model and instruction-set flags."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text += "".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        text += platform.processor()
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


def find_export(folder: str | Path) -> Path:
    """The export folder for ``folder``: itself if it holds a manifest, else its ``onnx/`` subfolder.

    ONNX files without the manifest (written last) are an export that stopped part way: the
    error says to redo that export, not to export the export folder."""
    folder = Path(folder)
    for candidate in (folder, folder / "onnx"):
        if (candidate / MANIFEST_NAME).exists():
            return candidate
    for candidate in (folder, folder / "onnx"):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            raise Sa3Error(
                f"{str(candidate)!r} is an incomplete export (no {MANIFEST_NAME}): re-run "
                f"`sa3 export onnx -o {candidate} --force` (add --model for a model other than the shipped one)"
            )
    raise Sa3Error(
        f"{str(folder)!r} holds no ONNX export; run `sa3 export onnx --model {folder} -o {folder / 'onnx'}` first"
    )


class _Tokenizer:
    """MiniLM's word pieces, as ``sa3core.text.MiniLMEncoder`` cuts them (the parity test ties the two)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from .text import MAX_TOKENS, _check_prompts

        rows = []
        for prompt in _check_prompts(prompts):
            ids = self.tokenizer.encode(prompt).ids if prompt.strip() else []
            if len(ids) > MAX_TOKENS:
                warnings.warn(f"prompt has {len(ids)} tokens; only the first {MAX_TOKENS} are used", stacklevel=3)
                ids = ids[: MAX_TOKENS - 1] + ids[-1:]  # keep the closing [SEP]
            rows.append(ids)
        length = max(1, max(len(r) for r in rows))
        input_ids = np.zeros((len(rows), length), dtype=np.int64)  # 0 = [PAD]
        mask = np.zeros((len(rows), length), dtype=bool)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return input_ids, mask


@BACKENDS.register("onnx")
class OnnxBackend:
    """Runs an ``sa3 export onnx`` folder with onnxruntime on the CPU.

    ``OnnxBackend(folder, settings=None, threads=None, arena=False, cache=True, phase_iterations=None)``;
    ``folder`` as in :func:`find_export`; ``phase_iterations`` (default: the model's setting)
    refines the decoder's phases as the torch backend does. Tensors in and out are torch tensors (the Backend protocol).
    """

    name = "onnx"

    def __init__(
        self,
        folder,
        settings=None,
        threads: int | None = None,
        arena: bool = False,
        cache: bool = True,
        phase_iterations: int | None = None,
    ):
        self.folder = find_export(folder)
        self.manifest: Manifest = read_manifest(self.folder, runtime="onnx")
        self.settings = settings
        if phase_iterations is None:
            phase_iterations = settings.phase_iterations if settings is not None else 0
        if phase_iterations < 0:
            raise Sa3Error(f"phase_iterations must be 0 or more, got {phase_iterations}")
        self.phase_iterations = int(phase_iterations)
        decoder_outputs = [t.name for t in self.manifest.parts["same_decoder"].outputs]
        if self.phase_iterations and "phase" not in decoder_outputs:
            warnings.warn(
                f"model.json asks for {self.phase_iterations} phase-refinement iterations, but this export's decoder "
                "does not give the head's spectra (it predates them); it renders the predicted phases (keys come "
                "through less often): export the model again",
                stacklevel=2,
            )
            self.phase_iterations = 0
        self._semitones = SemitoneLayout.from_dict(self.manifest.semitones)
        if settings is not None and settings.scale_lock_db and self._semitones is None:
            warnings.warn(
                f"model.json asks for a scale lock of {settings.scale_lock_db} dB, but this export does not record "
                "the latents' semitone channels (it predates them); export the model again to lock notes to a key",
                stacklevel=2,
            )
        cache_dir = self.folder / "cache" if cache else None
        self.sessions = {
            part: open_session(self.folder / spec.file, threads, cache_dir, arena)
            for part, spec in self.manifest.parts.items()
        }
        self.chunk_frames = int(self.manifest.codec["chunk_frames"])
        self.receptive_frames = int(self.manifest.codec["receptive_frames"])
        self.window_frames = int(self.manifest.same["window_frames"])
        encoder = self.manifest.model["text_encoder"]
        if "text_encoder" in self.sessions:
            self.tokenizer = _Tokenizer(self.folder / "tokenizer.json")
            self.python_text_encoder = None
        else:  # the hash encoder has no weights: a table lookup, nothing for onnxruntime to run
            from .text import TEXT_ENCODERS

            self.python_text_encoder = TEXT_ENCODERS.get(encoder)()

    def _run(self, part: str, **inputs) -> list[np.ndarray]:
        feeds = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        return self.sessions[part].run(None, feeds)

    def encode_text(self, prompts):
        if self.python_text_encoder is not None:
            return self.python_text_encoder.encode(prompts)
        input_ids, mask = self.tokenizer(prompts)
        (tokens,) = self._run("text_encoder", input_ids=input_ids, attention_mask=mask)
        return torch.from_numpy(tokens), torch.from_numpy(mask)

    def _takes_music(self, part: str) -> bool:
        return any(i.name == "music" for i in self.sessions[part].get_inputs())

    def condition(self, tokens, mask, seconds, music=None):
        """-> (duration, context_mask, keys, values, music or None) as numpy arrays, reused by every step."""
        feeds = dict(text_tokens=tokens.float(), text_mask=mask.bool(), seconds=seconds.float().reshape(-1))
        if self._takes_music("dit_condition"):
            music = torch.zeros(tokens.shape[0], MUSIC_DIM) if music is None else music
            feeds["music"] = music.float().contiguous()
        else:
            music = None
        return (*self._run("dit_condition", **feeds), music)

    def velocity(self, x, t, cond, inpaint_latents, inpaint_mask, frame_mask):
        B, C, T = x.shape
        duration, context_mask, keys, values, music = cond
        if inpaint_mask is None:  # as in the DiT: None = regenerate everything
            inpaint_mask, inpaint_latents = x.new_zeros(B, 1, T), x.new_zeros(B, C, T)
        elif inpaint_latents is None:
            inpaint_latents = x.new_zeros(B, C, T)
        if frame_mask is None:
            frame_mask = torch.ones(B, T, dtype=torch.bool)
        (v,) = self._run(
            "dit_step",
            x=x.float(),
            t=t.float().reshape(-1).expand(B).contiguous(),
            duration=duration,
            context_mask=context_mask,
            keys=keys,
            values=values,
            inpaint_latents=inpaint_latents.float().contiguous(),
            inpaint_mask=inpaint_mask.float().contiguous(),
            frame_mask=frame_mask.bool(),
            **({"music": music.float().contiguous()} if music is not None else {}),
        )
        return torch.from_numpy(v)

    def encode_audio(self, audio):
        if audio.ndim != 3 or audio.shape[1] != timebase.CHANNELS or audio.shape[2] < 1:
            raise Sa3Error(f"encode takes audio [batch, {timebase.CHANNELS}, samples >= 1], got {tuple(audio.shape)}")
        frames = timebase.samples_to_frames(audio.shape[-1])
        padded = np.zeros((*audio.shape[:2], frames * timebase.SAMPLES_PER_FRAME), dtype=np.float32)
        padded[..., : audio.shape[-1]] = audio.float().cpu().numpy()
        run = lambda piece: self._run("same_encoder", audio=piece)[0]  # noqa: E731
        return torch.from_numpy(self._chunked(run, padded, frames, timebase.SAMPLES_PER_FRAME, 1))

    def semitone_layout(self) -> SemitoneLayout | None:
        return self._semitones

    def decode_latents(self, latents):
        if latents.ndim != 3 or latents.shape[1] != timebase.LATENT_CHANNELS or latents.shape[2] < 1:
            raise Sa3Error(f"decode takes latents [batch, 256, frames >= 1], got {tuple(latents.shape)}")
        array = np.ascontiguousarray(latents.float().cpu().numpy())
        frames, per_frame = latents.shape[-1], timebase.SAMPLES_PER_FRAME
        if not self.phase_iterations:
            run = lambda piece: self._run("same_decoder", latents=piece)[0]  # noqa: E731
            return torch.from_numpy(self._chunked(run, array, frames, 1, per_frame))
        # The graph gives the head's spectra; the phases are refined here, as the torch backend does
        # (the same function), with the wider context that keeps chunked refinement exact.
        from .models.same import MAX_LOG_MAGNITUDE, refine_phase, refined_decode_context

        span, patch = int(self.manifest.same["head_patches"]), int(self.manifest.same["patch"])

        def run(piece: np.ndarray) -> np.ndarray:
            _, log_magnitude, phase = self._run("same_decoder", latents=piece)
            magnitude = torch.from_numpy(log_magnitude).clamp(max=MAX_LOG_MAGNITUDE).exp()
            return refine_phase(magnitude, torch.from_numpy(phase), self.phase_iterations, span, patch).numpy()

        context = refined_decode_context(self.receptive_frames, self.window_frames, span, patch, self.phase_iterations)
        return torch.from_numpy(self._chunked(run, array, frames, 1, per_frame, context))

    def _chunked(
        self, run, x: np.ndarray, frames: int, in_per_frame: int, out_per_frame: int, context: int | None = None
    ) -> np.ndarray:
        """``SAME._chunked``: chunks start on window borders and carry ``context`` (default
        ``receptive_frames``) of context each side, cropped off again, so the joined result equals one pass."""
        chunk = self.chunk_frames
        if not chunk or frames <= chunk:
            return run(x)
        context, pieces = self.receptive_frames if context is None else context, []
        for start in range(0, frames, chunk):
            end = min(frames, start + chunk)
            lo, hi = max(0, start - context), min(frames, end + context)
            out = run(np.ascontiguousarray(x[..., lo * in_per_frame : hi * in_per_frame]))
            pieces.append(out[..., (start - lo) * out_per_frame : (end - lo) * out_per_frame])
        return np.concatenate(pieces, axis=-1)
