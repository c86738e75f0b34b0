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
