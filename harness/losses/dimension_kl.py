"""dimension_kl: beta-TCVAE's dimension-wise KL (weight gamma in the paper), its
minibatch-weighted sampling estimate (aebench.losses._minibatch_weighted states it); family vae."""

from aebench.losses._minibatch_weighted import decomposition_term

TERM = decomposition_term("dimension_kl", rank=6)
