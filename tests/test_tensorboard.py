"""What a run shows in TensorBoard, read back the way a person sees it: a short data-free run,
then the real TensorBoard server on a loopback port, queried over its HTTP API. Plus the
generator-collapse warning, and a check that logging never changes what a run trains."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST
from PIL import Image
from test_trainer import make_trainer
from torch import nn

import datafree
from datafree.methods import METHODS
from datafree.monitor import Monitor
from generators import Generator

STEPS, LOG_EVERY, BATCH = 4, 2, 64
TILE = 32  # 8×8 digits are enlarged ×4 in the sample grid
PAD = 2  # torchvision's make_grid padding
# Only loopback, never through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run_overrides(**extra):
    return {**FAST, "trainer.batch_size": BATCH, "trainer.log_every": LOG_EVERY, "trainer.image_every": LOG_EVERY,
            "student.args": {"width": 4}, **extra}


@pytest.fixture(scope="module")
def logged_run(digits_teacher, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tensorboard_logs") / "ours"
    datafree.distill(digits_teacher, "digits_cnn_half", method="ours", steps=STEPS, run_dir=run_dir,
                     overrides=run_overrides(), quiet=True)
    return run_dir


def wait_for(what: str, check, timeout: float = 60.0, server: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds or if the server died."""
    def server_output() -> str:
        return f":\n{log.read_text(errors='replace')}" if log else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            pytest.fail(f"TensorBoard exited with {server.returncode} while waiting for {what}{server_output()}")
        try:
            result = check()
        except OSError:  # not answering yet
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{server_output()}")


@pytest.fixture(scope="module")
def tensorboard(logged_run, tmp_path_factory):
    """The real TensorBoard server over the run's parent directory, on 127.0.0.1 and a port the OS
    picks (--port 0, so no race for a free one). Loads the files once, before serving."""
    log = tmp_path_factory.mktemp("tensorboard_server") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logged_run.parent), "--host", "127.0.0.1",
             "--port", "0", "--load_fast", "false", "--reload_interval", "0", "--reload_task", "blocking"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        address = re.compile(r"http://127\.0\.0\.1:\d+/")
        url = wait_for("TensorBoard's address", lambda: address.search(log.read_text(errors="replace")),
                       server=server, log=log).group(0)
        wait_for("the run to be listed", lambda: logged_run.name in get_json(url, "data/runs"), server=server, log=log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def get(url: str, path: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with HTTP.open(request, timeout=10) as response:
        return response.read()


def get_json(url: str, path: str, body: dict | None = None):
    return json.loads(get(url, path, body))


def grey_pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))


def test_sample_grids_are_served_as_an_8x8_grid_of_enlarged_digits(tensorboard, logged_run):
    run = logged_run.name
    assert "synthetic/samples" in get_json(tensorboard, "data/plugin/images/tags")[run]
    entries = get_json(tensorboard, f"data/plugin/images/images?run={run}&tag=synthetic/samples")
    assert [e["step"] for e in entries] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    side = 8 * (TILE + PAD) + PAD  # 64 samples, 8 per row
    for entry in entries:
        image = Image.open(io.BytesIO(get(tensorboard, "data/plugin/images/individualImage?" + entry["query"])))
        assert image.format == "PNG" and image.size == (side, side)
        pixels = grey_pixels(image)
        assert pixels[:PAD].max() == 0 and pixels[:, :PAD].max() == 0  # the grid's padding
        tiles = pixels[PAD:, PAD:].view(8, TILE + PAD, 8, TILE + PAD)[:, :TILE, :, :TILE]
        assert tiles.std() > 1  # samples, not a blank image
        # nearest-neighbour enlargement: every 4×4 block of a tile is one pixel of the digit
        blocks = tiles.reshape(8, 8, 4, 8, 8, 4)
        assert (blocks - blocks[:, :, :1, :, :, :1]).abs().max() == 0


def test_scalars_cover_every_loss_term_and_the_health_figures(tensorboard, logged_run):
    run = logged_run.name
    tags = set(get_json(tensorboard, "data/plugin/scalars/tags")[run])
    method = METHODS.get("ours")
    losses = {f"loss/{player}/{term}" for player, terms in method.terms.items() for term in terms}
    losses |= {f"loss/{player}/total" for player in method.players()}
    assert {"loss/generator/adv_dkl", "loss/student/kl"} <= losses
    expected = losses | {"accuracy/student", "accuracy/teacher", "accuracy/agreement", "synthetic/agreement",
                         "synthetic/class_balance", "synthetic/diversity", "throughput/samples_per_s"}
    assert expected <= tags, sorted(expected - tags)

    def values(tag):
        return [(step, value) for _wall, step, value in
                get_json(tensorboard, f"data/plugin/scalars/scalars?run={run}&tag={tag}")]

    logged_steps = list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    for tag in ("synthetic/agreement", "synthetic/class_balance"):
        assert [s for s, _ in values(tag)] == logged_steps and all(0 <= v <= 1 for _, v in values(tag)), tag
    assert all(v > 0 for _, v in values("throughput/samples_per_s"))
    assert [s for s, _ in values("accuracy/student")] == [STEPS]
    assert 0 <= values("accuracy/student")[0][1] <= 100 and values("accuracy/teacher")[0][1] > 80


def test_histograms_of_the_teachers_answers_on_synthetic_batches(tensorboard, logged_run):
    run = logged_run.name
    tags = set(get_json(tensorboard, "data/plugin/histograms/tags")[run])
    assert {"synthetic/teacher_class", "synthetic/teacher_max_prob"} <= tags

    def last(tag):  # [[left, right, count], ...] of the last logged step
        return get_json(tensorboard, f"data/plugin/histograms/histograms?run={run}&tag={tag}")[-1][2]

    classes = last("synthetic/teacher_class")
    assert sum(c for _, _, c in classes) == pytest.approx(BATCH)
    assert all(left >= -0.5 - 1e-6 and right <= 9.5 + 1e-6 for left, right, c in classes if c)
    max_prob = last("synthetic/teacher_max_prob")
    assert sum(c for _, _, c in max_prob) == pytest.approx(BATCH)
    # the largest of 10 probabilities is at least 1/10
    assert all(left >= 0.1 - 1e-3 and right <= 1 + 1e-3 for left, right, c in max_prob if c)


def test_hparams_plugin_lists_the_run_with_its_settings_and_final_figures(tensorboard, logged_run):
    experiment = get_json(tensorboard, "data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"method", "student", "steps", "temperature"} <= {h["name"] for h in experiment["hparamInfos"]}
    groups = get_json(tensorboard, "data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    (group,) = [g for g in groups["sessionGroups"] if g["name"] == logged_run.name]
    assert group["hparams"]["method"] == "ours" and group["hparams"]["steps"] == STEPS
    assert "final/student_accuracy" in {m["name"]["tag"] for m in group["metricValues"]}


# ---------------------------------------------------------------------------------------------


class FixedGenerator(Generator):
    """Always the same given images (normalised), repeated to the batch size."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.nz, self.num_classes = 1, 10
        self.register_buffer("images", images)
        self.anchor = nn.Parameter(torch.zeros(()))  # Generator.sample reads the device from a parameter

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        index = torch.arange(len(z)) % len(self.images)
        return self.images[index] + 0 * self.anchor


def test_generator_collapse_is_reported_with_its_step_and_figures(digits_teacher, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(digits_teacher, "ours", **{"trainer.image_every": 5, "trainer.steps": 10,
                                                      "generator.collapse_warmup": 0})
    test_x = trainer.dataset.test.x
    digit = test_x[:1]  # un-normalised, pixels in [0, 1]
    trainer.reporter.monitor = monitor = Monitor(tmp_path, 10, "test", console=True)
    trainer.generator = FixedGenerator(trainer.info.normalize(digit))  # every sample the same image
    trainer.step = 1
    trainer.reporter.synthetic_diagnostics()  # within the first 10% of steps: a fresh generator is not reported
    trainer.step = 5
    figures = trainer.reporter.synthetic_diagnostics()
    assert figures["synthetic/diversity"] == 0 and figures["synthetic/class_balance"] == 0
    trainer.step = 6
    trainer.reporter.synthetic_diagnostics()  # still collapsed: said once per episode, not every log line
    trainer.generator = FixedGenerator(trainer.info.normalize(test_x[:64]))  # real, varied digits
    trainer.step = 7
    trainer.reporter.synthetic_diagnostics()
    monitor.close()

    console = capsys.readouterr().err
    lines = [line for line in console.splitlines() if "generator" in line]
    assert len(lines) == 2, console
    collapse, recovered = lines
    top_class = int(trainer.teacher(trainer.info.normalize(digit)).argmax())
    assert collapse.startswith("step 5: generator collapse")
    assert "class balance 0.00 < 0.5" in collapse and f"class {top_class} for 100% of samples" in collapse
    assert "method.terms.generator.coverage=5" in collapse  # names the remedy
    assert "sample diversity 0.000 < 0.05" in collapse
    assert recovered.startswith("step 7: generator recovered")

    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "images": 0}).Reload()
    texts = [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("synthetic/collapse/text_summary")]
    assert [(step, text) for step, text in texts] == [(5, collapse), (7, recovered)]

    # The sample grid shows the de-normalised image: the digit's own pixels, enlarged ×4.
    (grid,) = events.Images("synthetic/samples")  # step 5 only (image_every 5)
    assert grid.step == 5
    pixels = grey_pixels(Image.open(io.BytesIO(grid.encoded_image_string)))
    assert pixels.shape == (grid.height, grid.width)
    first_tile = pixels[PAD:PAD + TILE, PAD:PAD + TILE]
    expected = torch.nn.functional.interpolate(digit, scale_factor=4, mode="nearest")[0, 0] * 255
    assert (first_tile - expected).abs().max() <= 1.0


def test_a_new_generator_is_given_the_collapse_warm_up_too(digits_teacher, tmp_path, capsys):
    """generator.reset_every: each re-made generator starts as unformed as the first; it is not a collapse."""
    trainer = make_trainer(digits_teacher, "ours", **{"trainer.steps": 20, "generator.reset_every": 5,
                                                      "generator.collapse_warmup": 2})
    trainer.reporter.monitor = monitor = Monitor(tmp_path, 20, "test", console=True)
    trainer.generator = FixedGenerator(trainer.info.normalize(trainer.dataset.test.x[:1]))  # one image: collapsed
    for step in (6, 7, 8):  # re-made at step 5: 1 and 2 steps old, then past the warm-up
        trainer.step = step
        trainer.reporter.synthetic_diagnostics()
    monitor.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if "generator" in line]
    assert len(lines) == 1 and lines[0].startswith("step 8: generator collapse"), lines


def test_logging_does_not_change_what_a_run_trains(digits_teacher, tmp_path):
    """Diagnostics draw their own synthetic batch; how often a run logs must not shift its random stream."""
    students = []
    for every in (1, 3):
        result = datafree.distill(digits_teacher, "digits_cnn_half", method="ours", steps=3,
                                  run_dir=tmp_path / str(every), quiet=True,
                                  overrides=run_overrides(**{"trainer.log_every": every, "trainer.image_every": every}))
        students.append(result.model.state_dict())
    assert all(torch.equal(v, students[1][k]) for k, v in students[0].items())


def test_collapse_detector_needs_a_margin_to_call_a_recovery():
    """A generator hovering at the threshold is one collapse, not a stream of collapse/recovered lines."""
    from datafree.diagnostics import CollapseDetector

    detector = CollapseDetector(min_balance=0.5, min_diversity=0.05)
    said = {step: detector.check(step, balance, 1.0, 3, 0.7)
            for step, balance in [(1, 0.9), (2, 0.45), (3, 0.58), (4, 0.41), (5, 0.62)]}
    assert said[1] is None and said[3] is None and said[4] is None
    assert said[2].startswith("step 2: generator collapse") and said[5].startswith("step 5: generator recovered")
    spread_only = CollapseDetector(min_balance=0.0, min_diversity=0.05)  # balance check off: diversity alone
    assert spread_only.check(1, 0.0, 0.01, 3, 1.0).startswith("step 1: generator collapse")
    assert spread_only.check(2, 0.0, 0.052, 3, 1.0) is None
    assert spread_only.check(3, 0.0, 0.06, 3, 1.0).startswith("step 3: generator recovered")
