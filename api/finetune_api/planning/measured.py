"""The estimate set against what torch measured in the run itself: how wrong the plan was.

Two bases, whichever the run could measure:

* on a GPU, the peak the caching allocator handed out (``torch.cuda.max_memory_allocated``, the
  highest of any rank) against every estimated term except ``runtime`` (the CUDA context and the
  allocator's slack, which that counter does not see);
* otherwise the bytes of the tensors torch holds for the model states, counted at the first optimizer
  step: every parameter, every ``.grad`` and every optimizer state tensor, against the weights,
  gradients and optimizer terms. These are the terms that do not depend on the device.

Pure and import-light: the trainer, the operator and the benches use the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

STATE_TERMS = ("weights", "gradients", "optimizer")
PEAK_KEY = "peakAllocated"
BASIS_PEAK = "GPU peak allocated (torch.cuda.max_memory_allocated) vs every term but runtime"
BASIS_STATES = "weights + gradients + optimizer states (torch tensors at the first optimizer step)"


@dataclass(frozen=True)
class Comparison:
    basis: str
    estimated: int
    measured: int
    term_errors: dict[str, float]  # percent, per model-state term that was measured

    @property
    def error_percent(self) -> float:
        return error_percent(self.estimated, self.measured)


def error_percent(estimated: int, measured: int) -> float:
    """Signed: positive when the estimate is above what was measured (the safe side)."""
    return round(100.0 * (estimated - measured) / measured, 2)


def compare(estimated: Mapping[str, int], measured: Mapping[str, int]) -> Comparison | None:
    """The comparison the measurements allow, or None when nothing comparable was measured."""
    terms = {
        term: error_percent(estimated[term], measured[term])
        for term in STATE_TERMS
        if measured.get(term, 0) > 0 and term in estimated
    }
    peak = measured.get(PEAK_KEY, 0)
    if peak > 0:
        allocated = sum(v for k, v in estimated.items() if k != "runtime")
        return Comparison(BASIS_PEAK, allocated, peak, terms)
    if len(terms) == len(STATE_TERMS):
        est = sum(estimated[t] for t in STATE_TERMS)
        return Comparison(BASIS_STATES, est, sum(measured[t] for t in STATE_TERMS), terms)
    return None
