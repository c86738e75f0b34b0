import pytest
import torch

from tessera.mixed.generate import (
    edit_weights,
    generate_images,
    generate_text,
    left_pad,
    score_sequences,
    text_weights,
)
from tessera.mixed.model import MixedConfig, MixedTransformer
from tessera.mixed.sequences import Builder, collate

torch.manual_seed(0)
CONFIG = MixedConfig.tiny()
B = Builder(CONFIG.layout)
W0 = len(("<pad>", "<eot>", "<boi>", "<eoi>", "<t2i>", "<i2t>", "<edit>"))


COPY = MixedConfig.tiny(copy_cells=True)


def _model(seed=0, config=CONFIG):
    torch.manual_seed(seed)
    return MixedTransformer(config).eval()


def test_forward_shapes_and_loss_on_outputs_only():
    model = _model()
    batch = collate(
        [B.t2i([W0, W0 + 1], [1, 2, 3, 4]), B.edit([W0 + 2], [0, 1, 2, 3], [3, 2, 1, 0])], 0
    )
    logits, loss = model(batch["inputs"], batch["slots"], batch["targets"])
    assert logits.shape == (*batch["inputs"].shape, CONFIG.layout.vocab.size)
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(88.0)).item()) < 0.5


@pytest.mark.parametrize("config", [CONFIG, COPY], ids=["separate", "copy_cells"])
def test_cached_sampling_matches_the_full_forward_whatever_the_padding(config):
    model = _model(1, config)
    B = Builder(config.layout)
    short = B.prompt(B.t2i([W0], [0, 0, 0, 0]))
    long = B.prompt(B.edit([W0, W0 + 3, W0 + 4], [5, 6, 7, 8], [0, 0, 0, 0]))
    tokens, slots, mask = left_pad([short, long], pad=0)
    cache = model.new_cache(2)
    cached = model.prefill(tokens, slots, mask, cache)
    for i, p in enumerate([short, long]):
        full, _ = model(torch.tensor([p.tokens]), torch.tensor([p.slots]))
        assert torch.allclose(cached[i], full[0, -1], atol=1e-5)
    # one decode step equals the full forward on the prompt plus that token
    token = torch.tensor([CONFIG.layout.vocab.image_id(3)] * 2)
    slot = torch.tensor([config.layout.output_slot(0)] * 2)  # output cell 0's token
    step = model.decode(token, slot, cache)
    for i, p in enumerate([short, long]):
        seq = torch.tensor([[*p.tokens, int(token[i])]])
        full, _ = model(seq, torch.tensor([[*p.slots, int(slot[i])]]))
        assert torch.allclose(step[i], full[0, -1], atol=1e-5)


def test_forced_cells_are_kept_and_the_rest_are_image_codes():
    model = _model(2)
    prompt = B.prompt(B.edit([W0], [1, 2, 3, 4], [0, 0, 0, 0]))
    forced = torch.tensor([[7, -1, -1, 9]])
    g = torch.Generator().manual_seed(0)
    codes = generate_images(model, [[prompt]], [1.0], forced=forced, generator=g)
    assert codes[0, 0] == 7 and codes[0, 3] == 9
    assert ((codes >= 0) & (codes < CONFIG.image_vocab)).all()


def test_guidance_weights():
    assert sum(edit_weights(1.5, 4.0)) == 1.0 and sum(text_weights(3.0)) == 1.0
    model = _model(3)
    full = B.prompt(B.t2i([W0, W0 + 1], [0, 0, 0, 0]))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    # weights [1, 0]: the unconditional row has no say; equals sampling the prompt alone
    a = generate_images(
        model, [[full, B.prompt(B.t2i([], [0, 0, 0, 0]))]], [1.0, 0.0], generator=g1
    )
    b = generate_images(model, [[full]], [1.0], generator=g2)
    assert torch.equal(a, b)


def test_copy_cells_embed_the_predicted_cell_as_the_source_cell():
    """With ``copy_cells`` the position that writes cell c (the output ``<boi>`` for c = 0,
    else cell c-1's token) carries source cell c's slot embedding plus the output vector."""
    model = _model(4, COPY)
    layout = COPY.layout
    with torch.no_grad():
        model.output_emb.normal_()
    token = torch.zeros(1, layout.n_cells, dtype=torch.long)
    source = torch.tensor([[layout.text_len + c for c in range(layout.n_cells)]])
    predicting = torch.tensor([[layout.output_boi_slot] + [
        layout.output_slot(c) for c in range(layout.n_cells - 1)
    ]])  # fmt: skip
    assert torch.allclose(
        model._embed(token, predicting), model._embed(token, source) + model.output_emb
    )
    # the last cell predicts <eoi>: a marker, as the <eoi> itself
    assert layout.output_slot(layout.n_cells - 1) == layout.marker_slot


@pytest.mark.parametrize("config", [CONFIG, COPY], ids=["separate", "copy_cells"])
def test_a_tiny_model_learns_to_edit_and_caption(config):
    """Overfit three tasks on a handful of sequences: the whole path (sequences, loss,
    cached sampling, captions) must carry what training put in."""
    torch.manual_seed(0)
    model = MixedTransformer(config)
    B = Builder(config.layout)
    seqs = [B.edit([W0], [1, 2, 3, 4], [1, 2, 3, 5]), B.edit([W0 + 1], [1, 2, 3, 4], [6, 2, 3, 4]),
            B.i2t([1, 2, 3, 4], [W0 + 5, W0 + 6]), B.t2i([W0 + 7], [8, 8, 9, 9])]  # fmt: skip
    batch = collate(seqs, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        _, loss = model(batch["inputs"], batch["slots"], batch["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    edits = generate_images(model, [[B.prompt(seqs[0])], [B.prompt(seqs[1])]], [1.0], temperature=0)
    assert edits.tolist() == [[1, 2, 3, 5], [6, 2, 3, 4]]
    text, score = generate_text(model, [B.prompt(seqs[2])])
    assert text == [[W0 + 5, W0 + 6]] and score[0] > -0.5
    right, wrong = score_sequences(model, [seqs[2], B.i2t([1, 2, 3, 4], [W0 + 9, W0 + 6])])
    assert right > wrong


KEEP = MixedConfig.tiny(keep_token=True)


def _head_preferring(model: MixedTransformer, token: int) -> None:
    """Replace the head by one that scores ``token`` 10 and every other id 0."""
    vocab = model.config.layout.vocab.size
    head = torch.nn.Linear(model.config.n_embd, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 10.0
    model.lm_head = head


def test_keep_writes_the_source_code_and_is_never_drawn_without_a_source():
    """A head that always prefers ``<keep>``: every edit cell becomes the source's code,
    forced cells still win, a cell without a source and text -> image draw codes."""
    model = _model(5, KEEP)
    b = Builder(KEEP.layout)
    _head_preferring(model, KEEP.layout.vocab.keep_id)
    source = [1, 2, 3, 4]
    prompt = b.prompt(b.edit([W0], source, [0, 0, 0, 0]))
    sources = torch.tensor([source])
    codes = generate_images(model, [[prompt]], [1.0], temperature=0, sources=sources)
    assert codes.tolist() == [source]
    forced = torch.tensor([[-1, 9, -1, -1]])
    codes = generate_images(model, [[prompt]], [1.0], temperature=0, sources=sources,
                            forced=forced)  # fmt: skip
    assert codes.tolist() == [[1, 9, 3, 4]]
    partial = torch.tensor([[1, -1, 3, -1]])  # -1: no source there, so a code is drawn
    codes = generate_images(model, [[prompt]], [1.0], temperature=0, sources=partial)
    assert codes[0, 0] == 1 and codes[0, 2] == 3 and codes[0, 1] == 0  # argmax of zeros
    t2i = b.prompt(b.t2i([W0], [0, 0, 0, 0]))
    g = torch.Generator().manual_seed(0)
    codes = generate_images(model, [[t2i]], [1.0], generator=g)
    assert ((codes >= 0) & (codes < KEEP.image_vocab)).all()
