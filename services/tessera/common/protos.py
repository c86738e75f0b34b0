"""Conversions between torch tensors and the protobuf value types, with validation.

Everything that crosses a service boundary goes through here, so a malformed grid, tensor
or embedding is rejected with the same InvalidArgument message wherever it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import DEFAULT_MAX_TOKENS, TEXT_DIM, TextBatch, pool_states
from tessera.v1 import common_pb2


def grid_to_proto(grid: torch.Tensor) -> common_pb2.TokenGrid:
    """(h, w) integer tensor → TokenGrid."""
    h, w = grid.shape
    tokens = grid.detach().to("cpu", torch.int64).reshape(-1).tolist()
    return common_pb2.TokenGrid(tokens=tokens, height=h, width=w)


def grid_from_proto(msg: common_pb2.TokenGrid, grid_size: int, vocab_size: int) -> torch.Tensor:
    """TokenGrid → (h, w) int64 tensor; checks shape and token range."""
    if (msg.height, msg.width) != (grid_size, grid_size):
        raise InvalidArgument(
            f"token grid is {msg.height}x{msg.width}; this model uses {grid_size}x{grid_size}"
        )
    if len(msg.tokens) != grid_size * grid_size:
        raise InvalidArgument(
            f"token grid has {len(msg.tokens)} tokens; {grid_size}x{grid_size} needs "
            f"{grid_size * grid_size}"
        )
    grid = torch.tensor(list(msg.tokens), dtype=torch.int64).reshape(grid_size, grid_size)
    if grid.numel() and (int(grid.min()) < 0 or int(grid.max()) >= vocab_size):
        raise InvalidArgument(f"token values must be in [0, {vocab_size})")
    return grid


def tensor_to_proto(x: torch.Tensor) -> common_pb2.Tensor:
    x = x.detach().to("cpu", torch.float32).contiguous()
    return common_pb2.Tensor(values=x.reshape(-1).tolist(), shape=list(x.shape))


def tensor_from_proto(msg: common_pb2.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Tensor → float32 tensor of the expected shape; rejects NaN/inf."""
    if list(msg.shape) != list(shape):
        raise InvalidArgument(f"tensor shape {list(msg.shape)} differs from expected {list(shape)}")
    values = np.asarray(msg.values, dtype=np.float32)
    if values.size != int(np.prod(shape)):
        raise InvalidArgument(f"tensor has {values.size} values; shape {list(shape)} needs more")
    if not np.isfinite(values).all():
        raise InvalidArgument("tensor contains NaN or infinite values")
    return torch.from_numpy(values.reshape(tuple(shape)).copy())


def text_states_to_proto(text: TextBatch, row: int = 0) -> common_pb2.Tensor:
    """One text's MiniLM token states, its real tokens only -> Tensor [tokens, 384]."""
    tokens = int(text.mask[row].sum())
    return tensor_to_proto(text.states[row, :tokens])


def text_states_from_proto(msg: common_pb2.Tensor, rows: int = 1) -> TextBatch:
    """Tensor [tokens, 384] -> a TextBatch of ``rows`` identical rows, padded to the
    encoder's length, as ``TextEncoder.encode`` would give for the text."""
    shape = list(msg.shape)
    if len(shape) != 2 or not 1 <= shape[0] <= DEFAULT_MAX_TOKENS or shape[1] != TEXT_DIM:
        raise InvalidArgument(
            f"text_states must have shape [1..{DEFAULT_MAX_TOKENS}, {TEXT_DIM}]; got {shape}"
        )
    states = tensor_from_proto(msg, shape)
    padded = torch.zeros(1, DEFAULT_MAX_TOKENS, TEXT_DIM)
    padded[0, : shape[0]] = states
    mask = (torch.arange(DEFAULT_MAX_TOKENS) < shape[0]).view(1, -1)
    pooled = pool_states(padded, mask)
    return TextBatch(padded.expand(rows, -1, -1), mask.expand(rows, -1), pooled.expand(rows, -1))


def embedding_to_proto(v: torch.Tensor) -> common_pb2.Embedding:
    v = v.detach().to("cpu", torch.float32).reshape(-1)
    return common_pb2.Embedding(values=v.tolist(), dim=v.numel())


def embedding_from_proto(msg: common_pb2.Embedding, dim: int) -> torch.Tensor:
    if msg.dim != dim or len(msg.values) != dim:
        raise InvalidArgument(
            f"embedding has dim {msg.dim} ({len(msg.values)} values); expected {dim}"
        )
    values = np.asarray(msg.values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InvalidArgument("embedding contains NaN or infinite values")
    return torch.from_numpy(values.copy())


def check_prompt(name: str, text: str, max_chars: int, *, optional: bool = False) -> None:
    """A text condition: at most ``max_chars`` characters, and not blank unless optional."""
    if len(text) > max_chars or (not optional and not text.strip()):
        low = 0 if optional else 1
        raise InvalidArgument(f"{name} must be {low}..{max_chars} characters")


def check_count(name: str, count: int, low: int, high: int) -> None:
    if not low <= count <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}; got {count}")


def check_range(
    name: str, value: float, low: float, high: float, *, open_low: bool = False
) -> None:
    ok = (value > low if open_low else value >= low) and value <= high
    if not ok or value != value:  # NaN fails every comparison
        bracket = "(" if open_low else "["
        raise InvalidArgument(f"{name} must be in {bracket}{low}, {high}]; got {value}")
