"""Read a model's internals through forward hooks, so any `nn.Module` works unchanged.

A `Probe` wraps a model; `probe(x, capture)` runs one forward pass and returns the logits with
whatever internals were asked for:
- `"bn"`: the DeepInversion/DFQ BatchNorm statistic loss, Σ_l ‖μ_l(x) − running_mean_l‖₂ +
  ‖σ²_l(x) − running_var_l‖₂ over every BatchNorm layer;
- `"bn_stats"`: each BatchNorm layer's batch mean and variance, for terms that blend them over
  batches (Fast-DFKD's BN statistics with momentum);
- `"instance"`: per-sample channel means of every stage output (below), concatenated: the instance
  statistics CMI embeds (a teacher without stages, on feature vectors: of every BatchNorm layer's input);
- `"penultimate"`: the input of the last `nn.Linear` (DAFL's activation term);
- `"stages"`: the last activation at each spatial resolution (attention transfer);
- `"feature"`: the output of one chosen layer (the feature discriminator).
Hooks record nothing unless a capture asks for it, so plain forward passes cost nothing extra.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.models import batchnorm_layers, dry_forward


@dataclass
class Outputs:
    logits: torch.Tensor
    bn: torch.Tensor | None = None
    bn_stats: list[tuple[torch.Tensor, torch.Tensor, nn.Module]] = field(default_factory=list)  # mean, var, layer
    instance: torch.Tensor | None = None
    penultimate: torch.Tensor | None = None
    stages: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    feature: torch.Tensor | None = None


class Probe:
    """A model plus forward hooks. `model` is what gets called (the module, or its DDP or
    torch.compile wrapper); the hooks go on `inner`, the plain module."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], feature_layer: str = "",
                 inner: nn.Module | None = None) -> None:
        self.model = model
        inner = inner if inner is not None else model
        self.inner = inner
        self._capture: set[str] = set()
        self._out: Outputs | None = None
        # removed by close(): the user's module is left as found
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.bn_layers = batchnorm_layers(inner)
        for m in self.bn_layers:
            self.handles.append(m.register_forward_hook(self._bn_hook))
        linears = [m for m in inner.modules() if isinstance(m, nn.Linear)]
        self.has_linear = bool(linears)
        if linears:
            self.handles.append(linears[-1].register_forward_hook(self._penultimate_hook))
        stage_layers = find_stage_layers(inner, input_shape) if len(input_shape) == 3 else []
        for name in stage_layers:
            self.handles.append(inner.get_submodule(name).register_forward_hook(self._stage_hook))
        # Instance statistics come from the stage outputs, as CMI's reference reads a ResNet-34's block outputs:
        # a few hundred channels where every BatchNorm input would be thousands (4,800 in a ResNet-18), and
        # teachers without BatchNorm (LeNet-5) have them too. A teacher without stages uses its BatchNorm inputs.
        self.instance_from_stages = bool(stage_layers)
        if feature_layer:
            try:
                self.handles.append(inner.get_submodule(feature_layer).register_forward_hook(self._feature_hook))
            except AttributeError:
                names = [n for n, _ in inner.named_modules() if n]
                raise ConfigError(f"feature layer {feature_layer!r} not found in the model "
                                  f"(layers: {', '.join(names[:40])})") from None

    def __call__(self, x: torch.Tensor, capture: Iterable[str] = ()) -> Outputs:
        self._capture = set(capture)
        if self._capture & {"bn", "bn_stats"} and not self.bn_layers:
            raise ConfigError("the bn term needs a teacher with BatchNorm layers; this teacher has none")
        if "instance" in self._capture and not (self.bn_layers or self.instance_from_stages):
            raise ConfigError("the cr term needs a teacher with BatchNorm layers or convolutional stages; this teacher "
                              "has neither (set its weight to 0: --set method.terms.generator.cr=0)")
        if "penultimate" in self._capture and not self.has_linear:
            raise ConfigError("the act term reads the input of the teacher's last nn.Linear; this teacher has none "
                              "(set its weight to 0: --set method.terms.generator.act=0)")
        self._out = Outputs(logits=torch.empty(0))
        try:
            self._out.logits = self.model(x)
            return self._out
        finally:
            self._capture, self._out = set(), None

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _add_instance_statistics(self, x: torch.Tensor) -> None:
        x = x.float()
        per_sample = x.mean(list(range(2, x.dim()))) if x.dim() > 2 else x
        previous = self._out.instance
        self._out.instance = per_sample if previous is None else torch.cat([previous, per_sample], 1)

    def _bn_hook(self, module: nn.Module, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> None:
        if "instance" in self._capture and not self.instance_from_stages:
            self._add_instance_statistics(inputs[0])
        if "bn" not in self._capture and "bn_stats" not in self._capture:
            return
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))  # every axis but the channel axis
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        if "bn_stats" in self._capture:
            self._out.bn_stats.append((mean, var, module))
        if "bn" not in self._capture:
            return
        loss = (torch.linalg.vector_norm(mean - module.running_mean, 2)
                + torch.linalg.vector_norm(var - module.running_var, 2))
        self._out.bn = loss if self._out.bn is None else self._out.bn + loss

    def _penultimate_hook(self, _module: nn.Module, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> None:
        if "penultimate" in self._capture:
            self._out.penultimate = inputs[0]

    def _stage_hook(self, _module: nn.Module, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if "stages" in self._capture:
            self._out.stages[tuple(output.shape[-2:])] = output
        if "instance" in self._capture and self.instance_from_stages:
            self._add_instance_statistics(output)

    def _feature_hook(self, _module: nn.Module, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if "feature" in self._capture:
            self._out.feature = output


def find_stage_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the modules whose output is the last 4-D activation at each spatial resolution.

    Found with one dry forward pass: forward hooks fire when a module finishes, so the last
    module to finish at a resolution is the outermost block (a "stage") ending there. A TorchScript
    model takes no hooks: it has none to find.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return []
    last_at: dict[tuple[int, int], str] = {}
    handles = []

    def record(name: str):
        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1:
                last_at[tuple(out.shape[-2:])] = name
        return hook

    for name, module in model.named_modules():
        if name and not isinstance(module, (nn.ReLU, nn.Identity)):  # in-place ReLUs share storage
            handles.append(module.register_forward_hook(record(name)))
    try:
        dry_forward(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(last_at.values()))


def output_shape(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample shape of `layer`'s output, from one dry forward pass with a temporary hook."""
    shapes: list[tuple[int, ...]] = []
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"layer {layer!r} not found in the model") from None
    handle = module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    try:
        dry_forward(model, input_shape)
    finally:
        handle.remove()
    return shapes[-1]
