"""Graded corruptions: parameters of §4.4, growth with severity, per-image determinism, references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage import color

from xbench.datasets import _corruptions as C
from xbench.errors import XbenchError


def _rectangles(n: int = 12, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Coloured rectangles on gray: edges and flat areas, like real images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, size, size), 0.3)
    yy = torch.arange(size)[None, :, None]
    xx = torch.arange(size)[None, None, :]
    for _ in range(6):
        top = torch.randint(0, size - 8, (n, 2), generator=g)
        ext = torch.randint(4, size // 3, (n, 2), generator=g)
        m = ((yy >= top[:, 0, None, None]) & (yy < (top[:, 0] + ext[:, 0])[:, None, None])
             & (xx >= top[:, 1, None, None]) & (xx < (top[:, 1] + ext[:, 1])[:, None, None]))
        x = torch.where(m[:, None], torch.rand(n, 3, 1, 1, generator=g), x)
    return torch.round(x * 255) / 255


def _rmse255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean(dim=(1, 2, 3)).sqrt() * 255


def test_splitmix_matches_an_independent_uint64_implementation():
    seeds = torch.tensor([0, 1, 12345, -7, 2**62 + 3], dtype=torch.int64)
    got = C._hash_bits(seeds, 1, 5).numpy().view(np.uint64)
    mask = np.uint64(2**64 - 1)

    def mix(z):
        z = np.uint64(z)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & mask
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & mask
        return z ^ (z >> np.uint64(31))

    gamma = 0x9E3779B97F4A7C15
    with np.errstate(over="ignore"):
        for row, s in enumerate(seeds.tolist()):
            key = mix((s % 2**64 * gamma + 1) % 2**64)
            for i in range(5):
                assert got[row, i] == mix((int(key) + (i + 1) * gamma) % 2**64)


def test_hashed_normals_are_standard_normal():
    z = C.hash_normal(torch.tensor([3, 99]), 20001)
    assert z.shape == (2, 20001)
    for row in z:
        assert abs(float(row.mean())) < 0.03 and abs(float(row.std()) - 1) < 0.03
        assert stats.kstest(row.numpy(), "norm").pvalue > 0.01
    assert abs(float(np.corrcoef(z[0].numpy(), z[1].numpy())[0, 1])) < 0.03  # seeds independent


@pytest.mark.parametrize("kind", C.CORRUPTIONS)
def test_effect_grows_with_severity(kind):
    x = _rectangles()
    rmse = [float(_rmse255(C.corrupt(x, kind, s, C.corruption_seeds(torch.arange(len(x)), kind, s)), x).mean())
            for s in C.SEVERITIES]
    assert all(b > a for a, b in zip(rmse, rmse[1:])), (kind, rmse)
    assert rmse[0] > 3, (kind, rmse)


def test_gaussian_noise_scale_matches_the_table():
    x = torch.full((4, 1, 64, 64), 128 / 255)
    for s, c in zip((1, 2, 3), C.GAUSSIAN_NOISE_SD[:3]):
        y = C.corrupt(x, "gaussian_noise", s, torch.arange(4), quantize=False)
        assert float((y - x).std()) == pytest.approx(c, rel=0.05)
    # the source's sanity figure (one DermaMNIST image): 19.9, 29.0, 42.0, 57.3, 75.9 in uint8 units
    img = _rectangles(4)
    rmse = [float(_rmse255(C.corrupt(img, "gaussian_noise", s, torch.arange(4)), img).mean()) for s in C.SEVERITIES]
    assert rmse == pytest.approx([19.9, 29.0, 42.0, 57.3, 75.9], rel=0.1)


@pytest.mark.parametrize("kind", C.CORRUPTIONS)
def test_same_result_alone_in_a_batch_and_in_any_order(kind):
    x = _rectangles(6)
    seeds = C.corruption_seeds(torch.arange(6), kind, 4)
    batch = C.corrupt(x, kind, 4, seeds)
    assert torch.equal(batch, C.corrupt(x, kind, 4, seeds))  # deterministic
    for i in (0, 4):
        assert torch.equal(C.corrupt(x[i:i + 1], kind, 4, seeds[i:i + 1]), batch[i:i + 1])
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    assert torch.equal(C.corrupt(x[order], kind, 4, seeds[order]), batch[order])
    if kind not in ("contrast", "brightness"):  # random ones change with the seed
        assert not torch.equal(C.corrupt(x, kind, 4, seeds + 1), batch)


@pytest.mark.parametrize("kind", C.CORRUPTIONS)
def test_output_range_dtype_and_8bit_steps(kind):
    x = _rectangles(3)
    y = C.corrupt(x, kind, 5, torch.arange(3))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-3)
    free = C.corrupt(x, kind, 5, torch.arange(3), quantize=False)
    assert float((free - y).max()) < 1 / 255 + 1e-5 and float((free - y).min()) > -1e-3  # truncation


def _motion_blur_reference(img: np.ndarray, angle_deg: float, radius: int, sigma: float) -> np.ndarray:
    """The definition, one image at a time: Σ_i w_i · x(p + ceil(i·(sin a, cos a) − ½)), edges replicated."""
    taps = np.arange(2 * radius + 1)
    w = np.exp(-(taps**2) / (2 * sigma**2))
    w /= w.sum()
    pad = 2 * radius
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, wd = img.shape[1:]
    out = np.zeros_like(img, dtype=np.float64)
    a = np.deg2rad(angle_deg)
    for i in taps:
        dy, dx = math.ceil(i * np.sin(a) - 0.5), math.ceil(i * np.cos(a) - 0.5)
        out += w[i] * padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + wd]
    return out


def _dot(n: int, size: int = 48, row: int = 24, col: int = 24) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, :, row, col] = 1.0
    return x


def test_motion_blur_trails_a_dot_the_imagenet_c_way(monkeypatch):
    """A bright dot at column 24, blurred at 0°: pixel p takes x(p + i), so the trail runs from the
    dot towards column 4 with the taps' weights (the earlier p − i put it on columns 24–44)."""
    monkeypatch.setattr(C, "motion_angles", lambda seeds: torch.zeros(len(seeds)))
    w = C.motion_kernel(10, 3.0)  # severity 1: 21 taps
    expected = torch.zeros(48, 48)
    expected[24, 24 - torch.arange(21)] = w
    got = C.corrupt(_dot(1), "motion_blur", 1, torch.arange(1), quantize=False)[0, 0]
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=0)
    # in 8-bit, as the source sees it: 59 grey levels at the dot, 1 level still at 8 px (w_8·255 = 1.7)
    levels = (C.corrupt(_dot(1), "motion_blur", 1, torch.arange(1))[0, 0] * 255).round().long()
    assert torch.nonzero(levels[24]).flatten().tolist() == list(range(16, 25))
    assert int(levels[24, 24]) == 59 and int(levels.sum(0)[25:].sum()) == 0 and int(levels.sum()) == int(levels[24].sum())


def test_motion_blur_at_45_degrees(monkeypatch):
    """At 45° the offset of tap i is ceil(i·0.7071 − ½) on both axes: 0, 1, 1, 2, 3, 4, 4, 5, 6, 6…
    (taps that land on one pixel add up); the trail runs up and to the left of the dot."""
    monkeypatch.setattr(C, "motion_angles", lambda seeds: torch.full((len(seeds),), 45.0))
    w = C.motion_kernel(10, 3.0).double()
    offsets = [0, 1, 1, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 11, 11, 12, 13, 13, 14]  # by hand, i = 0..20
    expected = torch.zeros(48, 48, dtype=torch.float64)
    for i, s in enumerate(offsets):
        expected[24 - s, 24 - s] += w[i]
    got = C.corrupt(_dot(1), "motion_blur", 1, torch.arange(1), quantize=False)[0, 0].double()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("severity", [1, 5])
def test_motion_blur_matches_imagecorruptions(severity):
    """Against ImageNet-C's own code (what imgaug's imgcorruptlike, and so Treyer, ran) at each image's
    angle, on uint8 images: the blurred values agree to 1e-3 grey levels (float32 against float64);
    after the cast to uint8, to ±1 level (both truncate, and float error decides at whole levels)."""
    pytest.importorskip("imagecorruptions")
    from imagecorruptions.corruptions import _motion_blur

    x = torch.cat([_rectangles(3, size=48), _dot(1).expand(1, 3, 48, 48)])
    seeds = C.corruption_seeds(torch.arange(4), "motion_blur", severity)
    angles = C.motion_angles(seeds).double()
    free = (C.corrupt(x, "motion_blur", severity, seeds, quantize=False) * 255).double().numpy()
    levels = (C.corrupt(x, "motion_blur", severity, seeds) * 255).round().numpy()
    radius, sigma = C.MOTION_BLUR[severity - 1]
    for i in range(4):
        img = np.round(x[i].permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)
        ref = np.clip(_motion_blur(img, radius, sigma, float(angles[i])), 0, 255)
        np.testing.assert_allclose(free[i].transpose(1, 2, 0), ref, atol=1e-3, rtol=0)
        assert np.abs(levels[i].transpose(1, 2, 0) - np.uint8(ref)).max() <= 1


@pytest.mark.parametrize("severity", [1, 5])
def test_motion_blur_matches_a_per_image_reference(severity):
    x = _rectangles(4, size=40)
    seeds = C.corruption_seeds(torch.arange(4), "motion_blur", severity)
    angles = C.motion_angles(seeds)
    assert float(angles.abs().max()) <= 45 and len(set(angles.tolist())) == 4
    got = C.corrupt(x, "motion_blur", severity, seeds, quantize=False)
    radius, sigma = C.MOTION_BLUR[severity - 1]
    for i in range(4):
        ref = _motion_blur_reference(x[i].double().numpy(), float(angles[i]), radius, sigma)
        np.testing.assert_allclose(got[i].numpy(), np.clip(ref, 0, 1), atol=1e-5)


def test_brightness_is_the_hsv_value_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=g)
    x[0, :, 0, 0] = 0.0  # black pixel: becomes gray c
    for s, c in zip(C.SEVERITIES, C.BRIGHTNESS):
        got = C.corrupt(x, "brightness", s, torch.arange(3), quantize=False)
        for i in range(3):
            hsv = color.rgb2hsv(x[i].permute(1, 2, 0).double().numpy())
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
            ref = np.clip(color.hsv2rgb(hsv), 0, 1)
            np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    gray = x[:, :1]
    got = C.corrupt(gray, "brightness", 3, torch.arange(3), quantize=False)
    torch.testing.assert_close(got, (gray + 0.3).clamp(0, 1))


def test_contrast_and_speckle_follow_their_formulas():
    x = _rectangles(2)
    got = C.corrupt(x, "contrast", 2, torch.arange(2), quantize=False)
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(got, ((x - mean) * 0.3 + mean).clamp(0, 1))
    black = torch.zeros(2, 1, 8, 8)
    assert torch.equal(C.corrupt(black, "speckle_noise", 5, torch.arange(2)), black)  # multiplicative


def test_legacy_minmax_stretches_each_image_first():
    x = _rectangles(2) * 2 - 1  # the source's clean [-1, 1] tensors
    x[1] = x[1] * 0.5  # a different range per image
    legacy = C.corrupt(x, "contrast", 1, torch.arange(2), legacy_minmax=True)
    stretched = torch.stack([(im - im.min()) / (im.max() - im.min()) for im in x])
    assert torch.equal(legacy, C.corrupt(stretched, "contrast", 1, torch.arange(2)))
    assert float(legacy.min()) >= 0
    assert not torch.equal(legacy, C.corrupt(x, "contrast", 1, torch.arange(2)))

    class Data:
        info = {"corruption_options": {"legacy_minmax": True}}

    assert C.corruption_options(Data()) == {"legacy_minmax": True}
    assert C.corruption_options(object()) == {}


def test_corruption_seeds_depend_on_index_kind_and_severity_only():
    a = C.corruption_seeds(torch.arange(10), "gaussian_noise", 2)
    assert torch.equal(C.corruption_seeds(torch.tensor([7, 3]), "gaussian_noise", 2), a[[7, 3]])
    assert len(set(a.tolist())) == 10
    assert not torch.equal(a, C.corruption_seeds(torch.arange(10), "gaussian_noise", 3))
    assert not torch.equal(a, C.corruption_seeds(torch.arange(10), "speckle_noise", 2))
    assert not torch.equal(a, C.corruption_seeds(torch.arange(10), "gaussian_noise", 2, seed=1))


def test_bad_arguments_are_explained():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(XbenchError, match='did you mean "motion_blur"'):
        C.corrupt(x, "motion_blurr", 1, torch.arange(2))
    for bad in (0, 6, 2.5, True):
        with pytest.raises(XbenchError, match="severity must be an integer 1..5"):
            C.corrupt(x, "contrast", bad, torch.arange(2))
    with pytest.raises(XbenchError, match=r"one integer seed per image: a \(2,\) int64"):
        C.corrupt(x, "contrast", 1, torch.arange(3))
    with pytest.raises(XbenchError, match=r"float \(N, C, H, W\)"):
        C.corrupt(x[0], "contrast", 1, torch.arange(2))


@pytest.mark.gpu
def test_same_corruption_on_cpu_and_gpu():
    x = _rectangles(4)
    for kind in C.CORRUPTIONS:
        seeds = C.corruption_seeds(torch.arange(4), kind, 3)
        cpu = C.corrupt(x, kind, 3, seeds)
        gpu = C.corrupt(x.cuda(), kind, 3, seeds.cuda()).cpu()
        assert float((cpu - gpu).abs().max()) <= 1 / 255 + 1e-6
        assert float((cpu != gpu).float().mean()) < 1e-3, kind
