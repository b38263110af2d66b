"""BatchNorm statistics recomputed for the final weights at the end of real-data training."""
import torch
from torch import nn

import datafree
from datafree.precise_bn import recompute_batchnorm_statistics

QUIET = {"trainer.log_every": 50, "trainer.eval_every": 0, "trainer.image_every": 0}


def slow_statistics_cnn(momentum: float = 0.001) -> nn.Module:
    """A digits CNN whose BatchNorm averages forget slowly (torchvision's MobileNetV3 uses 0.01)."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=momentum), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32, momentum=momentum), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_the_statistics_become_the_average_over_the_batches_read():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01)).eval()
    batches = [torch.randn(16, 1, 8, 8) * 3 + 1 for _ in range(4)]
    assert recompute_batchnorm_statistics(model, batches) == 4
    with torch.no_grad():
        conv = [model[0](x) for x in batches]
    bn = model[1]
    expected_mean = torch.stack([c.mean((0, 2, 3)) for c in conv]).mean(0)
    expected_var = torch.stack([c.var((0, 2, 3), unbiased=True) for c in conv]).mean(0)
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-4)
    assert bn.momentum == 0.01 and not model.training  # left as found


def test_a_model_without_batchnorm_reads_nothing():
    def no_batches():
        raise AssertionError("read a batch")
        yield
    assert recompute_batchnorm_statistics(nn.Linear(3, 2), no_batches()) == 0


def test_real_data_training_ends_with_statistics_of_the_final_weights(digits_teacher, tmp_path):
    accuracy = {}
    for precise in (True, False):
        torch.manual_seed(0)
        result = datafree.distill(digits_teacher, slow_statistics_cnn(), method="kd", steps=150, seed=0,
                                  run_dir=tmp_path / str(precise), overrides={**QUIET, "trainer.precise_bn": precise},
                                  quiet=True)
        accuracy[precise] = result.metrics["student_accuracy"]
    # the same weights; in eval mode, running averages that still remember the first weights cost most of it
    assert accuracy[True] > accuracy[False] + 25, accuracy
