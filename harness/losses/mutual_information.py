"""mutual_information: beta-TCVAE's index-code mutual information (weight alpha in the paper), its
minibatch-weighted sampling estimate (aebench.losses._minibatch_weighted states it); family vae."""

from aebench.losses._minibatch_weighted import decomposition_term

TERM = decomposition_term("mutual_information", rank=4)
