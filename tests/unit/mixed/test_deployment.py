"""The MixedModel deployment class in-process: its contract's checks, edits that keep every
cell outside the editable ones, captions with scores, the stream, NOT_FOUND without a model."""

from __future__ import annotations

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.checkpoint import read_bundle_index, write_bundle_index
from tessera.common.errors import InvalidArgument, NotFound
from tessera.mixed.deployment import MixedModel
from tessera.v1 import common_pb2, mixed_pb2


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    build_random_bundle(out, "tiny", tiny=True, seed=0)
    return out


@pytest.fixture(scope="module")
def replica(bundle):
    replica = MixedModel.func_or_class(str(bundle), "cpu")
    yield replica
    replica.engine.close()


def grid(replica, tokens=None):
    g = replica.grid_size
    tokens = tokens if tokens is not None else [(7 * i) % 64 for i in range(g * g)]
    return common_pb2.TokenGrid(tokens=tokens, height=g, width=g)


async def test_an_edit_keeps_every_cell_outside_the_editable_ones(replica):
    source = grid(replica)
    n_cells = len(source.tokens)
    editable = [i % 3 == 0 for i in range(n_cells)]
    req = mixed_pb2.EditGridsRequest(
        source=source, instruction="make the circle red", n=3, seed=4, editable=editable,
        temperature=1.5,
    )  # fmt: skip
    res = await replica.EditGrids(req)
    assert res.seed == 4 and len(res.grids) == 3
    for g in res.grids:
        for i, (t, s) in enumerate(zip(g.tokens, source.tokens, strict=True)):
            if not editable[i]:
                assert t == s
    assert any(g.tokens != source.tokens for g in res.grids)  # the editable cells were drawn
    again = await replica.EditGrids(req)  # seeded: the same grids
    assert [list(g.tokens) for g in again.grids] == [list(g.tokens) for g in res.grids]


async def test_greedy_edits_and_generations_and_the_stream(replica):
    edit = mixed_pb2.EditGridsRequest(source=grid(replica), instruction="remove it", n=2)
    res = await replica.EditGrids(edit)
    assert res.grids[0].tokens == res.grids[1].tokens  # unset temperature: greedy
    t2i = mixed_pb2.GenerateGridsRequest(prompt="a red circle", n=2, seed=9)
    unary = await replica.GenerateGrids(t2i)
    stream = mixed_pb2.GenerateGridsStreamRequest(request=t2i, stream_every=4)
    events = [e async for e in replica.GenerateGridsStream(stream)]
    assert events[-1].done and [list(g.tokens) for g in events[-1].grids] == [
        list(g.tokens) for g in unary.grids
    ]
    partial = events[0].grids[0].tokens
    assert not events[0].done and -1 in partial and events[0].progress.stage == "mixed"


async def test_captions_are_sorted_by_score(replica):
    res = await replica.CaptionGrids(
        mixed_pb2.CaptionGridsRequest(grid=grid(replica), n=4, temperature=1.0, seed=1)
    )
    scores = [c.score for c in res.captions]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert all(s <= 0 for s in scores)
    greedy = await replica.CaptionGrids(mixed_pb2.CaptionGridsRequest(grid=grid(replica)))
    assert len(greedy.captions) == 1


@pytest.mark.parametrize(
    "request_",
    [
        mixed_pb2.EditGridsRequest(instruction="  ", n=1),
        mixed_pb2.EditGridsRequest(instruction="x", n=9),
        mixed_pb2.EditGridsRequest(instruction="x", editable=[True]),
        mixed_pb2.EditGridsRequest(instruction="x", guidance_scale=21),
        mixed_pb2.EditGridsRequest(instruction="x", temperature=0),
        mixed_pb2.EditGridsRequest(instruction="x", top_k=65),
    ],
)
async def test_bad_edits_are_invalid_arguments(replica, request_):
    if not request_.HasField("source"):
        request_.source.CopyFrom(grid(replica))
    with pytest.raises(InvalidArgument):
        await replica.EditGrids(request_)


async def test_bad_grids_and_captions_are_invalid_arguments(replica):
    with pytest.raises(InvalidArgument):  # another size
        await replica.EditGrids(
            mixed_pb2.EditGridsRequest(
                source=common_pb2.TokenGrid(tokens=[0] * 4, height=2, width=2), instruction="x"
            )  # fmt: skip
        )
    with pytest.raises(InvalidArgument):  # a code past the codebook
        await replica.CaptionGrids(mixed_pb2.CaptionGridsRequest(grid=grid(replica, [64] * 16)))
    with pytest.raises(InvalidArgument):  # several greedy captions
        await replica.CaptionGrids(mixed_pb2.CaptionGridsRequest(grid=grid(replica), n=2))


async def test_a_bundle_without_a_mixed_model_answers_not_found(bundle, tmp_path):
    index = read_bundle_index(bundle)
    for component in index["components"]:
        if component != "mixed":
            (tmp_path / component).symlink_to(bundle / component)
    write_bundle_index(tmp_path, "no-mixed")
    replica = MixedModel.func_or_class(str(tmp_path), "cpu")
    replica.check_health()
    with pytest.raises(NotFound):
        await replica.CaptionGrids(mixed_pb2.CaptionGridsRequest())
    with pytest.raises(NotFound):
        await replica.GenerateGrids(mixed_pb2.GenerateGridsRequest(prompt="x"))


async def test_text_to_image_defaults_to_its_own_scale_when_the_checkpoint_sets_one(replica):
    cfg = replica.model.config
    assert cfg.t2i_guidance is None and cfg.t2i_scale == cfg.text_guidance
    req = mixed_pb2.GenerateGridsRequest(prompt="a red circle", seed=3, temperature=1.5)
    at = {}
    for scale in (cfg.text_guidance, 20.0):
        explicit = mixed_pb2.GenerateGridsRequest()
        explicit.CopyFrom(req)
        explicit.guidance_scale = scale
        at[scale] = [list(g.tokens) for g in (await replica.GenerateGrids(explicit)).grids]
    assert at[cfg.text_guidance] != at[20.0]  # the scale changes what is drawn
    try:
        cfg.t2i_guidance = 20.0  # the checkpoint's own text -> image default
        default = [list(g.tokens) for g in (await replica.GenerateGrids(req)).grids]
    finally:
        cfg.t2i_guidance = None
    assert default == at[20.0]
