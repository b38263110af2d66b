"""Loss functions: pure, on tensors, no state. The menu every method is built from
(definitions in shared REFERENCE.md, "Loss terms"). Each returns a scalar to *minimise*;
the generator's adversarial terms negate a disagreement in `methods/terms.py`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton's KD: KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch.
    (KLDivLoss takes log-probabilities of the student; feeding it probabilities is a known pitfall.)"""
    T = temperature
    return F.kl_div(F.log_softmax(student_logits / T, 1), F.log_softmax(teacher_logits / T, 1),
                    reduction="batchmean", log_target=True) * T * T


def kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    T = temperature
    log_p_t, log_p_s = F.log_softmax(teacher_logits / T, 1), F.log_softmax(student_logits / T, 1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1) * T * T


def l1_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's mean absolute difference of logits."""
    return F.l1_loss(student_logits, teacher_logits)


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Jensen–Shannon divergence of the two softmax distributions (DeepInversion's competition term)."""
    p_s, p_t = F.softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1)
    log_m = (0.5 * (p_s + p_t)).clamp_min(1e-12).log()
    return 0.5 * (F.kl_div(log_m, p_s, reduction="batchmean") + F.kl_div(log_m, p_t, reduction="batchmean"))


def decision_masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """KL only on samples where student and teacher pick the same class ("decision adversarial",
    CMI/Fast): the generator is pushed to move samples across the student's decision boundary
    without leaving the teacher's class, instead of inventing samples the teacher is unsure of."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return (kl_per_sample(student_logits, teacher_logits, temperature) * agree).mean()


def one_hot(teacher_logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the teacher against `labels` (a conditional generator's sampled classes)
    or, without them, against its own argmax: samples the teacher is confident about."""
    target = teacher_logits.argmax(1) if labels is None else labels
    return F.cross_entropy(teacher_logits, target)


def activation(features: torch.Tensor) -> torch.Tensor:
    """DAFL: −mean |penultimate features| (real data excites the teacher's features strongly)."""
    return -features.abs().mean()


def balance(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information entropy term: Σ p̄ log p̄ + log K of the batch-mean teacher softmax.
    Zero when the classes are used equally, log K when one class takes the whole batch."""
    p_mean = F.softmax(teacher_logits, 1).mean(0)
    return (p_mean * p_mean.clamp_min(1e-12).log()).sum() + math.log(teacher_logits.shape[1])


def coverage(teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ p̄) of the batch-mean teacher softmax p̄, in log space: −(1/K) Σ_k log p̄_k − log K.
    Zero when the classes are used equally, as `balance`, and the same to second order near there; but
    where `balance`'s gradient vanishes once one class takes the whole batch and the softmax saturates,
    this one keeps about 1/(K·N) per logit however small a class's share gets, so it can pull a
    collapsed generator back."""
    log_p_mean = torch.logsumexp(F.log_softmax(teacher_logits, 1), 0) - math.log(len(teacher_logits))
    return -log_p_mean.mean() - math.log(teacher_logits.shape[1])


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Squared differences of neighbouring pixels: the smoothness prior of DeepInversion."""
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean()


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: channel-mean of squared activations, L2-normalised."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student_stages: dict, teacher_stages: dict) -> torch.Tensor:
    """Σ over shared resolutions of the mean squared difference of attention maps (ZSKT's AT)."""
    shared = sorted(set(student_stages) & set(teacher_stages))
    if not shared:
        raise ValueError("student and teacher share no feature-map resolution for attention transfer")
    return sum((attention_map(student_stages[r]) - attention_map(teacher_stages[r])).pow(2).mean() for r in shared)
