import math

import pytest
import torch

from tessera.common.errors import InvalidArgument
from tessera.common.protos import (
    check_range,
    embedding_from_proto,
    embedding_to_proto,
    grid_from_proto,
    grid_to_proto,
    tensor_from_proto,
    tensor_to_proto,
    text_states_from_proto,
)
from tessera.v1 import common_pb2


def test_grid_round_trip_and_checks():
    grid = torch.arange(16).reshape(4, 4)
    msg = grid_to_proto(grid)
    assert (msg.height, msg.width) == (4, 4)
    assert torch.equal(grid_from_proto(msg, 4, 16), grid)
    with pytest.raises(InvalidArgument, match="4x4"):
        grid_from_proto(msg, 8, 16)
    with pytest.raises(InvalidArgument, match="token values"):
        grid_from_proto(msg, 4, 10)
    short = common_pb2.TokenGrid(tokens=[1, 2], height=4, width=4)
    with pytest.raises(InvalidArgument, match="needs"):
        grid_from_proto(short, 4, 16)


def test_tensor_and_embedding_round_trip():
    x = torch.randn(3, 2, 2)
    assert torch.allclose(tensor_from_proto(tensor_to_proto(x), (3, 2, 2)), x)
    with pytest.raises(InvalidArgument):
        tensor_from_proto(tensor_to_proto(x), (3, 4, 1))
    bad = common_pb2.Tensor(values=[math.nan] * 12, shape=[3, 2, 2])
    with pytest.raises(InvalidArgument, match="NaN"):
        tensor_from_proto(bad, (3, 2, 2))
    v = torch.randn(8)
    assert torch.allclose(embedding_from_proto(embedding_to_proto(v), 8), v)
    with pytest.raises(InvalidArgument, match="dim"):
        embedding_from_proto(embedding_to_proto(v), 16)


def test_check_range_rejects_nan_and_bounds():
    check_range("p", 0.5, 0.0, 1.0, open_low=True)
    for value in (0.0, 1.5, math.nan):
        with pytest.raises(InvalidArgument):
            check_range("p", value, 0.0, 1.0, open_low=True)


@pytest.mark.parametrize(
    "shape, values, message",
    [
        ([3, 384], [0.0] * (3 * 384), None),
        ([0, 384], [], "shape"),
        ([33, 384], [0.0] * (33 * 384), "shape"),
        ([3, 100], [0.0] * 300, "shape"),
        ([3], [0.0] * 3, "shape"),
        ([2, 384], [0.0] * 10, "values"),
        ([1, 384], [float("nan")] + [0.0] * 383, "NaN"),
    ],
)
def test_text_states_are_checked_at_the_boundary(shape, values, message):
    msg = common_pb2.Tensor(shape=shape, values=values)
    if message is None:
        batch = text_states_from_proto(msg, rows=2)
        assert batch.states.shape == (2, 32, 384) and batch.mask[:, :3].all()
        assert not batch.mask[:, 3:].any()
    else:
        with pytest.raises(InvalidArgument, match=message):
            text_states_from_proto(msg)
