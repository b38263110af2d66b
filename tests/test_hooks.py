import pytest
import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.hooks import Probe, find_stage_layers
from datafree.models import create_model


def test_bn_loss_is_zero_when_batch_statistics_match_running_ones():
    net = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    x = torch.randn(512, 3)
    net[0].running_mean.copy_(x.mean(0))
    net[0].running_var.copy_(x.var(0, unbiased=False))
    probe = Probe(net, (3,))
    assert probe(x, {"bn"}).bn.abs() < 1e-5
    assert probe(x + 1, {"bn"}).bn > 1.0
    assert probe(x).bn is None  # nothing recorded unless asked


def test_bn_loss_reaches_the_input():
    net = create_model("digits_cnn", 10, (1, 8, 8), width=4).eval().requires_grad_(False)
    x = torch.randn(8, 1, 8, 8, requires_grad=True)
    Probe(net, (1, 8, 8))(x, {"bn"}).bn.backward()
    assert x.grad.abs().sum() > 0


def test_penultimate_features_and_stages():
    net = create_model("digits_cnn", 10, (1, 8, 8), width=4).eval()
    assert find_stage_layers(net, (1, 8, 8)) == ["stage1", "stage2", "stage3"]
    out = Probe(net, (1, 8, 8))(torch.randn(3, 1, 8, 8), {"penultimate", "stages"})
    assert out.penultimate.shape == (3, 16)
    assert torch.allclose(net.fc(out.penultimate), out.logits)
    assert {k: v.shape[1] for k, v in out.stages.items()} == {(8, 8): 4, (4, 4): 8, (2, 2): 16}


def test_feature_layer_and_any_module():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 3))
    probe = Probe(net, (1, 4, 4), feature_layer="0")
    out = probe(torch.randn(2, 1, 4, 4), {"feature"})
    assert out.feature.shape == (2, 2, 4, 4) and out.logits.shape == (2, 3)


def test_terms_that_need_a_missing_layer_kind_name_it():
    conv_only = nn.Sequential(nn.Conv2d(1, 3, 4), nn.Flatten())  # no BatchNorm, no Linear (a conv classifier)
    probe = Probe(conv_only, (1, 4, 4))
    x = torch.randn(2, 1, 4, 4)
    assert probe(x).logits.shape == (2, 3)
    with pytest.raises(ConfigError, match="act term .* last nn.Linear"):
        probe(x, {"penultimate"})
    with pytest.raises(ConfigError, match="bn term needs .* BatchNorm"):
        probe(x, {"bn"})
    with pytest.raises(ConfigError, match="cr term needs .* BatchNorm layers or convolutional stages"):
        probe(x, {"instance"})  # its one convolution leaves 1x1 maps: no stage to read either


def test_instance_statistics_come_from_the_stages_with_or_without_batchnorm():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()
    with_bn = create_model("digits_cnn", 10, (1, 8, 8), width=4).eval()  # BatchNorm inside every stage
    for net, resolutions in ((plain, [(8, 8), (4, 4)]), (with_bn, [(8, 8), (4, 4), (2, 2)])):
        out = Probe(net, (1, 8, 8))(torch.randn(5, 1, 8, 8), {"instance", "stages"})
        assert torch.allclose(out.instance, torch.cat([out.stages[r].mean((2, 3)) for r in resolutions], 1))


def test_instance_statistics_of_a_teacher_without_stages_come_from_its_batchnorm_inputs():
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4),
                        nn.Linear(4, 3)).eval()
    x = torch.randn(7, 6)
    first = net[0](x)
    second = net[3](net[2](net[1](first)))
    assert torch.allclose(Probe(net, (6,))(x, {"instance"}).instance, torch.cat([first, second], 1))
