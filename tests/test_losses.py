import math

import pytest
import torch
import torch.nn.functional as F

from datafree import losses


def test_kd_kl_matches_its_definition():
    s, t, T = torch.randn(8, 10), torch.randn(8, 10), 4.0
    p_t = F.softmax(t / T, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(losses.kd_kl(s, t, T), manual, atol=1e-5)
    assert losses.kd_kl(t, t, T).abs() < 1e-6
    assert torch.allclose(losses.kl_per_sample(s, t, T).mean(), manual, atol=1e-5)


def test_js_is_symmetric_bounded_and_zero_on_agreement():
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    assert torch.allclose(losses.js_divergence(s, t), losses.js_divergence(t, s), atol=1e-6)
    assert 0 < losses.js_divergence(s, t) <= math.log(2)
    assert losses.js_divergence(t, t).abs() < 1e-6


def test_decision_masked_kl_ignores_disagreeing_samples():
    t = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # sample 0 agrees, sample 1 does not
    expected = losses.kl_per_sample(s[:1], t[:1]).sum() / 2
    assert torch.allclose(losses.decision_masked_kl(s, t), expected)


def test_balance_is_zero_for_uniform_classes_and_log_k_for_one():
    uniform = torch.eye(4) * 50
    one_class = torch.zeros(4, 4)
    one_class[:, 2] = 50
    assert losses.balance(uniform).abs() < 1e-5
    assert torch.allclose(losses.balance(one_class), torch.tensor(math.log(4)), atol=1e-4)


def test_coverage_matches_balance_near_uniform_and_keeps_a_gradient_where_balance_has_none():
    uniform = torch.eye(4) * 50
    assert losses.coverage(uniform).abs() < 1e-5
    near = torch.eye(4) * 0.3  # p̄ close to uniform: both ≈ (K/2)·Σ(p̄ − 1/K)²
    assert torch.allclose(losses.coverage(near), losses.balance(near), rtol=0.05)
    collapsed = torch.zeros(8, 4)
    collapsed[:, 2] = 40.0  # a saturated one-class batch
    gradients = {}
    for name in ("balance", "coverage"):
        logits = collapsed.clone().requires_grad_()
        getattr(losses, name)(logits).backward()
        gradients[name] = logits.grad.abs().max().item()
    assert gradients["balance"] < 1e-12
    assert gradients["coverage"] > 0.01  # ≈ 1/(K·N) = 0.031 per logit


def test_one_hot_uses_labels_when_given():
    t = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    assert losses.one_hot(t) < losses.one_hot(t, torch.tensor([1, 0]))


def test_activation_and_priors():
    f = torch.tensor([[1.0, -3.0]])
    assert losses.activation(f) == -2.0
    flat, noisy = torch.ones(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert losses.total_variation(flat) == 0 and losses.total_variation(noisy) > 0
    assert losses.l2_prior(flat) == 1.0


def test_attention_transfer():
    a = {(4, 4): torch.randn(2, 8, 4, 4), (2, 2): torch.randn(2, 16, 2, 2)}
    b = {(4, 4): torch.randn(2, 3, 4, 4)}
    assert losses.attention_transfer(a, a) == 0
    assert losses.attention_transfer(a, b) > 0  # only the shared 4×4 resolution counts; channels may differ
    with pytest.raises(ValueError, match="no feature-map resolution"):
        losses.attention_transfer({(8, 8): a[(4, 4)]}, b)


def test_gan_losses_have_the_right_sign_and_gradient_direction():
    from discriminators.losses import GAN_LOSSES

    for name in GAN_LOSSES:
        loss = GAN_LOSSES.get(name)
        real = torch.full((16,), loss.threshold, requires_grad=True)  # undecided scores
        fake = torch.full((16,), loss.threshold, requires_grad=True)
        loss.discriminator(real, fake).backward()
        # gradient descent on D's loss raises scores of teacher outputs and lowers the student's
        assert (real.grad < 0).all() and (fake.grad > 0).all(), name
        fake_g = torch.full((16,), loss.threshold, requires_grad=True)
        loss.generator(fake_g).backward()
        assert (fake_g.grad < 0).all(), name  # the student pushes its score towards "real"
        good = loss.discriminator(torch.full((16,), 3.0), torch.full((16,), -3.0))
        bad = loss.discriminator(torch.full((16,), -3.0), torch.full((16,), 3.0))
        assert good < bad, name
        assert loss.generator(torch.full((16,), 3.0)) < loss.generator(torch.full((16,), -3.0)), name
