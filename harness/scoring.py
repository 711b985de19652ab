"""How the quality step scores a trained model (train/quality.py), kept apart from its computation
and beside the subpackages, so that the memory estimate of a spec (spec/memory.py, which comes
before train in import order) sizes the same decode chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class QualitySettings:
    """k: importance samples per example; nll_examples: score the NLL and ELBO on the first
    this many test examples (None: all); decode_rows: rows per decode call (memory bound);
    term_examples: the loss terms' own metrics (LossTerm.quality) read the encodings of at most
    the first this many test examples (their estimators compare every pair: n^2 work; fewer for
    a wide latent: aebench.train.quality.pairwise_examples)."""

    k: int = 200
    nll_examples: Optional[int] = 200
    decode_rows: int = 2000
    term_examples: int = 1000

    def examples(self, n_test: int) -> int:
        """How many test examples the NLL and ELBO are computed on."""
        return n_test if self.nll_examples is None else min(self.nll_examples, n_test)

    def examples_per_decode(self) -> int:
        """Examples whose k samples each go into one decode call: decode_rows // k, at least 1."""
        return max(1, self.decode_rows // self.k)

    def rows_per_decode(self, n_test: int) -> int:
        """The most rows (examples times k samples) one decode call of the NLL gets."""
        return min(self.examples_per_decode(), self.examples(n_test)) * self.k
