"""mini_gumbel: a NumPy reference implementation of Gumbel Reranking (Huang et al., ACL 2025).

Modules, in reading order:
  backend      -- NumPy / CuPy / autograd.numpy dispatch
  gradcheck    -- finite-difference checks used by tests and notebooks
  gumbel       -- Gumbel noise and the relaxed top-K operators (forward/backward pairs)
  ops          -- transformer primitives, DMA cross-attention included (forward/backward pairs)
  reader       -- a tiny Fusion-in-Decoder reader with Differentiable Masked Attention
  optim, checkpoint, atomic -- Adam/AdamW; strict, atomic checkpoints; atomic file writes
  data         -- a built-in multi-hop QA world (its data card is the module docstring)
  readertrain  -- reader training, evaluation and cache (`mini-gumbel train-reader`)
  reranker     -- the bilinear reranker
  losses       -- the baselines' losses and teachers
  metrics      -- ranking and answer metrics
  rerank       -- reranker training for Gumbel Reranking and every baseline
  demo, sweep  -- `mini-gumbel demo` and `mini-gumbel sweep`; cli wires the commands together
"""
__version__ = "0.1.0"
