"""Modules with parameters (or state) built on :mod:`motionsqueeze.ops`."""

from .causal_shift import CausalTemporalShift, causal_temporal_shift
from .motion_squeeze import FeatureTransform, MotionSqueeze
from .temporal_shift import TemporalShift, temporal_shift

__all__ = ["MotionSqueeze", "FeatureTransform", "TemporalShift", "temporal_shift"]
__all__ += ["CausalTemporalShift", "causal_temporal_shift"]
