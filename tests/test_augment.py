import pytest
import torch

from datafree.augment import RandomShift, build_augmentation, translate
from datafree.errors import ConfigError


@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (5, 3, 32, 28)])
def test_translate_equals_kornias_affine_translation(shape):
    """The hand-written shift is kornia's RandomAffine(translate) for the same translations."""
    import kornia.augmentation as K

    affine = K.RandomAffine(degrees=0.0, translate=(0.125, 0.125), p=1.0)
    x = torch.randn(shape)
    params = affine.forward_parameters(x.shape)
    pixels = params["translations"]  # kornia's (x, y) translations, in pixels
    fractions = pixels / torch.tensor([shape[3], shape[2]], dtype=pixels.dtype)
    # the two build their sampling grids differently: float32 rounding differs by up to ~2e-5 (300 seeds);
    # a shift off by a tenth of a pixel would differ by ~0.1
    assert torch.allclose(translate(x, fractions), affine(x, params=params), atol=1e-4)


def test_random_shift_moves_each_sample_within_its_range():
    x = torch.zeros(2000, 1, 17, 17)
    x[:, :, 8, 8] = 1.0  # one bright pixel in the middle: the output's centre of mass is where it went
    out = RandomShift(0.125)(x)
    coords = torch.arange(17.0)
    mass = out.sum((1, 2, 3))
    moved = torch.stack([(out.sum(2)[:, 0] * coords).sum(1), (out.sum(3)[:, 0] * coords).sum(1)], 1) / mass[:, None] - 8
    assert torch.allclose(mass, torch.ones(2000), atol=1e-5)  # nothing leaves the frame at this size
    assert moved.abs().max() <= 0.125 * 17 + 1e-4
    assert (moved.abs() > 0.9 * 0.125 * 17).any(0).all()  # both axes reach the edges of the range
    assert (moved[:, 0] - moved[:, 1]).abs().mean() > 0.5  # independent draws per axis


def test_random_shift_passes_gradients_to_its_input():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    RandomShift()(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_augmentations_by_name():
    assert build_augmentation([], (1, 8, 8)) is None
    assert len(build_augmentation(["shift", "flip"], (1, 8, 8))) == 2
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        build_augmentation(["blur"], (1, 8, 8))
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_augmentation(["shift"], (20,))
