"""Losses and image-quality measures for the VQ autoencoder.

No pretrained perceptual network (LPIPS needs VGG weights) is available offline. In its place
the reconstruction loss adds, to L1 and MSE, an L1 on image *gradients* at three scales: it
penalises blurred or displaced edges, which L1/MSE alone trade for a blur. The adversarial
loss (hinge, patch discriminator) restores the remaining sharpness. See
docs/decisions/tokenizer-losses.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ReconstructionWeights:
    l1: float = 1.0
    mse: float = 1.0
    gradient: float = 0.5  # multi-scale gradient L1, the perceptual stand-in
    scales: int = 3


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along W and H: (B,C,H,W-1), (B,C,H-1,W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def gradient_loss(x_hat: torch.Tensor, x: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Mean over scales (full, 1/2, 1/4) of L1 between the images' gradients."""
    total = x.new_zeros(())
    for s in range(scales):
        if s:
            x, x_hat = F.avg_pool2d(x, 2), F.avg_pool2d(x_hat, 2)
        gx, gy = image_gradients(x)
        hx, hy = image_gradients(x_hat)
        total = total + (gx - hx).abs().mean() + (gy - hy).abs().mean()
    return total / scales


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, w: ReconstructionWeights
) -> dict[str, torch.Tensor]:
    """Per-term losses and their weighted sum under ``"total"``. Images in [-1, 1]."""
    terms = {
        "l1": (x_hat - x).abs().mean(),
        "mse": F.mse_loss(x_hat, x),
        "grad": gradient_loss(x_hat, x, w.scales) if w.gradient else x.new_zeros(()),
    }
    terms["total"] = w.l1 * terms["l1"] + w.mse * terms["mse"] + w.gradient * terms["grad"]
    return terms


# --- adversarial -------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(
    nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """taming-transformers' balance: scale the GAN term so that its gradient at the decoder's
    last layer has the same norm as the reconstruction term's."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# --- measures (images in [-1, 1]; per-image results) ----------------------------------------


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB on the [0, 1] scale, after clamping and 8-bit rounding of x_hat."""
    a = ((x_hat.clamp(-1, 1) + 1) * 127.5).round() / 255.0
    b = ((x + 1) * 127.5).round() / 255.0
    mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, valid region), per channel on
    the [0, 1] scale, averaged over channels."""
    a, b = (x_hat.clamp(-1, 1) + 1) / 2, (x + 1) / 2
    c = a.shape[1]
    win = _gaussian_window().to(a)[None, None].repeat(c, 1, 1, 1)  # (C,1,11,11)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.flatten(1).mean(1)


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """(B,) mean absolute image gradient: how much edge energy an image has. A blurry
    reconstruction has less than its original; the ratio recon/original measures sharpness."""
    gx, gy = image_gradients(x)
    return 0.5 * (gx.abs().flatten(1).mean(1) + gy.abs().flatten(1).mean(1))


def gmsd(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) gradient magnitude similarity deviation (Xue et al. 2014), lower is better: the
    spread of the per-pixel similarity between the two images' Prewitt gradient magnitudes
    (luma, [0, 1] scale). Blurred, missing or spurious edges all raise it."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    a = ((x_hat.clamp(-1, 1) + 1) / 2 * weights).sum(1, keepdim=True)
    b = ((x + 1) / 2 * weights).sum(1, keepdim=True)
    px = torch.tensor([[1.0, 0, -1], [1, 0, -1], [1, 0, -1]], device=x.device) / 3
    kernels = torch.stack([px, px.t()]).unsqueeze(1)  # (2,1,3,3)

    def magnitude(t: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(t, kernels)
        return g.pow(2).sum(1).sqrt()

    c = 170.0 / 255.0**2
    ma, mb = magnitude(a), magnitude(b)
    gms = (2 * ma * mb + c) / (ma**2 + mb**2 + c)
    return gms.flatten(1).std(1)


def code_statistics(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage (% of codes used at least once) and perplexity (exp of the code
    distribution's entropy; codebook_size at best)."""
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "usage_pct": float((counts > 0).double().mean() * 100),
        "perplexity": float(entropy.exp()),
        "codes_used": int((counts > 0).sum()),
    }
