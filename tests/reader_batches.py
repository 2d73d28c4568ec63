"""The random token batch the reader tests share (test_reader, test_two_pass_reader)."""


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
