"""Methods are data: a named set of weighted loss terms per player, plus the config defaults of
the published recipe (step ratios, temperature, ...). Optimizers are not part of a method: the
CIFAR configs under experiments/configs/ set each paper's, the digits configs give every method
the same project default (SGD, lr 0.05, cosine) so that only the method differs. Adding one is a new
small file here that calls `register_method`; the trainer never asks which method it runs.

Players update in this order every iteration: generator (g_steps), discriminator (d_steps),
student (s_steps). A player takes part when the method gives it at least one term.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from datafree.errors import ConfigError
from datafree.registry import Registry

PLAYERS = ("generator", "discriminator", "student")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    data: Literal["real", "synthetic"]  # where student batches come from
    terms: dict[str, dict[str, float]]  # player → {term: weight}
    defaults: dict[str, Any] = field(default_factory=dict)  # dotted config keys the recipe sets
    reference: str = ""
    # A player's own turn, where `repeats` weighted-sum updates are not the method (a synthesis round,
    # a meta step): called as turn(trainer, player) once per iteration instead of those updates; it
    # returns False when the player sat the iteration out (its learning-rate schedule then waits).
    turns: dict[str, Callable[..., bool]] = field(default_factory=dict)
    # True: the method's generator turn adds its samples to the replay pool, and student batches come
    # from the pool alone (the data pool of CMI, Fast-DFKD and NAYER).
    fills_pool: bool = False
    args: dict[str, Any] = field(default_factory=dict)  # the method's own settings (method.args) and defaults
    # Allowed range [low, high) of a numeric setting; one not listed must be > 0.
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def players(self) -> list[str]:
        return [p for p in PLAYERS if self.terms.get(p)]

    def weights(self, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
        """The method's weights with the config's `method.terms` overrides applied; terms of
        weight 0 are dropped. Unknown players or terms are errors naming the key."""
        from datafree.methods.terms import TERMS

        merged = {p: dict(self.terms.get(p, {})) for p in PLAYERS}
        for player, terms in (overrides or {}).items():
            if player not in PLAYERS:
                raise ConfigError(f"unknown player in config key 'method.terms.{player}' "
                                  f"(players: {', '.join(PLAYERS)})")
            for term, weight in terms.items():
                key = f"method.terms.{player}.{term}"
                if term not in TERMS:
                    raise ConfigError(f"config key {key!r}: {TERMS.unknown_message(term)}")
                if player not in TERMS.get(term).players:
                    raise ConfigError(f"config key {key!r}: term {term!r} is for "
                                      f"{' and '.join(TERMS.get(term).players)}, not {player}")
                merged[player][term] = weight
                if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                    raise ConfigError(f"config key {key!r} must be a finite weight >= 0 (got {weight!r}); the terms "
                                      f"carry their own sign (an adversarial term is already a negated disagreement)")
        return {p: {t: w for t, w in terms.items() if w != 0} for p, terms in merged.items()}

    def settings(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The method's own settings (method.args) over its defaults; unknown names are errors."""
        merged = dict(self.args)
        for name, value in (given or {}).items():
            if name not in self.args:
                known = ", ".join(self.args) or "none"
                raise ConfigError(f"unknown config key 'method.args.{name}' for method {self.name!r} "
                                  f"(its settings: {known})")
            kind = type(self.args[name])
            accepted = (int, float) if kind is float else kind
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, accepted):
                raise ConfigError(f"config key 'method.args.{name}' must be a {kind.__name__} (got {value!r})")
            merged[name] = kind(value)
            if kind in (int, float):
                low, high = self.ranges.get(name, (0, math.inf))
                inside = low <= value < high and (name in self.ranges or value > 0) and math.isfinite(value)
                if not inside:
                    wanted = f"in [{low:g}, {high:g})" if name in self.ranges else "> 0"
                    raise ConfigError(f"config key 'method.args.{name}' must be {wanted} (got {value!r})")
        return merged


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    METHODS.add(method.name, method)
    return method


# Importing the recipes registers them.
from datafree.methods import cmi, dafl, deepinv, dfad, dfq, fast, gankd, kd, nayer, ours, scratch, zskt  # noqa: E402,F401
