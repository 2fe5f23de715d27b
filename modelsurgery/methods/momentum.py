"""Deprecated: optimizer-state conversion across a grow lives in `modelsurgery.momentum`, below the Trainer."""

from ..deprecation import moved

__getattr__ = moved(__name__, {"carry_momentum": "modelsurgery.momentum", "momentum_buffers": "modelsurgery.momentum"})
