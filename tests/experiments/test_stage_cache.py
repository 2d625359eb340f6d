"""cost_jax.experiments.stage_cache: each stage runs once per config, in a temporary folder, and
is re-run (never silently reused) when it was interrupted or its outputs changed."""

import hashlib
import json
import os
import time

import pytest

from cost_jax.experiments import stage_cache


def test_config_hash_is_canonical_and_changes_with_config():
  a = stage_cache.config_hash({"x": 1, "y": {"b": 2, "a": [1, 2]}})
  assert a == stage_cache.config_hash({"y": {"a": [1, 2], "b": 2}, "x": 1})  # key order irrelevant
  assert a != stage_cache.config_hash({"x": 2, "y": {"b": 2, "a": [1, 2]}})
  assert a != stage_cache.config_hash({"x": 1, "y": {"b": 2, "a": [2, 1]}})
  # Pinned: the first 12 hex digits of sha256 of the canonical JSON (sorted keys, no spaces).
  assert a == hashlib.sha256(b'{"x":1,"y":{"a":[1,2],"b":2}}').hexdigest()[:12]


def test_stage_cache_runs_once_then_skips(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))
  calls = []

  def fn(d):
    calls.append(d)
    t_end = time.process_time() + 0.2
    while time.process_time() < t_end:  # 0.2 s of this process's CPU: the marker records it
      pass
    with open(os.path.join(d, "out.txt"), "w") as f:
      f.write("hello")
    return {"n": 1}

  r1 = cache.run("s", {"a": 1}, fn)
  assert (r1.status, r1.value) == ("ran", {"n": 1})
  assert open(os.path.join(r1.path, "out.txt")).read() == "hello"
  marker = json.load(open(os.path.join(r1.path, stage_cache.DONE_FILE)))
  assert marker["config"] == {"a": 1} and marker["hash"] == stage_cache.config_hash({"a": 1})
  assert 0.19 <= marker["cpu_seconds"] <= marker["seconds"] + 0.05 and marker["seconds"] < 300
  assert r1.hash in os.path.basename(r1.path)
  r2 = cache.run("s", {"a": 1}, fn)
  assert (r2.status, r2.value, len(calls)) == ("cached", {"n": 1}, 1)
  assert r2.seconds == pytest.approx(r1.seconds)
  r3 = cache.run("s", {"a": 2}, fn)  # new config -> new dir, runs
  assert r3.status == "ran" and r3.path != r1.path and len(calls) == 2


def test_stage_cache_reruns_interrupted_stage(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))

  def crash(d):
    with open(os.path.join(d, "partial"), "w") as f:
      f.write("x")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.run("s", {"a": 1}, crash)
  path = cache.path("s", {"a": 1})
  assert not os.path.exists(path)                 # nothing half-written in place
  assert cache.done_marker("s", {"a": 1}) is None
  # also a final dir without DONE (e.g. copied in by hand) counts as unfinished
  os.makedirs(path)
  r = cache.run("s", {"a": 1}, lambda d: open(os.path.join(d, "ok"), "w").close())
  assert r.status == "ran"
  assert sorted(os.listdir(path)) == ["DONE", "ok"]
  assert not os.path.exists(path + ".tmp")


def test_resumable_stage_keeps_interrupted_work(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path))
  seen = []

  def step(d):
    seen.append(sorted(os.listdir(d)))
    if not os.path.exists(os.path.join(d, "ckpt")):
      open(os.path.join(d, "ckpt"), "w").close()
      raise RuntimeError("killed after a checkpoint")
    return {"ok": 1}

  with pytest.raises(RuntimeError):
    cache.run("train", {"a": 1}, step, resume=True)
  r = cache.run("train", {"a": 1}, step, resume=True)
  assert r.status == "ran" and seen[1][0] == stage_cache.SPENT_FILE and "ckpt" in seen[1]
  assert sorted(os.listdir(r.path)) == ["DONE", "ckpt"]


def test_a_cached_stage_whose_outputs_are_gone_is_rerun(tmp_path, capsys):
  cache = stage_cache.StageCache(str(tmp_path))
  calls = []

  def work(d):
    calls.append(d)
    with open(os.path.join(d, "out.bin"), "wb") as f:
      f.write(b"12345")
    return {"ok": 1}

  assert cache.run("s", {"a": 1}, work).status == "ran"
  assert cache.run("s", {"a": 1}, work).status == "cached"
  os.remove(os.path.join(cache.path("s", {"a": 1}), "out.bin"))
  assert cache.run("s", {"a": 1}, work).status == "ran"
  assert "out.bin is gone" in capsys.readouterr().err
  with open(os.path.join(cache.path("s", {"a": 1}), "out.bin"), "wb") as f:
    f.write(b"1")
  assert cache.run("s", {"a": 1}, work).status == "ran" and len(calls) == 3
  capsys.readouterr()
  # A same-size replacement is caught by the content hash.
  with open(os.path.join(cache.path("s", {"a": 1}), "out.bin"), "wb") as f:
    f.write(b"54321")
  assert cache.run("s", {"a": 1}, work).status == "ran" and len(calls) == 4
  err = capsys.readouterr().err
  assert "out.bin has other contents (sha256" in err
  assert cache.run("s", {"a": 1}, work).status == "cached" and len(calls) == 4
  # Nothing the user had is deleted: each changed version was kept beside the stage.
  path = cache.path("s", {"a": 1})
  assert f"kept in {path}.changed-3" in err
  kept = [open(os.path.join(f"{path}.changed-{n}", "out.bin"), "rb").read() if n > 1 else
          os.path.exists(os.path.join(f"{path}.changed-{n}", "out.bin")) for n in (1, 2, 3)]
  assert kept == [False, b"1", b"54321"]


def _writer(calls, text):
  def fn(d):
    calls.append(d)
    with open(os.path.join(d, "out.txt"), "w") as f:
      f.write(text)
    return {"text": text}
  return fn


def test_a_stage_finished_in_another_folder_is_linked_in_not_run(tmp_path):
  calls = []
  first = stage_cache.StageCache(str(tmp_path / "a"))
  ran = first.run("s", {"a": 1}, _writer(calls, "from a"))
  second = stage_cache.StageCache(str(tmp_path / "b"), reuse_from=[str(tmp_path / "a")])
  assert second.reusable("s", {"a": 1}) == os.path.realpath(ran.path)
  assert second.reusable("s", {"a": 2}) is None  # another config: nothing to reuse
  r = second.run("s", {"a": 1}, _writer(calls, "from b"))
  assert (r.status, r.value, len(calls)) == ("cached", {"text": "from a"}, 1)
  here = second.path("s", {"a": 1})
  assert os.path.islink(here) and open(os.path.join(here, "out.txt")).read() == "from a"
  assert second.reusable("s", {"a": 1}) is None  # linked now: done here
  r = second.run("s", {"a": 2}, _writer(calls, "from b"))  # a config only b has: runs in b
  assert r.status == "ran" and not os.path.islink(r.path) and len(calls) == 2


def test_a_reused_stage_changed_in_its_folder_reruns_here_and_leaves_that_folder_alone(tmp_path):
  calls = []
  first = stage_cache.StageCache(str(tmp_path / "a"))
  ran = first.run("s", {"a": 1}, _writer(calls, "from a"))
  second = stage_cache.StageCache(str(tmp_path / "b"), reuse_from=[str(tmp_path / "a")])
  second.run("s", {"a": 1}, _writer(calls, "from b"))
  with open(os.path.join(ran.path, "out.txt"), "w") as f:  # a's stage edited by hand
    f.write("edited")
  r = second.run("s", {"a": 1}, _writer(calls, "from b"))
  assert r.status == "ran" and not os.path.islink(r.path) and len(calls) == 2
  assert open(os.path.join(r.path, "out.txt")).read() == "from b"
  assert open(os.path.join(ran.path, "out.txt")).read() == "edited"  # a's files untouched
  kept = [n for n in os.listdir(os.path.dirname(r.path)) if ".changed-" in n]
  assert len(kept) == 1 and os.path.islink(os.path.join(os.path.dirname(r.path), kept[0]))


def test_a_reused_stage_whose_folder_is_gone_reruns_here(tmp_path):
  import shutil
  calls = []
  stage_cache.StageCache(str(tmp_path / "a")).run("s", {"a": 1}, _writer(calls, "from a"))
  second = stage_cache.StageCache(str(tmp_path / "b"), reuse_from=[str(tmp_path / "a")])
  second.run("s", {"a": 1}, _writer(calls, "from b"))
  shutil.rmtree(tmp_path / "a")  # the link is broken now
  r = second.run("s", {"a": 1}, _writer(calls, "from b"))
  assert r.status == "ran" and not os.path.islink(r.path)
  assert open(os.path.join(r.path, "out.txt")).read() == "from b"


def test_reuse_from_the_same_folder_is_ignored(tmp_path):
  cache = stage_cache.StageCache(str(tmp_path), reuse_from=[str(tmp_path)])
  assert cache.reuse_from == ()


def test_a_resumable_stage_records_its_time_while_it_runs(tmp_path):
  # A stage killed outright (no exception, no cleanup) must still have counted its time: the
  # SPENT file is rewritten while the stage runs, not only when it fails.
  cache = stage_cache.StageCache(str(tmp_path), spent_every_s=0.02)
  seen = []

  def step(d):
    spent_file = os.path.join(d, stage_cache.SPENT_FILE)
    deadline = time.monotonic() + 10.0
    while not os.path.exists(spent_file) and time.monotonic() < deadline:
      time.sleep(0.01)
    seen.append(stage_cache._read_spent(d))
    return {"ok": 1}

  r = cache.run("train", {"a": 1}, step, resume=True)
  assert seen[0][0] > 0.0                      # written during the run
  assert r.status == "ran"
  assert sorted(os.listdir(r.path)) == ["DONE"]  # and gone once the stage finished
  # a stage that does not resume keeps no such file
  cache.run("other", {"a": 1}, lambda d: seen.append(sorted(os.listdir(d))))
  assert seen[-1] == []
