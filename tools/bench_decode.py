"""Benchmark batched beam-search decoding of the TIGER model (random weights).

  python tools/bench_decode.py [--users 500] [--batch 100] [--beams 20 50] [--items 1700]
  python tools/bench_decode.py --items 10000000 --beams 20 --modes constrained

An ML-100K-like trie: `--items` random 4-token IDs (3 RQ levels of 256 codes + TIGER's
collision counter). Inputs: 1 user token + 20 history items x 4 tokens = 81 tokens.
Reports ms per user (and s per 1,000 users) for constrained and unconstrained search,
and the speedup vs cornac's PyTorch TIGER (61 ms/user at beam 50, the reference).

With more items than `--reference_items` (1,700), the trie's build time and memory are
printed, and the same decode runs in the same process against a 1,700-item trie; the last
line gives the slowdown per user (the large-catalogue target: at most 2x at 10M items).
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from cost_jax.seq2seq import decoding
from cost_jax.seq2seq import network
from cost_jax.seq2seq.trie import ItemTrie
from cost_jax.tokenizer import dedup as sid
from cost_jax.tokenizer.layout import TokenLayout

from benchlib import matmul_gflops

CORNAC_MS_PER_USER = 61.0  # beam 50, history 20


def random_semantic_ids(rng: np.random.Generator, n: int, k: int = 256) -> np.ndarray:
  """n distinct IDs: 3 random codes + TIGER's 4th token counting collisions (§4.1.3), made by
  the tokenizer's own de-duplication (vectorized, so 10M IDs take seconds)."""
  return sid.tiger_extra_token(rng.integers(0, k, size=(n, 3)))[0].astype(np.int64)


def decode_flops_per_user(cfg: network.TransformerConfig, input_len: int, beams: int,
                          level_sizes, score_over: str) -> float:
  """Analytic matmul FLOPs of one user's beam search: encoder + cross K/V once, step 0 on
  one row, steps 1..L-1 on `beams` rows."""
  e, hd, m = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim
  enc = cfg.num_encoder_layers * (input_len * (e * 3 * hd + hd * e + 2 * e * m)
                                  + 2 * input_len * input_len * hd)
  cross_kv = cfg.num_decoder_layers * input_len * e * 2 * hd
  total = enc + cross_kv
  for l, k in enumerate(level_sizes):
    rows = 1 if l == 0 else beams
    layer = e * 3 * hd + hd * e + e * hd + hd * e + 2 * e * m + 2 * (l + 1) * hd + 2 * input_len * hd
    out = e * (k if score_over == "level" else cfg.vocab_size)
    total += rows * (cfg.num_decoder_layers * layer + out)
  return 2.0 * total


def build_trie(rng: np.random.Generator, num_items: int, layout: TokenLayout
               ) -> tuple[np.ndarray, ItemTrie, float]:
  """(codes, trie, build seconds) for `num_items` random IDs (IDs generated outside the timing)."""
  codes = random_semantic_ids(rng, num_items)
  toks = layout.codes_to_tokens(codes)
  t0 = time.perf_counter()
  trie = ItemTrie.from_tokens(toks, layout.level_offsets, layout.codebook_sizes)
  jax.block_until_ready(jax.tree.leaves(trie))
  return codes, trie, time.perf_counter() - t0


def time_decode(module, params, enc: np.ndarray, trie: ItemTrie, beams: int, batch: int,
                constrained: bool, score_over: str) -> tuple[float, float, float]:
  """(ms per user, invalid share, compile seconds) over the full batches of `enc`."""
  run = lambda x: decoding.predict_topk(module, params, x, trie, beams, beams,
                                        constrained=constrained, score_over=score_over)
  t0 = time.perf_counter()
  jax.block_until_ready(run(jnp.asarray(enc[:batch])))
  compile_s = time.perf_counter() - t0
  nb = len(enc) // batch
  t0 = time.perf_counter()
  invalid = []
  for i in range(nb):
    items, _ = run(jnp.asarray(enc[i * batch:(i + 1) * batch]))
    invalid.append(np.asarray(items) < 0)
  ms = 1000.0 * (time.perf_counter() - t0) / (nb * batch)
  return ms, float(np.mean(np.concatenate(invalid))), compile_s


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--users", type=int, default=500)
  ap.add_argument("--batch", type=int, default=250)
  ap.add_argument("--beams", type=int, nargs="+", default=[20, 50])
  ap.add_argument("--items", type=int, default=1700)
  ap.add_argument("--reference_items", type=int, default=1700)
  ap.add_argument("--history", type=int, default=20)
  ap.add_argument("--score_over", nargs="+", default=["vocab"], choices=["vocab", "level"],
                  help="beam-scoring rules, timed side by side in this run (e.g. vocab level)")
  ap.add_argument("--modes", nargs="+", default=["constrained", "unconstrained"])
  args = ap.parse_args(argv)

  rng = np.random.default_rng(0)
  layout = TokenLayout((256, 256, 256, 256))
  codes, trie, build_s = build_trie(rng, args.items, layout)
  large = args.items > args.reference_items
  if large:
    trie_mb = sum(x.nbytes for x in jax.tree.leaves(trie)) / 1e6
    print(f"trie of {args.items:,} items: built in {build_s:.1f}s, {trie_mb:,.0f} MB on device "
          f"(nodes per level {trie.num_nodes}; dense levels "
          f"{[l for l, d in enumerate(trie.dense) if d is not None]}, CSR levels "
          f"{[l for l, c in enumerate(trie.csr) if c is not None]}, max children "
          f"{trie.max_children}); peak RSS {peak_rss_gb():.2f} GB")
  cfg = network.TransformerConfig(vocab_size=layout.vocab_size, dropout_rate=0.0)
  module = network.Transformer(cfg)
  input_len = 1 + args.history * 4
  params = network.init_params(module, jax.random.PRNGKey(0), input_len, 4)
  hist = rng.integers(0, min(args.items, args.reference_items), size=(args.users, args.history))
  toks = layout.codes_to_tokens(codes[hist]).reshape(args.users, -1)
  users = np.asarray([layout.user_token(u) for u in range(args.users)])[:, None]
  enc = np.concatenate([users, toks], axis=1).astype(np.int32)
  nb = args.users // args.batch
  print(f"items={args.items} users={nb * args.batch} batch={args.batch} input_len={input_len} "
        f"params={network.param_count(params)} score_over={','.join(args.score_over)}")
  results = {}
  rule = args.score_over[0]
  for beams in args.beams:
    for r in args.score_over:
      print(f"analytic matmul GFLOP per user at beam {beams} ({r}): "
            f"{decode_flops_per_user(cfg, input_len, beams, trie.level_sizes, r) / 1e9:.3f}")
  for beams in args.beams:
    for mode in args.modes:
      for r in args.score_over:
        constrained = mode == "constrained"
        ms, inv, compile_s = time_decode(module, params, enc, trie, beams, args.batch,
                                         constrained, r)
        results[(beams, mode, r)] = ms
        gflops = decode_flops_per_user(cfg, input_len, beams, trie.level_sizes,
                                       r) / (ms / 1000.0) / 1e9
        print(f"beam={beams:3d} {mode:>13} {r:>5}: {ms:7.2f} ms/user  {ms:7.2f} s/1000 users  "
              f"x{CORNAC_MS_PER_USER / ms:5.1f} vs cornac  invalid_rate={inv:.3f}  "
              f"{gflops:5.1f} GFLOP/s (compile+first batch {compile_s:.1f}s)")
      for r in args.score_over[1:]:
        print(f"summary: beam={beams} {mode}: {r} / {rule} = "
              f"{results[(beams, mode, r)] / results[(beams, mode, rule)]:.2f}x the time")
      results[(beams, mode)] = results[(beams, mode, rule)]
  if large:  # the same decode against the reference catalogue, in this run
    _, ref_trie, _ = build_trie(np.random.default_rng(1), args.reference_items, layout)
    ref_enc = enc.copy()
    ref_enc[:, 1:] = layout.codes_to_tokens(
        random_semantic_ids(np.random.default_rng(0), args.reference_items)[hist]).reshape(
            args.users, -1)
    for beams in args.beams:
      for mode in args.modes:
        ms_ref, _, _ = time_decode(module, params, ref_enc, ref_trie, beams, args.batch,
                                   mode == "constrained", rule)
        ratio = results[(beams, mode)] / ms_ref
        results[("reference", beams, mode)] = ms_ref
        print(f"summary: beam={beams} {mode}: {results[(beams, mode)]:.2f} ms/user with "
              f"{args.items:,} items vs {ms_ref:.2f} with {args.reference_items:,}: x{ratio:.2f} "
              f"(target <= 2); trie build {build_s:.1f}s (target < 60)")
  print(f"a plain fp32 matmul achieves {matmul_gflops():.1f} GFLOP/s on this machine right now "
        f"(shared; 2-core peak ~320)")
  return results


def peak_rss_gb() -> float:
  """This process's peak resident set size (Linux ru_maxrss is in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
  main()
