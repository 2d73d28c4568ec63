"""mini_gumbel: a NumPy reference implementation of Gumbel Reranking (Huang et al., ACL 2025).

Modules, in reading order:
  backend    -- NumPy / CuPy / autograd.numpy dispatch
  gradcheck  -- finite-difference checks used by tests and notebooks
  gumbel     -- Gumbel noise and the relaxed top-K operators (forward/backward pairs)
  ops        -- transformer primitives (forward/backward pairs)
  reader     -- a tiny Fusion-in-Decoder reader with Differentiable Masked Attention
  data       -- a built-in multi-hop QA world
  reranker   -- the bilinear reranker
  losses     -- Gumbel Reranking's and the baselines' training losses
  metrics    -- ranking and answer metrics
"""
__version__ = "0.1.0"
