"""A frame-grouped transformer with local (windowed) attention, used by the SAME autoencoder.

The sequence is grouped by latent frame: ``x [B, frames, tokens_per_frame, width]``. Attention
runs inside windows of ``window_frames`` whole frames; odd layers shift the window grid by half
a window so information crosses window borders. Every window is one batch row of a single
``scaled_dot_product_attention`` call, so the cost and memory are linear in length and there is
no Python loop over tokens or windows.

Position comes from rotary embeddings over the token's index *inside its window*. Because
windows sit on a fixed grid counted from the first frame, processing a slice that starts on a
window border (a multiple of ``window_frames``) with enough context on both sides gives the
same numbers as processing the whole sequence: :attr:`LocalTransformer.receptive_frames` is
the context that guarantees it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm


def rotary_tables(length: int, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin tables [length, head_dim // 2] for positions 0..length-1."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate float32 ``x [..., L, head_dim]`` by position (rotate-half pairing)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


class WindowAttention(nn.Module):
    """Self-attention over rows of windows with QK-RMSNorm and rotary positions.

    ``x [N, L, width]`` (N = batch x windows); ``mask`` None or bool [N, 1, 1, L] with True =
    a real key; padded keys get exactly zero weight inside the softmax.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of an even size")
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.Parameter(torch.ones(self.head_dim))
        self.k_norm = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        N, L, width = x.shape
        qkv = self.qkv(x).view(N, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, H, L, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # norms and rotation in float32 whatever autocast says, then back to v's dtype
        q = apply_rotary(F.rms_norm(q.float(), (self.head_dim,), self.q_norm.float()), cos, sin).to(v.dtype)
        k = apply_rotary(F.rms_norm(k.float(), (self.head_dim,), self.k_norm.float()), cos, sin).to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, L, head_dim)
        return self.out(out.transpose(1, 2).reshape(N, L, width))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-RMSNorm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(width)
        self.attn = WindowAttention(width, heads)
        self.mlp_norm = RMSNorm(width)
        self.mlp = SwiGLU(width, mlp_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class LocalTransformer(nn.Module):
    """Blocks over ``x [B, frames, tokens_per_frame, width]`` with windowed, alternately shifted attention."""

    def __init__(
        self, width: int, heads: int, layers: int, mlp_hidden: int, window_frames: int, tokens_per_frame: int
    ) -> None:
        super().__init__()
        if window_frames < 2 or window_frames % 2:
            raise ValueError(f"window_frames must be an even number >= 2, got {window_frames}")
        self.window_frames, self.tokens_per_frame = window_frames, tokens_per_frame
        self.blocks = nn.ModuleList(Block(width, heads, mlp_hidden) for _ in range(layers))
        cos, sin = rotary_tables(window_frames * tokens_per_frame, width // heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @property
    def receptive_frames(self) -> int:
        """Frames of context on each side after which far-away input cannot change an output."""
        return len(self.blocks) * self.window_frames

    def _window_layout(self, frames: int, shift: int, device) -> tuple[int, int, torch.Tensor | None]:
        """Front/back padding (in frames) that puts the grid ``shift`` frames early, and the key mask."""
        back = (-(shift + frames)) % self.window_frames
        if shift == 0 and back == 0:
            return 0, 0, None
        valid = torch.zeros(shift + frames + back, dtype=torch.bool, device=device)
        valid[shift : shift + frames] = True
        mask = valid.view(-1, self.window_frames).repeat_interleave(self.tokens_per_frame, dim=1)  # (windows, W*T)
        return shift, back, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, frames, T, width = x.shape
        span = self.window_frames * T  # tokens per window
        layouts = [self._window_layout(frames, s, x.device) for s in (0, self.window_frames // 2)]
        cos, sin = self.cos, self.sin
        for index, block in enumerate(self.blocks):
            front, back, mask = layouts[index % 2]
            if front or back:
                x = F.pad(x, (0, 0, 0, 0, front, back))  # (B, front + frames + back, T, width)
            windows = x.shape[1] // self.window_frames
            rows = x.reshape(B * windows, span, width)  # (B * windows, W * T, width)
            row_mask = None
            if mask is not None:
                row_mask = mask.expand(B, windows, span).reshape(B * windows, 1, 1, span)
            x = block(rows, cos, sin, row_mask).view(B, -1, T, width)[
                :, front : front + frames
            ]  # (B, frames, T, width)
        return x
