import torch

from tessera.tokenizer.quantizer import EMAQuantizer, FSQuantizer, L2Quantizer


def test_straight_through_gradient_reaches_the_encoder():
    for q in (L2Quantizer(16, 4), EMAQuantizer(16, 4), FSQuantizer((3, 3, 3, 3))):
        z = torch.randn(2, 4, 3, 3, requires_grad=True)
        out = q(z)
        (out.z_q.sum() + out.loss).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_l2_codes_are_unit_vectors_and_nearest_is_cosine():
    q = L2Quantizer(32, 8).eval()
    z = torch.randn(1, 8, 2, 2)
    out = q(z)
    torch.testing.assert_close(out.z_q.norm(dim=1), torch.ones(1, 2, 2))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    cos = torch.nn.functional.normalize(flat, dim=-1) @ q.codebook().t()
    assert torch.equal(out.indices.flatten(), cos.argmax(-1))


def test_dead_codes_are_restarted_onto_encoder_outputs():
    torch.manual_seed(0)
    q = L2Quantizer(64, 4, restart_threshold=0.5, usage_decay=0.5).train()
    q.embedding.data[:] = torch.tensor([1.0, 0, 0, 0])  # every code identical: only one used
    z = torch.randn(8, 4, 4, 4)
    for _ in range(30):
        q(z)
    used = q(z).indices.unique().numel()
    assert used > 20  # restarts spread the codebook over the data


def test_ema_codebook_moves_to_the_data():
    torch.manual_seed(0)
    q = EMAQuantizer(4, 2, decay=0.5).train()
    z = torch.tensor([3.0, -3.0]).view(1, 2, 1, 1).repeat(16, 1, 1, 1)
    for _ in range(20):
        q(z)
    nearest = q.codebook()[q(z).indices[0, 0, 0]]
    torch.testing.assert_close(nearest, torch.tensor([3.0, -3.0]), atol=1e-2, rtol=0)


def test_fsq_indices_and_lookup_agree():
    q = FSQuantizer((8, 5, 5, 5))
    assert q.size == 1000
    codes = q.codebook()  # (1000, 4)
    assert codes.shape == (1000, 4) and codes.unique(dim=0).shape[0] == 1000
    assert torch.equal(q.nearest(codes), torch.arange(1000))
