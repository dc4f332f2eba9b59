"""``baseline``: the control. The same loop (sample, execute, pairs, evaluate) with no training."""

from __future__ import annotations

from ieta.methods.base import Method


class Baseline(Method):
    name = "baseline"
    trains = False


METHOD = Baseline()
