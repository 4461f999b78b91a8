"""The outcome store against poisoning (issue 12, finding 9) and semver order (issue 14):
outcomes match only predictions of the same owner, each model version has its own bound, and
evictions are reported; the newest version is the newest in semver order. Both stores (memory,
SQLite shared by parallel workers) behave alike."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.outcomes import open_prediction_log
from predictors.versions import newest, semver_key


@pytest.fixture(params=["memory", "sqlite"])
def log(request, tmp_path):
    log = open_prediction_log(None if request.param == "memory" else str(tmp_path / "log.sqlite"), capacity=100)
    yield log
    log.close()


def test_outcomes_match_only_the_owners_predictions(log):
    log.record("auto", "1.0.0", "req-1", np.array([0.9, 0.1]), "key:alice")
    log.record("auto", "1.0.0", "req-2", np.array([0.3]), "tenant:acme")
    log.flush()
    matched, unknown = log.add_outcomes("auto", [("req-1", 0, 0), ("req-2", 0, 1)], "key:mallory")
    assert matched == [] and unknown == [("req-1", 0), ("req-2", 0)], "another owner's ids are unknown"
    assert log.recent_outcomes("auto", "1.0.0", 10)[0].size == 0, "nothing reached the live metrics"
    matched, _ = log.add_outcomes("auto", [("req-1", 1, 0)], "key:alice")
    assert [(m.request_id, m.row, m.score) for m in matched] == [("req-1", 1, 0.1)]
    matched, _ = log.add_outcomes("auto", [("req-2", 0, 1)], "tenant:acme")
    assert [m.score for m in matched] == [0.3]


def test_rescoring_an_id_under_another_owner_overwrites_nothing(log):
    log.record("auto", "1.0.0", "shared-id", np.array([0.8]), "key:alice")
    log.record("auto", "1.0.0", "shared-id", np.array([0.01]), "key:mallory")  # same id, other client
    log.flush()
    matched, _ = log.add_outcomes("auto", [("shared-id", 0, 1)], "key:alice")
    assert [m.score for m in matched] == [0.8]


def test_each_version_has_its_own_bound_and_evictions_are_reported(log):
    evicted = []
    log.on_evict = lambda model, version, rows: evicted.append((model, version, rows))
    log.set_capacity("auto", "1.0.0", 100)
    log.set_capacity("auto", "1.1.0", 5)
    log.record("auto", "1.0.0", "kept", np.full(50, 0.5), "key:alice")
    for i in range(10):  # a flood on 1.1.0: ten 10-row requests
        log.record("auto", "1.1.0", f"flood-{i}", np.full(10, 0.5), "key:mallory")
    log.flush()
    matched, _ = log.add_outcomes("auto", [("kept", 49, 1)], "key:alice")
    assert len(matched) == 1, "another version's flood evicts nothing here"
    assert sum(r for m, v, r in evicted if v == "1.1.0") >= 90 and not [e for e in evicted if e[1] == "1.0.0"]
    matched, unknown = log.add_outcomes("auto", [("flood-0", 0, 1)], "key:mallory")
    assert matched == [] and unknown == [("flood-0", 0)]


def test_the_newest_version_is_semver_newest(log):
    for version, score in (("1.9.0", 0.1), ("1.10.0", 0.2)):
        log.record("auto", version, "r", np.array([score]), "o")
    log.flush()
    matched, _ = log.add_outcomes("auto", [("r", 0, 1)], "o")
    assert [m.version for m in matched] == ["1.10.0"]


def test_semver_key_and_newest():
    assert newest(["1.9.0", "1.10.0", "1.2.0"]) == "1.10.0"
    assert max(["1.9.0", "1.10.0"]) == "1.9.0", "what string order would pick"
    assert sorted(["1.0.0", "1.0.0-rc.1", "0.9.9"], key=semver_key) == ["0.9.9", "1.0.0-rc.1", "1.0.0"]
    assert newest([]) is None


def test_a_flood_on_the_same_version_evicts_the_flooders_own_predictions_first(log):
    """The measured attack: ten large requests to the version everyone uses. Over the bound, the
    owner holding the most rows loses its oldest first, so the victim's prediction stays."""
    evicted = []
    log.on_evict = lambda model, version, rows: evicted.append(rows)
    log.set_capacity("auto", "1.0.0", 100)
    log.record("auto", "1.0.0", "victim", np.array([0.7, 0.2]), "key:alice")
    log.flush()
    for i in range(10):
        log.record("auto", "1.0.0", f"flood-{i}", np.full(20, 0.5), "key:mallory")
        log.flush()
    matched, _ = log.add_outcomes("auto", [("victim", 1, 0)], "key:alice")
    assert [m.score for m in matched] == [0.2]
    assert sum(evicted) >= 100, "the flood still stays within the bound"
    matched, unknown = log.add_outcomes("auto", [("flood-9", 0, 1), ("flood-0", 0, 1)], "key:mallory")
    assert [m.request_id for m in matched] == ["flood-9"] and unknown == [("flood-0", 0)]


def test_with_one_owner_the_oldest_goes_first(log):
    log.set_capacity("auto", "1.0.0", 4)
    for i in range(4):
        log.record("auto", "1.0.0", f"r{i}", np.array([0.1, 0.2]), "")
        log.flush()
    matched, unknown = log.add_outcomes("auto", [("r0", 0, 1), ("r1", 0, 1), ("r2", 0, 1), ("r3", 0, 1)], "")
    assert [m.request_id for m in matched] == ["r2", "r3"] and [u[0] for u in unknown] == ["r0", "r1"]


def test_owners_holding_alike_each_lose_their_oldest(log):
    """Over the bound with owners holding the same number of rows, each gives up its oldest rows in
    turn (the SQLite store plans this from one count per owner)."""
    log.set_capacity("auto", "1.0.0", 10)
    for i in range(6):
        for owner in ("a", "b"):
            log.record("auto", "1.0.0", f"{owner}{i}", np.array([0.5]), owner)
    log.flush()
    for owner in ("a", "b"):
        matched, unknown = log.add_outcomes("auto", [(f"{owner}{i}", 0, 1) for i in range(6)], owner)
        assert [m.request_id for m in matched] == [f"{owner}{i}" for i in range(1, 6)]
        assert unknown == [(f"{owner}0", 0)]
