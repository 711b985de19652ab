"""total_correlation: beta-TCVAE's total correlation (weight beta in the paper), its
minibatch-weighted sampling estimate (aebench.losses._minibatch_weighted states it); family vae."""

from aebench.losses._minibatch_weighted import decomposition_term

TERM = decomposition_term("total_correlation", rank=5)
