"""Training, test-set evaluation, data exploration and packing for streamseg models.

An in-repo package run as ``python -m training {train,evaluate,eda,pack}``. It
imports :mod:`streamseg` (the model file, shared transforms and the one
inference path), never the reverse, and it is the only place that imports
poutyne and albumentations.
"""

from __future__ import annotations
