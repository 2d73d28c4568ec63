"""mini_gumbel: a NumPy reference implementation of Gumbel Reranking (Huang et al., ACL 2025).

The layers, each built only on the ones above it:

  backend        NumPy / CuPy / autograd.numpy dispatch (the only module that knows CuPy exists)
  validate       the shared argument checks: one message format, TypeError vs ValueError
  gradcheck      finite differences, the autograd oracle and check_grads, used by tests and notebooks

  differentiable core: forward/backward pairs, every backward checked against FD and autograd
  gumbel         Gumbel noise and the relaxed top-K masks (max, iterative, st)
  ops            transformer primitives, DMA cross-attention included
  reader         a tiny Fusion-in-Decoder reader with Differentiable Masked Attention
  reranker       the bilinear reranker
  losses         the baselines' losses and teachers

  the method
  gumbel_reranking   the training step of Gumbel Reranking in one screen: read this first

  support and the experiment harness
  data           a built-in multi-hop QA world (its data card is the module docstring)
  metrics        ranking and answer metrics
  optim, checkpoint, atomic, timing   Adam; strict atomic checkpoints; the one atomic writer; timing
  experiment/    configs, reader and reranker training, evaluation, the reader cache, demo, sweep, CLI

Reading order for a newcomer: README.md, docs/method.md, gumbel_reranking.py, then the notebooks in order.
"""
__version__ = "0.1.0"
