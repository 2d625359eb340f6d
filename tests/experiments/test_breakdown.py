"""cost_jax.experiments.breakdown: Recall@K by the test target's training interactions, and how
much of the catalogue the top-K lists cover, on hand-checked numbers."""

import dataclasses
import os
import sys

import numpy as np
import pytest

from cost_jax import results
from cost_jax.experiments import assemble, breakdown, pipeline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _pipeline_fakes import Fakes, small_profile, synthetic_dataset  # noqa: E402  pylint: disable=wrong-import-position

# 5 items; training parts [0, 0, 1] and [0, 2]: counts 3, 1, 1, 0, 0.
TRAIN = [np.array([0, 0, 1]), np.array([0, 2])]
TARGETS = np.array([0, 1, 3, 2])          # training counts 3, 1, 0, 1
TOPK = np.array([[0, 1], [0, 4], [3, -1], [2, 0]])  # hit, miss, hit, hit


def test_counts_buckets_and_recall_by_bucket_hand_checked():
  counts = breakdown.train_counts(TRAIN, 5)
  np.testing.assert_array_equal(counts, [3, 1, 1, 0, 0])
  b = breakdown.buckets(counts, TARGETS, edges=(1, 2))
  np.testing.assert_array_equal(b, [2, 1, 0, 1])   # 3 -> ">= 2", 1 -> "1", 0 -> "0"
  assert breakdown.bucket_labels((1, 2)) == ["0", "1", ">= 2"]
  assert breakdown.bucket_labels() == ["0", "1-4", "5-19", "20-99", ">= 100"]
  np.testing.assert_allclose(breakdown.recall_by_bucket(TOPK, TARGETS, b, 3, k=2),
                             [1.0, 0.5, 1.0])
  # k=1 keeps only the first column: users 0, 2 and 3 still hit, user 1 not
  np.testing.assert_allclose(breakdown.recall_by_bucket(TOPK, TARGETS, b, 4, k=1),
                             [1.0, 0.5, 1.0, np.nan])


def test_coverage_counts_distinct_items_and_the_head_share():
  # slots without the padding: 0 1 0 4 3 2 0 -> item 0 three times, four others once
  assert breakdown.coverage(TOPK, k=2, head=1) == (5, pytest.approx(3 / 7))
  assert breakdown.coverage(TOPK, k=1, head=2) == (3, pytest.approx(3 / 4))  # 0 0 3 2
  assert breakdown.coverage(np.full((2, 3), -1), k=3)[0] == 0


def test_markdown_averages_seeds_and_orders_rows():
  counts = breakdown.train_counts(TRAIN, 5)
  users = np.arange(4)
  worse = TOPK.copy()
  worse[0] = [4, 1]  # seed 2 misses user 0 (bucket ">= 2")
  lists = {"a": [(users, TOPK, TARGETS), (users, worse, TARGETS)], "b": [(users, TOPK, TARGETS)]}
  md = "\n".join(breakdown.markdown(lists, counts, ["b", "a", "c"], str.upper, k=2,
                                    edges=(1, 2)))
  assert "| row | 0 (25.0%) | 1 (50.0%) | >= 2 (25.0%) | distinct items | top-100 share |" in md
  assert md.index("| B |") < md.index("| A |")
  assert "| A | 1.0000 | 0.5000 | 0.5000 | 5 | 100.0% |" in md
  assert breakdown.markdown({}, counts, ["a"]) == []


def test_the_report_has_the_section_once_the_data_and_lists_exist(tmp_path):
  """Through the pipeline: a real processed dataset from the data stage, lists written by a
  scored stage the way every model writes them (cost_jax.results)."""

  class ListFakes(Fakes):
    def prepare(self, dataset, output):
      return synthetic_dataset(output)

    def transition(self, dataset_dir, output, ks):
      m = self._metrics(0.04)
      n = 24  # the synthetic dataset's users, all with >= 5 items
      topk = np.tile(np.arange(10), (n, 1))
      results.write_results(output, "test", m, topk, np.arange(n) % 30, user_ids=np.arange(n))
      return m

  out = str(tmp_path / "out")
  prof = dataclasses.replace(small_profile(methods=(), baselines=("transition",)), seeds=(0,))
  pipeline.Pipeline(prof, out, fns=ListFakes().fns()).run()
  md = open(os.path.join(out, "results.md")).read()
  assert "## Where the hits come from (Recall@10" in md
  assert "| Markov (item transitions) |" in md and "| 10 | 100.0% |" in md
  assert "seen transition (" in md and "| unseen (" in md
  assert assemble.training_view(type("P", (), {"results": {}})()) is None  # no data stage yet


def test_seen_transitions_hand_checked():
  # training pairs: (0,0), (0,1), (0,2); users' (last, target): (0,1) seen, (1,0) not (order
  # matters), (0,2) seen, (2,2) not
  seen = breakdown.seen_transitions(TRAIN, np.array([0, 1, 0, 2]), np.array([1, 0, 2, 2]))
  np.testing.assert_array_equal(seen, [True, False, True, False])
  assert not breakdown.seen_transitions([np.array([3])], np.array([3]), np.array([3])).any()


def test_markdown_splits_recall_by_seen_transition_over_the_users_it_knows():
  counts = breakdown.train_counts(TRAIN, 5)
  # user ids 10..13 in list order; flags known for 10, 11, 12 (13 is not in the table)
  seen = (np.array([10, 11, 12]), np.array([True, False, True]))
  lists = {"a": [(np.array([13, 10, 11, 12]), TOPK, TARGETS)]}
  md = "\n".join(breakdown.markdown(lists, counts, ["a"], k=2, edges=(1, 2), seen=seen))
  # the shares are over the users found: 2 seen of 3
  assert "| seen transition (66.7%) | unseen (33.3%) |" in md
  # buckets as above (1.0, .5, 1.0); list users 13 (hit, unknown), 10 (miss, seen), 11 (hit,
  # unseen), 12 (hit, seen): seen .5, unseen 1.0
  assert "| a | 1.0000 | 0.5000 | 1.0000 | 0.5000 | 1.0000 | 5 | 100.0% |" in md
  found, flag = breakdown.user_flags(seen, np.array([12, 9, 10]))
  np.testing.assert_array_equal(found, [True, False, True])
  np.testing.assert_array_equal(flag, [True, False, True])


def test_seen_by_user_reads_a_leave_one_out_split():
  split = type("S", (), {"user_index": np.array([7, 3]), "train": [np.array([1, 2]),
                                                                     np.array([2, 1])],
                         "valid_target": np.array([1, 1]), "test_target": np.array([2, 0])})()
  users, flags = breakdown.seen_by_user(split)
  np.testing.assert_array_equal(users, [3, 7])
  np.testing.assert_array_equal(flags, [False, True])  # user 7: (1, 2) occurs; user 3: (1, 0) not


def test_markdown_header_shares_are_over_every_user_some_row_scored():
  counts = breakdown.train_counts(TRAIN, 5)
  seen = (np.arange(4), np.array([True, False, False, False]))
  # the first row scored a sample of users 1 and 3 only (both unseen, buckets "1" and "1"); the
  # second row all four (buckets ">= 2", "1", "0", "1"; user 0 seen)
  lists = {"sample": [(np.array([1, 3]), TOPK[[1, 3]], TARGETS[[1, 3]])],
           "all": [(np.arange(4), TOPK, TARGETS)]}
  md = "\n".join(breakdown.markdown(lists, counts, ["sample", "all"], k=2, edges=(1, 2),
                                    seen=seen))
  assert "| 0 (25.0%) | 1 (50.0%) | >= 2 (25.0%) | seen transition (25.0%) | unseen (75.0%) |" in md
  # the sample's row has no user in buckets "0" and ">= 2" and no seen user
  assert "| sample | - | 0.5000 | - | - | 0.5000 |" in md


def test_steps_out_counts_training_steps_leaving_each_last_item():
  # TRAIN's steps: 0->0, 0->1 (part 1), 0->2 (part 2): item 0 has 3, items 1, 2, 7 none
  np.testing.assert_array_equal(breakdown.steps_out(TRAIN, np.array([0, 1, 2, 0])), [3, 0, 0, 3])
  np.testing.assert_array_equal(breakdown.steps_out([np.array([4])], np.array([4])), [0])


def test_seen_steps_markdown_splits_the_seen_users_by_steps_out_of_the_last_item():
  # users 0..3: seen, seen, seen, unseen; steps out of their last item 1, 4, 20, 1
  seen = (np.arange(4), np.array([True, True, True, False]))
  steps = (np.arange(4), np.array([1, 4, 20, 1]))
  topk = np.array([[5, 6], [7, 8], [9, 1], [2, 3]])
  # user 0 hits, user 1 misses, user 2 hits at rank 2, user 3 (unseen) hits but does not count
  lists = {"a": [(np.arange(4), topk, np.array([5, 0, 1, 2]))],
           "b": [(np.array([1, 2]), topk[[1, 2]], np.array([7, 0]))]}  # a sample: hit, miss
  md = "\n".join(breakdown.seen_steps_markdown(lists, ["a", "b"], seen, steps, str.upper, k=2,
                                               edges=(3, 6, 16)))
  assert "The 3 users whose test transition" in md
  assert "| row | 1-2 (33.3%) | 3-5 (33.3%) | 6-15 (0.0%) | >= 16 (33.3%) |" in md
  assert "| A | 1.0000 | 0.0000 | - | 1.0000 |" in md
  assert "| B | - | 1.0000 | - | 0.0000 |" in md
  # no seen user among the listed ones: no section
  assert breakdown.seen_steps_markdown({"a": [(np.array([3]), topk[[3]], np.array([2]))]},
                                       ["a"], seen, steps) == []
  assert breakdown.seen_steps_markdown({}, ["a"], seen, steps) == []
