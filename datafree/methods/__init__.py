"""Methods are data: a named set of weighted loss terms per player, plus the config defaults of
the published recipe (step ratios, temperature, ...). Optimizers are not part of a method: the
CIFAR configs under experiments/configs/ set each paper's, the digits configs give every method
the same project default (SGD, lr 0.05, cosine) so that only the method differs. Adding one is a new small file here that
calls `register_method`; the trainer never asks which method it runs.

Players update in this order every iteration: generator (g_steps), discriminator (d_steps),
student (s_steps). A player takes part when the method gives it at least one term.
"""
from __future__ import annotations

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
    # a meta step): called as turn(trainer, player) once per iteration instead of those updates.
    turns: dict[str, Callable[..., None]] = field(default_factory=dict)

    def players(self) -> list[str]:
        return [p for p in PLAYERS if self.terms.get(p)]

    def weights(self, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
        """The method's weights with the config's `method.terms` overrides applied; terms of
        weight 0 are dropped. Unknown players or terms are errors naming the key."""
        from datafree.methods.terms import TERMS

        merged = {p: dict(self.terms.get(p, {})) for p in PLAYERS}
        for player, terms in (overrides or {}).items():
            if player not in PLAYERS:
                raise ConfigError(f"unknown player in config key 'method.terms.{player}' (players: {', '.join(PLAYERS)})")
            for term, weight in terms.items():
                key = f"method.terms.{player}.{term}"
                if term not in TERMS:
                    raise ConfigError(f"config key {key!r}: {TERMS.unknown_message(term)}")
                if player not in TERMS.get(term).players:
                    raise ConfigError(f"config key {key!r}: term {term!r} is for {' and '.join(TERMS.get(term).players)}, not {player}")
                merged[player][term] = weight
        return {p: {t: w for t, w in terms.items() if w != 0} for p, terms in merged.items()}


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    METHODS.add(method.name, method)
    return method


# Importing the recipes registers them.
from datafree.methods import dafl, deepinv, dfad, dfq, gankd, kd, ours, scratch, zskt  # noqa: E402,F401
