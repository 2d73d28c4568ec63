"""What the tests share: the random token batch of the reader tests (test_reader, test_two_pass_reader) and the tiny
multi-hop world of the tests that train or run a reader on real questions."""


def make_batch(rng, V, bos_id, B=2, N=3, L=5, T=3):
    """(ctx (B, N, L), ans_in, ans_out (B, T), mask (B, N)): token ids >= 3, padding inside every document and
    one more in the first example, one padded target, every mask value in (0.1, 1)."""
    ctx = rng.integers(3, V, (B, N, L))
    ctx[:, :, -1] = 0  # padding inside every document
    ctx[0, -1, -2] = 0
    ans_in = rng.integers(3, V, (B, T))
    ans_in[:, 0] = bos_id
    ans_out = rng.integers(3, V, (B, T))
    if T > 1:
        ans_out[-1, -1] = 0  # a padded target
    M = rng.uniform(0.1, 1.0, (B, N))
    return ctx, ans_in, ans_out, M


def tiny_world(*, n_train: int, n_dev: int, n_test: int, k: int):
    """A DataConfig of six candidates (1 subject, 2 target and 1 bridge distractor) over six relations and
    40 names: every kind of question and document in milliseconds."""
    from mini_gumbel.data import DataConfig

    return DataConfig(n_train=n_train, n_dev=n_dev, n_test=n_test, n_candidates=6, k=k, n_names=40, n_per_type=6,
                      relations=("born_in", "lives_in", "citizen_of", "located_in", "works_for", "based_in"),
                      n_subject=1, n_target=2, n_bridge=1)
