"""The speed paths: one forward pass per network and batch, no autograd graph through the teacher
where no gradient must flow, channels-last weights and batches when asked for, and the frozen
teacher's weights channels-last on the CPU by default."""
from __future__ import annotations

import pytest
import torch
from conftest import FAST

from datafree import checkpoint
from datafree.build import teacher_memory_format
from datafree.config import load
from datafree.data import Dataset, Split, load_dataset
from datafree.models import create_model
from datafree.spec import InputSpec
from datafree.trainer import Trainer


def make_trainer(method: str, teacher, dataset, channels: int = 1, **overrides) -> Trainer:
    cfg = load(overrides={**FAST, "method.name": method, "trainer.device": "cpu", "trainer.batch_size": 16,
                          "student.args": {"width": 4}, **overrides})
    student = create_model("digits_cnn_half", 10, (channels, 8, 8), width=4)
    return Trainer(cfg, dataset, student, teacher, None)


class ForwardLog:
    """Counts calls of each network's forward, and whether autograd was recording during them."""

    def __init__(self, trainer: Trainer) -> None:
        self.calls: list[tuple[str, bool]] = []
        for name in ("teacher", "student", "generator", "discriminator"):
            net = getattr(trainer, name)
            if net is not None:
                net.register_forward_hook(
                    lambda _m, _i, _o, name=name: self.calls.append((name, torch.is_grad_enabled())))

    def during(self, action) -> dict[str, list[bool]]:
        self.calls.clear()
        action()
        out: dict[str, list[bool]] = {}
        for name, grad in self.calls:
            out.setdefault(name, []).append(grad)
        return out


@pytest.mark.parametrize("method, player, expected", [
    # dfq's generator terms adv_kl, bn, oh and balance all read one teacher pass
    ("dfq", "generator", {"generator": [True], "teacher": [True], "student": [True]}),
    ("dfq", "student", {"generator": [False], "teacher": [False], "student": [True]}),
    # replay pool + augmentation: still one generator pass for the fresh part of the batch
    ("ours", "student", {"generator": [False], "teacher": [False], "student": [True]}),
    # attention transfer reads feature maps from the same passes as the KL term
    ("zskt", "student", {"generator": [False], "teacher": [False], "student": [True]}),
    ("deepinv", "generator", {"generator": [True], "teacher": [True], "student": [True]}),
    # the discriminator scores two different inputs (teacher and student answers): two calls
    ("gankd", "discriminator", {"teacher": [False], "student": [False], "discriminator": [True, True]}),
    ("gankd", "student", {"teacher": [False], "student": [True], "discriminator": [True]}),
])
def test_each_network_runs_once_per_update_and_the_teacher_builds_no_graph_unless_needed(
        digits_teacher, method, player, expected):
    teacher = checkpoint.load_model(digits_teacher).model
    trainer = make_trainer(method, teacher, load_dataset("digits"))
    log = ForwardLog(trainer)
    for _ in range(2):  # the second update of a replay run draws from the pool as well
        assert log.during(lambda: trainer.update(trainer.player(player))) == expected


def test_a_replay_run_asks_the_generator_only_for_the_fresh_part_of_a_batch(digits_teacher):
    trainer = make_trainer("ours", checkpoint.load_model(digits_teacher).model, load_dataset("digits"))
    sizes = []
    trainer.generator.register_forward_hook(lambda _m, inputs, _o: sizes.append(len(inputs[0])))
    for _ in range(3):
        trainer.update(trainer.player("student"))
    assert trainer.synthetic.n_replay == 8 and sizes == [16, 8, 8]  # then half the batch comes from the pool
    assert trainer.counters["synthetic_samples"] == 32


def test_teacher_output_carries_a_graph_only_for_the_generator(digits_teacher):
    trainer = make_trainer("dfq", checkpoint.load_model(digits_teacher).model, load_dataset("digits"))
    generator_batch, student_batch = (trainer.make_batch(trainer.player("generator")),
                                      trainer.make_batch(trainer.player("student")))
    assert generator_batch.teacher.logits.requires_grad  # the generator learns through the teacher
    assert not student_batch.teacher.logits.requires_grad and student_batch.teacher.logits.grad_fn is None
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_why_the_teacher_runs_under_no_grad_and_not_inference_mode(digits_teacher):
    """inference_mode would save a little bookkeeping, but its tensors cannot be saved for backward:
    a teacher feature map entering the feature discriminator's convolution (which keeps its input
    to compute its weight gradient) fails. Under no_grad the same update works."""
    trainer = make_trainer("gankd", checkpoint.load_model(digits_teacher).model, load_dataset("digits"),
                           **{"discriminator.name": "feature"})
    trainer.set_trainable(trainer.player("discriminator"))
    for context, works in ((torch.no_grad, True), (torch.inference_mode, False)):
        batch = trainer.make_batch(trainer.player("discriminator"))
        with context():
            teacher_outputs = batch.nets.teacher(batch.x, batch.captures["teacher"])
        discriminator_update = lambda: trainer.discriminator(  # noqa: E731
            batch.nets.view(teacher_outputs, "teacher"), batch.labels).sum().backward()
        if works:
            discriminator_update()
        else:
            with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
                discriminator_update()


def three_channel_digits() -> Dataset:
    """Random 3-channel 8×8 images: channels-last differs from the default layout only when C > 1."""
    g = torch.Generator().manual_seed(0)
    info = InputSpec((3, 8, 8), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), name="fake3")
    split = lambda n: Split(torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))  # noqa: E731
    return Dataset(info, split(256), split(64))


@pytest.mark.parametrize("method, players", [("dfad", ["generator", "student"]),
                                             ("gankd", ["discriminator", "student"])])
@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_weights_and_batches(method, players, channels_last):
    teacher = create_model("digits_cnn", 10, (3, 8, 8), width=4)
    trainer = make_trainer(method, teacher, three_channel_digits(), channels=3,
                           **{"trainer.channels_last": channels_last})
    layout = torch.channels_last if channels_last else torch.contiguous_format
    trained = [trainer.student] + ([trainer.generator] if trainer.generator is not None else [])
    assert conv_weights(trained) and all(w.is_contiguous(memory_format=layout) for w in conv_weights(trained))
    # on the CPU the frozen teacher is channels-last either way (trainer.teacher_memory_format = "auto")
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights([trainer.teacher]))
    seen = []
    trainer.teacher.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    for player in players:
        trainer.update(trainer.player(player))
    assert len(seen) == len(players)
    assert all(x.is_contiguous(memory_format=layout) and x.dim() == 4 and x.shape[1] == 3 for x in seen)


def conv_weights(nets: list[torch.nn.Module]) -> list[torch.Tensor]:
    """Weights of the convolutions whose layouts differ (more than one input channel)."""
    return [m.weight for net in nets for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]


def test_teacher_memory_format_changes_layout_not_answers():
    """`contiguous` keeps the teacher as given; channels-last weights give the same logits (to float
    rounding) and the same input gradients, and leave the student's layout alone."""
    outputs = {}
    for choice in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        teacher = create_model("digits_cnn", 10, (3, 8, 8), width=4)
        trainer = make_trainer("dfad", teacher, three_channel_digits(), channels=3,
                               **{"trainer.teacher_memory_format": choice})
        layout = torch.channels_last if choice == "channels_last" else torch.contiguous_format
        assert all(w.is_contiguous(memory_format=layout) for w in conv_weights([trainer.teacher]))
        assert all(w.is_contiguous() for w in conv_weights([trainer.student]))
        x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        logits = trainer.teacher(x)
        logits.square().sum().backward()
        outputs[choice] = logits.detach(), x.grad
    torch.testing.assert_close(outputs["contiguous"], outputs["channels_last"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("choice, device, trained, shape, expected", [
    ("auto", "cpu", torch.contiguous_format, (3, 8, 8), torch.channels_last),
    ("auto", "cuda", torch.contiguous_format, (3, 8, 8), torch.contiguous_format),  # follows trainer.channels_last
    ("auto", "cuda", torch.channels_last, (3, 8, 8), torch.channels_last),
    ("channels_last", "cuda", torch.contiguous_format, (3, 8, 8), torch.channels_last),
    ("contiguous", "cpu", torch.channels_last, (3, 8, 8), torch.contiguous_format),
    ("channels_last", "cpu", torch.contiguous_format, (20,), torch.contiguous_format),  # feature vectors: no layout
])
def test_teacher_memory_format_choice(choice, device, trained, shape, expected):
    assert teacher_memory_format(choice, trained, torch.device(device), shape) == expected
