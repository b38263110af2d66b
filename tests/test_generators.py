"""The DCGAN generator: its default width (recorded by the run that chose it), and its fused upsampling
convolution, which computes what the plain layers compute."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import datafree  # noqa: F401  (imports the generators package in its order)
from datafree.build import build_generator
from datafree.config import GeneratorConfig, read_toml
from datafree.models import count_flops, count_parameters, create_model
from datafree.spec import InputSpec
from generators import dcgan, resize_conv
from generators.dcgan import DCGANGenerator, default_width
from generators.resize_conv import ResizeConvSequential, upsample_conv


def test_the_default_width_is_the_widest_generator_costing_no_more_than_the_networks_it_serves() -> None:
    shape = (1, 32, 32)
    info = InputSpec(shape, 10, (0.5,), (0.25,))
    teacher, student = create_model("digits_cnn_half", 10, shape), create_model("mlp", 10, shape)
    served = count_flops(teacher, shape) + count_flops(student, shape)
    by_parameters = default_width(info, 100, count_parameters(student))
    width = default_width(info, 100, count_parameters(student), served)
    assert by_parameters == 64 and 8 < width < by_parameters  # the MLP's 297k parameters alone asked for 64

    def flops(w: int) -> int:
        return count_flops(DCGANGenerator(info, width=w), (100,))
    assert flops(width) <= served < flops(width + 1)
    assert default_width(info, 100, count_parameters(student), reference_flops=1) == 8  # never narrower than 8
    state = torch.get_rng_state()
    default_width(info, 100, count_parameters(student), served)
    assert torch.equal(torch.get_rng_state(), state)  # sizing draws nothing: a seed's run is the run it was
    built = build_generator(GeneratorConfig(), info, torch.device("cpu"), torch.contiguous_format, teacher, student, 64)
    assert built.project.out_features == 2 * width * 8 * 8  # the run sizes it by both networks


def test_a_run_records_the_width_it_chose_and_resumes_with_it_after_the_rule_changed(digits_teacher, tmp_path,
                                                                                     monkeypatch) -> None:
    run_dir = tmp_path / "run"
    datafree.distill(digits_teacher, "digits_cnn_half", "ours", steps=2, run_dir=run_dir, quiet=True,
                     overrides={"trainer.eval_every": 0, "trainer.image_every": 0})
    assert read_toml(run_dir / "config.toml")["generator"]["args"] == {"width": 16}  # twice the 8x8 image's side
    (run_dir / "student.pt").unlink()  # stopped after its last checkpoint: the resume builds the run again
    monkeypatch.setattr(dcgan, "default_width", lambda *args, **kwargs: 8)  # a later rule would choose 8
    result = datafree.resume(run_dir, quiet=True)
    assert not result.already_finished and (run_dir / "student.pt").is_file()
    datafree.distill(digits_teacher, "digits_cnn_half", "ours", steps=1, run_dir=tmp_path / "new", quiet=True,
                     overrides={"trainer.eval_every": 0, "trainer.image_every": 0})
    assert read_toml(tmp_path / "new" / "config.toml")["generator"]["args"] == {"width": 8}  # a new run: the rule


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 7), (2, 6, 8, 8), (1, 2, 1, 1)])
def test_upsample_conv_matches_upsample_then_conv_with_gradients(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 4, 3, padding=1, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    plain = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    fused = upsample_conv(x, conv)
    assert fused.shape == plain.shape
    torch.testing.assert_close(fused, plain)
    upstream = torch.randn_like(plain)
    wanted = torch.autograd.grad((plain * upstream).sum(), [x, *conv.parameters()])
    got = torch.autograd.grad((fused * upstream).sum(), [x, *conv.parameters()])
    for g, w in zip(got, wanted):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape, fused_pairs", [((3, 32, 28), 2), ((1, 8, 8), 0)])
def test_dcgan_body_fuses_large_enough_images_and_keeps_the_plain_layers(
        shape: tuple[int, ...], fused_pairs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    generator = DCGANGenerator(InputSpec(shape, 10, (0.5,) * shape[0], (0.25,) * shape[0]), width=8).eval()
    assert isinstance(generator.body, ResizeConvSequential)
    plain = nn.Sequential(*generator.body)  # the same layers (same state dict), run one by one
    assert plain.state_dict().keys() == generator.body.state_dict().keys()
    calls = []
    monkeypatch.setattr(resize_conv, "upsample_conv", lambda *a: calls.append(a) or upsample_conv(*a))
    h = torch.randn(4, 16, shape[1] // 4, shape[2] // 4)
    torch.testing.assert_close(generator.body(h), plain(h))
    assert len(calls) == fused_pairs  # 8×7 and 16×14 fused; 2×2 and 4×4 (8×8 digits) run plain
    assert generator(torch.randn(4, generator.nz)).shape == (4, *shape)


def test_only_nearest_doubling_before_a_same_size_3x3_convolution_is_fused() -> None:
    torch.manual_seed(0)
    conv5 = nn.Conv2d(2, 2, 5, padding=2)
    for layers in ([nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2, 2, 3, padding=1)],
                   [nn.Upsample(scale_factor=3), nn.Conv2d(2, 2, 3, padding=1)],
                   [nn.Upsample(scale_factor=2), conv5]):
        x = torch.randn(1, 2, 8, 8)  # large enough to be fused if the pair qualified
        torch.testing.assert_close(ResizeConvSequential(*layers)(x), nn.Sequential(*layers)(x))
