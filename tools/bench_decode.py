"""Benchmark batched beam-search decoding of the TIGER model (random weights).

  python tools/bench_decode.py [--users 500] [--batch 100] [--beams 20 50] [--items 1700]

An ML-100K-like trie: `--items` random 4-token IDs (3 RQ levels of 256 codes + TIGER's
collision counter). Inputs: 1 user token + 20 history items x 4 tokens = 81 tokens.
Reports ms per user (and s per 1,000 users) for constrained and unconstrained search,
and the speedup vs cornac's PyTorch TIGER (61 ms/user at beam 50, the reference).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from cost_jax import decoding, network
from cost_jax.layout import TokenLayout

CORNAC_MS_PER_USER = 61.0  # beam 50, history 20


def random_semantic_ids(rng: np.random.Generator, n: int, k: int = 256) -> np.ndarray:
  """n distinct IDs: 3 random codes + a 4th that counts collisions (TIGER §4.1.3)."""
  prefix = rng.integers(0, k, size=(n, 3))
  _, inv = np.unique(prefix, axis=0, return_inverse=True)
  inv = inv.reshape(-1)
  counter = np.zeros(n, np.int64)
  seen: dict[int, int] = {}
  for i, g in enumerate(inv):
    counter[i] = seen.get(int(g), 0)
    seen[int(g)] = counter[i] + 1
  return np.concatenate([prefix, counter[:, None]], axis=1)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--users", type=int, default=500)
  ap.add_argument("--batch", type=int, default=100)
  ap.add_argument("--beams", type=int, nargs="+", default=[20, 50])
  ap.add_argument("--items", type=int, default=1700)
  ap.add_argument("--history", type=int, default=20)
  ap.add_argument("--score_over", default="vocab", choices=["vocab", "level"])
  ap.add_argument("--modes", nargs="+", default=["constrained", "unconstrained"])
  args = ap.parse_args(argv)

  rng = np.random.default_rng(0)
  layout = TokenLayout((256, 256, 256, 256))
  codes = random_semantic_ids(rng, args.items)
  trie = decoding.ItemTrie.from_tokens(layout.codes_to_tokens(codes), layout.level_offsets,
                                       layout.codebook_sizes)
  cfg = network.TransformerConfig(vocab_size=layout.vocab_size, dropout_rate=0.0)
  module = network.Transformer(cfg)
  input_len = 1 + args.history * 4
  params = network.init_params(module, jax.random.PRNGKey(0), input_len, 4)
  hist = rng.integers(0, args.items, size=(args.users, args.history))
  toks = layout.codes_to_tokens(codes[hist]).reshape(args.users, -1)
  users = np.asarray([layout.user_token(u) for u in range(args.users)])[:, None]
  enc = np.concatenate([users, toks], axis=1).astype(np.int32)
  nb = args.users // args.batch
  print(f"items={args.items} users={nb * args.batch} batch={args.batch} input_len={input_len} "
        f"params={network.param_count(params)} score_over={args.score_over}")
  results = {}
  for beams in args.beams:
    for mode in args.modes:
      constrained = mode == "constrained"
      run = lambda x: decoding.predict_topk(module, params, x, trie, beams, beams,
                                            constrained=constrained, score_over=args.score_over)
      t0 = time.perf_counter()
      jax.block_until_ready(run(jnp.asarray(enc[:args.batch])))
      compile_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      invalid = []
      for i in range(nb):
        items, _ = run(jnp.asarray(enc[i * args.batch:(i + 1) * args.batch]))
        invalid.append(np.asarray(items) < 0)
      el = time.perf_counter() - t0
      ms = 1000.0 * el / (nb * args.batch)
      inv = float(np.mean(np.concatenate(invalid)))
      results[(beams, mode)] = ms
      print(f"beam={beams:3d} {mode:>13}: {ms:7.2f} ms/user  {ms:7.2f} s/1000 users  "
            f"x{CORNAC_MS_PER_USER / ms:5.1f} vs cornac  invalid_rate={inv:.3f}  "
            f"(compile+first batch {compile_s:.1f}s)")
  return results


if __name__ == "__main__":
  main()
