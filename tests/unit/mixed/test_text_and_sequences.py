import pytest
import torch

from tessera.mixed.sequences import Builder, Layout, collate
from tessera.mixed.text import SPECIALS, TextCodec, Vocab, train_text_tokenizer

WORDS = ["make the circle red", "remove the blue square", "a small red circle at the top left",
         "woman running: dark skin tone", "give it a dark skin tone"] * 4  # fmt: skip


@pytest.fixture(scope="module")
def codec():
    return TextCodec(train_text_tokenizer(WORDS, vocab_size=300), max_tokens=12)


def test_specials_come_first_and_text_round_trips(codec, tmp_path):
    for i, name in enumerate(SPECIALS):
        assert codec.tokenizer.token_to_id(name) == i
    ids = codec.encode("Make the circle RED")
    assert all(i >= len(SPECIALS) for i in ids)
    assert codec.decode(ids) == "make the circle red"
    assert len(codec.encode(" ".join(["circle"] * 50))) == 12  # cut to max_tokens
    codec.save(tmp_path)
    assert TextCodec.load(tmp_path, 12).encode("make the circle red") == codec.encode(
        "make the circle red"
    )


def test_a_tokenizer_without_the_specials_is_refused():
    from tokenizers import Tokenizer, models

    plain = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    with pytest.raises(ValueError, match="special token"):
        TextCodec(plain, 8)


LAYOUT = Layout(Vocab(text=20, image=10), text_len=5, n_cells=4)


def test_sequences_put_the_loss_on_what_the_model_writes():
    b = Builder(LAYOUT)
    v = LAYOUT.vocab
    t2i = b.t2i([10, 11], [1, 2, 3, 4])
    assert t2i.tokens == [v.special("<t2i>"), 10, 11, v.special("<boi>"), 21, 22, 23, 24,
                          v.special("<eoi>")]  # fmt: skip
    assert t2i.tokens[t2i.output_from :] == [21, 22, 23, 24, v.special("<eoi>")]
    assert t2i.slots[4:8] == [9, 10, 11, 12]  # output-image cells: text_len + n_cells + c
    i2t = b.i2t([0, 0, 9, 9], [12, 13])
    assert i2t.tokens[i2t.output_from :] == [12, 13, v.special("<eot>")]
    assert i2t.slots[2:6] == [5, 6, 7, 8]  # input-image cells: text_len + c
    edit = b.edit([14], [1, 1, 1, 1], [2, 2, 2, 2])
    dropped = b.edit([], None, [2, 2, 2, 2])  # both conditions dropped (guidance)
    assert edit.tokens[edit.output_from :] == dropped.tokens[dropped.output_from :]
    assert b.prompt(edit).tokens[-1] == v.special("<boi>")
    assert len(edit.tokens) <= LAYOUT.max_len
    with pytest.raises(ValueError, match="4 codes"):
        b.t2i([10], [1, 2])


def test_copy_cells_name_output_positions_by_the_cell_they_predict():
    layout = Layout(Vocab(text=20, image=10), text_len=5, n_cells=4, copy_cells=True)
    t2i = Builder(layout).t2i([10, 11], [1, 2, 3, 4])
    # <boi> predicts cell 0 (slot 9), cells 0-2 predict cells 1-3, cell 3 predicts <eoi>
    assert t2i.slots[3:9] == [9, 10, 11, 12, layout.marker_slot, layout.marker_slot]
    cells = torch.arange(4)
    assert layout.output_slot(cells).tolist() == [layout.output_slot(c) for c in range(4)]
    i2t = Builder(layout).i2t([0, 0, 9, 9], [12, 13])
    assert i2t.slots[2:6] == [5, 6, 7, 8]  # input images are unchanged


def test_collate_pads_right_and_ignores_everything_but_outputs():
    b = Builder(LAYOUT)
    seqs = [b.t2i([10, 11, 12], [1, 2, 3, 4]), b.i2t([1, 2, 3, 4], [15])]
    batch = collate(seqs, pad=0)
    assert batch["inputs"].shape == batch["targets"].shape == (2, len(seqs[0].tokens) - 1)
    for i, s in enumerate(seqs):
        want = torch.tensor(s.tokens[s.output_from :])
        got = batch["targets"][i][batch["targets"][i] >= 0]
        assert torch.equal(got, want)
    assert not batch["mask"][1, len(seqs[1].tokens) :].any() and batch["mask"][1, :3].all()


def test_keep_labels_cells_the_source_has_right_and_feeds_the_code():
    """With ``<keep>`` an edit's output cell equal to the source's is labelled ``<keep>``;
    the input stays the code (what a sampler feeds back), and only edits with a source get
    it."""
    layout = Layout(Vocab(text=20, image=10, keep=True), text_len=5, n_cells=4)
    v, b = layout.vocab, Builder(layout)
    assert v.size == 31 and v.keep_id == 30 and v.image_id(9) == 29 and not v.is_image(30)
    edit = b.edit([14], [1, 2, 3, 4], [1, 7, 3, 8])
    out = edit.output_from
    assert edit.tokens[out : out + 4] == [21, 27, 23, 28]  # inputs: the target's codes
    assert edit.labels[out : out + 5] == [30, 27, 30, 28, v.special("<eoi>")]
    assert edit.labels[:out] == edit.tokens[:out]
    batch = collate([edit, b.t2i([10], [1, 7, 3, 8])], pad=0)
    want = [30, 27, 30, 28, v.special("<eoi>")]
    assert batch["targets"][0][batch["targets"][0] >= 0].tolist() == want
    assert 30 not in batch["targets"][1].tolist() and 30 not in batch["inputs"].tolist()
    assert b.edit([], None, [1, 7, 3, 8]).labels is None  # no source: nothing to keep
    with pytest.raises(ValueError, match="no <keep>"):
        _ = LAYOUT.vocab.keep_id
