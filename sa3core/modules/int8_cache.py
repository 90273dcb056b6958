"""A disk cache of int8 weights, so that a process packs a model's int8 layers from what an earlier
one computed instead of quantising its float weights again.

Packing an :class:`sa3core.modules.int8.Int8Linear` has two halves: quantising (rotate the
float32 weight's columns, take each row's peak, round to int8) and fbgemm's prepack of the int8
weight into its kernel's layout. The first is about 70 % of the time (per 8 M weights on one
thread of the AVX2-only EPYC: rotation 46 ms, peaks 36 ms, rounding 52 ms, prepack 56 ms), and its
result, an int8 matrix and one float64 scale per output channel, can be stored; the prepacked form
is torch's own object and cannot. So every cold command on a CPU without native bf16 paid about
5 s to pack the released small DiT's 100 layers (356 M weights) and 0.6 s for SAME-S's decoder.

**Content-addressed, per layer.** An entry is one layer's int8 weight and scales, in a safetensors
file (no pickle) named by a hash of the float32 weight's bytes (the crc32 of every byte, its
shape), the rotation block, this format's version and torch's version. A checkpoint moved,
renamed or pulled again hits the same entries; a weight changed in any way (LoRA adapters merged,
a fine-tune, another checkpoint) names other entries, so a stale entry is never used, and the
layers a change left alone still hit. Hashing reads the float weights once (about 0.4 s for the
small DiT on two threads).

**Where.** ``$SA3_CACHE_DIR/int8``, else ``$XDG_CACHE_HOME/sa3/int8``, else ``~/.cache/sa3/int8``.
``SA3_INT8_CACHE=0`` turns the cache off. The folder is kept under ``SA3_INT8_CACHE_GB`` GiB
(default 4): after each packing the least recently used entries go. The released small DiT's
entries take 359 MB, SAME-S's decoder and encoder 54 MB each.

**Failure costs time only.** An entry that cannot be read (truncated, another format) is packed
again and rewritten; a folder that cannot be written (read-only, full) is warned about once and
the process packs as without a cache. Entries are written to a temporary file and renamed, so two
processes packing at once leave whole entries.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
import zlib
from pathlib import Path

import torch

FORMAT = "sa3-int8-weights/1"
DEFAULT_LIMIT_GB = 4.0
_OFF = ("0", "off", "false", "no")


def cache_folder() -> Path | None:
    """Where the int8 cache lives, or None when ``SA3_INT8_CACHE`` turns it off."""
    if os.environ.get("SA3_INT8_CACHE", "").strip().lower() in _OFF:
        return None
    root = os.environ.get("SA3_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sa3"
    )
    return Path(root).expanduser() / "int8"


def _limit_bytes() -> int:
    text = os.environ.get("SA3_INT8_CACHE_GB", "")
    try:
        gb = float(text) if text.strip() else DEFAULT_LIMIT_GB
    except ValueError:
        warnings.warn(f"SA3_INT8_CACHE_GB={text!r} is not a number of GiB; using {DEFAULT_LIMIT_GB:g}", stacklevel=3)
        gb = DEFAULT_LIMIT_GB
    return max(0, int(gb * 2**30))


class Int8Cache:
    """The int8 weights of packed layers, one safetensors file per layer (see the module's text).

    Thread-safe: :func:`sa3core.modules.int8.int8_inference_copy` packs layers on several threads.
    """

    def __init__(self, folder: str | os.PathLike, limit_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.limit_bytes = _limit_bytes() if limit_bytes is None else limit_bytes
        self._used: set[str] = set()  # entries this process read or wrote: never evicted by it
        self._lock = threading.Lock()
        self._writable = True
        self.hits = self.misses = 0

    @classmethod
    def default(cls) -> Int8Cache | None:
        """The user's cache (:func:`cache_folder`), or None when it is turned off."""
        folder = cache_folder()
        return None if folder is None else cls(folder)

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(weight: torch.Tensor, block: int) -> str:
        """The entry name of ``weight`` (float [out, in]) packed with a ``block``-point rotation."""
        data = weight.detach().to(torch.float32).contiguous()
        raw = memoryview(data.numpy()).cast("B")  # zlib releases the GIL on large buffers
        digest = hashlib.sha256(f"{FORMAT}|{torch.__version__}|{block}|{tuple(data.shape)}|{zlib.crc32(raw)}".encode())
        return digest.hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    # ------------------------------------------------------------------ entries
    def get(self, key: str, out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(int8 weight [out, in], float64 scales [out]) of entry ``key``, or None when it is
        missing or unreadable (an unreadable one is removed)."""
        path = self._path(key)
        if not path.is_file():
            with self._lock:
                self.misses += 1
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("format") != FORMAT:
                    raise ValueError("another format")
                weight, scale = f.get_tensor("weight"), f.get_tensor("scale")
            if (
                weight.dtype != torch.int8
                or tuple(weight.shape) != (out_features, in_features)
                or scale.dtype != torch.float64
                or tuple(scale.shape) != (out_features,)
            ):
                raise ValueError("wrong shapes")
        except Exception:  # noqa: BLE001 - any unreadable entry is packed again
            path.unlink(missing_ok=True)
            with self._lock:
                self.misses += 1
            return None
        try:
            os.utime(path)  # its last use, for the eviction order
        except OSError:
            pass
        with self._lock:
            self.hits += 1
            self._used.add(key)
        return weight, scale

    def put(self, key: str, weight: torch.Tensor, scale: torch.Tensor) -> None:
        """Store an entry (a whole file or nothing); a folder that cannot be written is warned
        about once and left alone."""
        if not self._writable:
            return
        from safetensors.torch import save_file

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".", suffix=".part", dir=self.folder)
            os.close(handle)
            try:
                save_file({"weight": weight.contiguous(), "scale": scale.contiguous()}, temporary, {"format": FORMAT})
                os.replace(temporary, self._path(key))
            finally:
                Path(temporary).unlink(missing_ok=True)
        except Exception as err:  # noqa: BLE001 - OSError, or safetensors' own error for a full disk: a cache never fails a take
            reason = getattr(err, "strerror", None) or err
            with self._lock:
                if self._writable:
                    self._writable = False
                    warnings.warn(
                        f"cannot write the int8 weight cache in {str(self.folder)!r} ({reason}); "
                        "packing goes on without it (set SA3_CACHE_DIR to a writable folder, or SA3_INT8_CACHE=0)",
                        stacklevel=2,
                    )
            return
        with self._lock:
            self._used.add(key)

    def trim(self) -> None:
        """Remove the least recently used entries until the folder holds at most ``limit_bytes``;
        entries this process used stay."""
        try:
            entries = []
            for path in self.folder.glob("*.safetensors"):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            if path.stem in self._used:
                continue
            try:
                path.unlink()
                total -= size
            except OSError:
                pass

    def size_bytes(self) -> int:
        """What the cache's entries take on disk."""
        try:
            return sum(p.stat().st_size for p in self.folder.glob("*.safetensors"))
        except OSError:
            return 0
