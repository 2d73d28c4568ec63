"""The experiment harness: configurations, reader and reranker training, evaluation, the reader cache, the
demo, the sweep and the command line. It is built on the differentiable core and the method
(mini_gumbel.gumbel_reranking) and adds no math of its own.

    configs         every config dataclass, the one quick size, the one config hash
    train_reader    reader training with exact resume                       (mini-gumbel train-reader)
    evaluate        the reader's EM table, the reranker's metrics, the markdown tables
    cache           the reader cache ($MINI_GUMBEL_CACHE)
    train_reranker  Gumbel Reranking and the five baselines: teachers, per-method loss, the loop
    demo, sweep     mini-gumbel demo and mini-gumbel sweep
    cli             argument parsing for the three commands
"""
