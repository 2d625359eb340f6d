"""TIGER's capabilities (§4.4, §5): the epsilon rule, Entropy@K, the cold-start split,
Semantic_KNN by hand, and the three studies end to end on a tiny trained model."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _trainer_toy as toy  # noqa: E402  pylint: disable=wrong-import-position

from cost_jax.baselines.semantic_knn import semantic_knn_topk  # noqa: E402
from cost_jax.data import categories, cold_start as cold_data  # noqa: E402
from cost_jax.data.processed import ProcessedDataset  # noqa: E402
from cost_jax.experiments import capabilities as cap_lib  # noqa: E402
from cost_jax.io import UserError  # noqa: E402
from cost_jax.metrics import category_entropy_at_k  # noqa: E402
from cost_jax.seq2seq import capabilities, cli, cold_start, run_dir  # noqa: E402
from cost_jax.seq2seq import studies  # noqa: E402
from cost_jax.seq2seq.studies import dataset_dir_of as cold_data_dir  # noqa: E402
from cost_jax.seq2seq import trainer as train  # noqa: E402


def test_epsilon_rule_on_a_hand_built_trie():
  # Items 0-3 seen, 4-7 unseen. IDs (c1, c2, last): 4 shares (0, 0) with 0 and 1;
  # 5 shares (1, 0) with 2; 6 shares nothing with a seen item; 7 shares (3, 3) with 6.
  tokens = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0], [2, 1, 0],
                     [0, 0, 2], [1, 0, 1], [3, 3, 0], [3, 3, 1]])
  unseen = np.array([False] * 4 + [True] * 4)
  groups = cold_start.unseen_by_prefix(tokens, unseen)
  assert groups == {(0, 0): [4], (1, 0): [5], (3, 3): [6, 7]}
  beams = np.array([[2, 0, 1, 3, -1]])  # the decoded items, best first
  blend = lambda b, e, k: cold_start.blend_unseen(b, tokens, unseen, groups, e, k).tolist()
  # epsilon 0: the seen items only.
  assert blend(beams, 0.0, 4) == [[2, 0, 1, 3]]
  # epsilon 0.25 at K = 4: one unseen slot, taken by the best beam's sibling (5).
  assert blend(beams, 0.25, 4) == [[2, 5, 0, 1]]
  # epsilon 0.5: two slots; 4 follows its seen sibling 0.
  assert blend(beams, 0.5, 4) == [[2, 5, 0, 4]]
  assert blend(beams, 1.0, 6) == [[2, 5, 0, 4, 1, 3]]
  # A decoded unseen ID (6) is not a seen item: it brings in the unseen items of its prefix
  # (6, then 7) under the quota, and nothing when epsilon is 0.
  beams = np.array([[6, 3, 0, -1]])
  assert blend(beams, 0.0, 3) == [[3, 0, -1]]
  assert blend(beams, 1 / 3, 3) == [[6, 3, 0]]
  assert blend(beams, 1.0, 4) == [[6, 7, 3, 0]]
  with pytest.raises(ValueError):
    blend(beams, 1.5, 4)
  # A one-token prefix widens the neighbourhood: 0 and 1 share (0,) with 4, and 3 shares (2,)
  # with nothing; 2 shares (1,) with 5.
  g1 = cold_start.unseen_by_prefix(tokens, unseen, 1)
  assert g1 == {(0,): [4], (1,): [5], (3,): [6, 7]}
  assert cold_start.blend_unseen(np.array([[6, 3]]), tokens, unseen, g1, 1.0, 4, 1).tolist() == [
      [6, 7, 3, -1]]


def test_epsilon_quota_is_floor_epsilon_k_at_every_k():
  # The hand-built trie above; beams decode the seen items 2, 0, 1, 3. Target 5 (unseen, the
  # sibling of the best beam) and target 4 (the sibling of the second).
  tokens = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0], [2, 1, 0],
                     [0, 0, 2], [1, 0, 1], [3, 3, 0], [3, 3, 1]])
  unseen = np.array([False] * 4 + [True] * 4)
  groups = cold_start.unseen_by_prefix(tokens, unseen)
  beams = np.array([[2, 0, 1, 3], [2, 0, 1, 3]])
  ks = range(1, 11)
  lists = cold_start.blend_unseen_per_k(beams, tokens, unseen, groups, 0.1, ks)
  for k in range(1, 10):  # floor(0.1 K) = 0: no unseen item below K = 10
    assert lists[k].shape == (2, k)
    assert not np.isin(lists[k], [4, 5, 6, 7]).any(), k
  assert lists[10][0].tolist() == [2, 5, 0, 1, 3] + [-1] * 5
  got = cold_start.recall_by_k(lists, np.array([5, 4]))
  assert [got[f"recall@{k}"] for k in ks] == [0.0] * 9 + [0.5]
  # epsilon 0.2: one unseen slot from K = 5, two at K = 10 (then 4 follows its sibling 0).
  lists = cold_start.blend_unseen_per_k(beams, tokens, unseen, groups, 0.2, ks)
  assert lists[4][0].tolist() == [2, 0, 1, 3]
  assert lists[5][0].tolist() == [2, 5, 0, 1, 3]
  assert lists[10][0].tolist() == [2, 5, 0, 4, 1, 3] + [-1] * 4
  got = cold_start.recall_by_k(lists, np.array([5, 4]))
  assert [got[f"recall@{k}"] for k in ks] == [0.0] * 4 + [0.5] * 5 + [1.0]


def test_entropy_at_k_by_hand():
  cats = [[0], [0], [1, 2], [], [1]]
  # Top 3 = items 0, 1, 2: mass {0: 2, 1: .5, 2: .5} / 3.
  p = np.array([2, .5, .5]) / 3
  expect = -(p * np.log(p)).sum()
  got = category_entropy_at_k(np.array([[0, 1, 2, 4], [3, -1, 0, 0], [0, 4, 3, 3]]), cats, 3)
  assert got[0] == pytest.approx(expect)
  assert got[1] == 0.0  # one categorized item: no spread
  assert got[2] == pytest.approx(np.log(2))  # two categories, equal mass
  assert category_entropy_at_k(np.array([[0, 1, 2, 4]]), cats, 4)[0] == pytest.approx(
      -sum(q * np.log(q) for q in np.array([2, 1.5, .5]) / 4))


def test_sampled_entropy_reads_exactly_k_draws():
  cats = [[0], [1], [2]]
  draws = np.array([[0, 0, 0, 1], [0, 1, 2, 2]])  # user 0 drew item 0 three times in its top 3
  distinct = capabilities.first_distinct(draws, 3)
  assert distinct.tolist() == [[0, 1, -1], [0, 1, 2]]
  m = studies.diversity_metrics(distinct, np.array([1, 2]), cats, ks=(3,),
                                        entropy_lists=draws)
  # Over the 3 draws: user 0 is all category 0 (0 nats), user 1 three categories (log 3).
  assert m["entropy@3"] == pytest.approx(np.log(3) / 2)
  assert m["recall@3"] == pytest.approx(1.0)  # distinct items: 1 is in user 0's list
  # Reading the padded distinct list instead would score user 0's two items, log 2 nats.
  assert studies.diversity_metrics(distinct, np.array([1, 2]), cats, ks=(3,))[
      "entropy@3"] == pytest.approx((np.log(2) + np.log(3)) / 2)


def test_semantic_knn_and_list_helpers_by_hand():
  emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]], np.float32)
  # History {0}: cosine order 1, 3, 2, 4; history items are never returned.
  assert semantic_knn_topk([np.array([0])], emb, 3).tolist() == [[1, 3, 2]]
  assert semantic_knn_topk([np.array([0, 2])], emb, 2).tolist() == [[1, 3]]
  assert semantic_knn_topk([np.array([0])], emb, 2, candidates=np.array(
      [1, 0, 1, 0, 1], bool)).tolist() == [[2, 4]]
  assert capabilities.first_distinct(np.array([[3, 3, -1, 5, 3, 7, 8]]), 3).tolist() == [[3, 5, 7]]
  assert capabilities.first_distinct(np.array([[2, 2, 2]]), 3).tolist() == [[2, -1, -1]]
  np.testing.assert_allclose(capabilities.invalid_share_by_k(np.array([[1, -1, 2, -1],
                                                                       [-1, 3, 4, 5]])),
                             [0.5, 0.5, 1 / 3, 3 / 8])


def test_cold_start_split_removes_unseen_items_from_training(tmp_path):
  src = toy.write_processed(str(tmp_path / "ds"), num_users=60)
  info = cold_data.make_cold_start(src, str(tmp_path / "cold"), fraction=0.2, seed=3)
  unseen = set(info["unseen_items"])
  loo = ProcessedDataset.load(src).leave_one_out()
  assert len(unseen) == round(0.2 * len(set(loo.test_target.tolist())))
  assert unseen <= set(loo.test_target.tolist())
  cold = ProcessedDataset.load(str(tmp_path / "cold"))
  assert cold.num_items == toy.NUM_ITEMS  # every item keeps its row (and an ID later)
  cases = 0
  for seq in cold.item_sequences():
    assert not set(seq[:-1].tolist()) & unseen  # nowhere but as the last (test) item
    cases += int(len(seq) >= 3 and seq[-1] in unseen)
  assert cases == info["cold_start_test_users"] > 0
  np.testing.assert_array_equal(cold_data.unseen_items(str(tmp_path / "cold")),
                                sorted(unseen))
  assert cold_data.unseen_items(src) is None
  with pytest.raises(UserError, match="fraction"):
    cold_data.make_cold_start(src, str(tmp_path / "bad"), fraction=1.5)


def test_categories_field_lookup(tmp_path):
  src = toy.write_processed(str(tmp_path / "ds"))
  with pytest.raises(UserError, match="no category field"):
    categories.item_categories(src)
  items = pd.read_parquet(os.path.join(src, "items.parquet"))
  items["genres"] = ["Action, Comedy" if i % 2 else "Drama" for i in range(len(items))]
  items.to_parquet(os.path.join(src, "items.parquet"))
  lists, names, field = categories.item_categories(src)
  assert field == "genres" and names == ["Drama", "Action", "Comedy"]
  assert lists[0] == [0] and lists[1] == [1, 2]
  with pytest.raises(UserError, match="no item field 'brand'"):
    categories.item_categories(src, "brand")


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("captoy")
  src = toy.write_processed(str(root / "ds"), num_users=80)
  items = pd.read_parquet(os.path.join(src, "items.parquet"))
  items["genres"] = [f"g{i % 3}, g{i % 5 + 3}" for i in range(len(items))]
  items.to_parquet(os.path.join(src, "items.parquet"))
  np.save(os.path.join(src, "embeddings.npy"),
          np.random.default_rng(0).normal(size=(toy.NUM_ITEMS, 8)).astype(np.float32))
  cold_dir = str(root / "cold")
  cold_data.make_cold_start(src, cold_dir, fraction=0.25, seed=0)
  tok = toy.write_tokenizer(str(root / "tok"))
  settings = dict(toy.tiny_model_overrides(), **toy.fast_train_overrides(num_train_steps=40))
  train.train_and_evaluate(model_dir=str(root / "m"), dataset_dir=cold_dir, tokenizer_dir=tok,
                           eval_at_end=False, eval_test=True, show_progress=False, **settings)
  return str(root / "m"), cold_dir


def test_evaluate_cli_capability_flags(cold_run, capsys):
  model_dir, _ = cold_run
  assert cli.evaluate_main(["--model_dir", model_dir, "--invalid_ids"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["k"] == list(range(1, 11))
  assert out["constrained"] == [0.0] * 10  # the trie never yields an invalid ID
  assert all(0.0 <= x <= 1.0 for x in out["unconstrained"])
  assert cli.evaluate_main(["--model_dir", model_dir, "--temperature", "2.0",
                            "--gin.CapabilityConfig.num_samples=30",
                            "--gin.TrainConfig.topk=10"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["category_field"] == "genres" and out["temperature"] == 2.0
  assert 0.0 <= out["recall@10"] <= 1.0 and out["entropy@10"] > 0.0
  assert os.path.isfile(os.path.join(model_dir, "capabilities_temperature_2.json"))
  assert cli.evaluate_main(["--model_dir", model_dir, "--cold_start_epsilon", "0,0.5"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["cold_start_users"] > 0
  # With epsilon 0 no unseen item is ever retrieved, so every cold-start case is a miss.
  assert out["recall"]["TIGER (epsilon=0)"][9] == 0.0
  # epsilon 0.5 scores each K on its own list: recomputed here from the beams over every
  # item's ID (seen and unseen), blended under floor(0.5 K) at each K.
  run = run_dir.load_run(model_dir)
  arrays = run.split_arrays("test")
  unseen = cold_data.unseen_items(cold_data_dir(run))
  cases = np.isin(arrays.item_index, unseen)
  beams = capabilities.beam_lists(run, arrays.encoder_input_tokens[cases],
                                  run.train_config.num_beams)
  mask = np.isin(np.arange(len(run.item_tokens)), unseen)
  per_k = cold_start.blend_unseen_per_k(beams, run.item_tokens, mask,
                                        cold_start.unseen_by_prefix(run.item_tokens, mask),
                                        0.5, range(1, 11))
  want = cold_start.recall_by_k(per_k, arrays.item_index[cases])
  assert out["recall"]["TIGER (epsilon=0.5)"] == pytest.approx(
      [want[f"recall@{k}"] for k in range(1, 11)])
  # The CLI and the reproduction's stage run one study: the same numbers.
  cfg = cap_lib.settings({"epsilons": (0.0, 0.5), "cold_start_prefixes": (0,)})
  stage = cap_lib.cold_start_study(model_dir, cold_data_dir(run), cfg)
  assert stage["recall"] == out["recall"]
  # The toy's 2-token IDs: an unseen item shares its first token with 5 others, so epsilon 0.5
  # brings unseen items in (structural: it does not depend on how well the toy model learned).
  assert np.isin(per_k[10], unseen).any()
  with pytest.raises(SystemExit) as e:
    cli.evaluate_main(["--model_dir", model_dir, "--cold_start_epsilon", "2"])
  assert e.value.code == 2
  assert "epsilon" in capsys.readouterr().err


def test_diversity_study_entropy_reads_the_draws_and_recall_the_distinct_items(cold_run):
  # The study's Entropy@K is over the first K draws (repeats kept), its Recall@K over the first
  # K distinct items: recomputed here from the same seeded samples.
  model_dir, _ = cold_run
  run = run_dir.load_run(model_dir)
  arrays = run.split_arrays("test")
  cats = [[i % 3] for i in range(len(run.item_tokens))]
  rows = studies.diversity_study(run, arrays, cats, [0.3], 30, seed=0, ks=(5,))
  lists, draws = capabilities.sampled_lists(run, arrays.encoder_input_tokens, 0.3, 5, 30, seed=0)
  assert rows[0]["entropy@5"] == pytest.approx(category_entropy_at_k(draws, cats, 5).mean())
  assert rows[0]["recall@5"] == pytest.approx(
      np.mean((lists == arrays.item_index[:, None]).any(1)))
  # At T = 0.3 the sampler repeats itself, so the padded distinct lists would give another
  # entropy: the check above can tell the two apart.
  assert (lists < 0).any()
  assert category_entropy_at_k(lists, cats, 5).mean() != pytest.approx(rows[0]["entropy@5"])


def test_studies_write_tables_and_plots(cold_run, tmp_path):
  model_dir, cold_dir = cold_run
  cfg = cap_lib.settings({"studies": "cold_start,diversity,invalid_ids", "num_beams": 10,
                          "temperatures": (1.0, 2.0), "num_samples": 30, "epsilons": (0.0, 0.5),
                          "cold_start_prefixes": (0,)})
  res = cap_lib.run_studies(str(tmp_path), cfg, model_dir=model_dir, dataset_dir=cold_dir,
                            cold_model_dir=model_dir, cold_dataset_dir=cold_dir, seed=0)
  assert set(res) >= {"cold_start", "diversity", "invalid_ids"}
  cs = res["cold_start"]
  assert cs["recall"]["TIGER (epsilon=0)"] == [0.0] * 10
  assert cs["unseen_share@10"]["TIGER (epsilon=0.5)"] <= 0.5
  assert cs["unseen_share@10"]["TIGER (epsilon=0.5)"] > 0.0  # the rule does bring them in
  assert cs["unseen_share@10"]["TIGER (epsilon=0)"] == 0.0
  assert set(cs["paired_p@10_vs_semantic_knn"]) == {"TIGER (epsilon=0)", "TIGER (epsilon=0.5)"}
  assert [r["temperature"] for r in res["diversity"]["rows"]] == [None, 1.0, 2.0, None]
  assert res["diversity"]["rows"][-1]["decoding"] == "uniform random items"
  for name in cap_lib.PLOTS.values():
    assert os.path.getsize(tmp_path / name) > 1000
  md = "\n".join(cap_lib.markdown(res))
  assert "Cold-start retrieval" in md and "Entropy@10" in md and "Invalid IDs" in md
  with pytest.raises(UserError, match="unknown stud"):
    cap_lib.settings({"studies": "speed"})


def test_evaluate_with_the_other_scoring_rule_writes_beside(cold_run, capsys):
  model_dir, _ = cold_run
  assert cli.evaluate_main(["--model_dir", model_dir, "--gin.TrainConfig.score_over='level'"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["score_over"] == "level"
  saved = json.load(open(os.path.join(model_dir, "metrics_test_level.json")))
  assert saved["recall@10"] == pytest.approx(out["recall@10"])
  assert json.load(open(os.path.join(model_dir, "metrics.json")))["score_over"] == "vocab"
