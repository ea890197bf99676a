"""The store: pinned index records and leaves, strict index parsing, safe file reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.merkle import leaf_hash
from trainwitness.commit.store import (
    INDEX_FILE,
    CheckpointRecord,
    StepRecord,
    append_line,
    atomic_write,
    checkpoint_relpath,
    checkpoint_steps,
    compose_state_digest,
    find_checkpoint,
    read_index,
    read_store_file,
)
from trainwitness.errors import MalformedInputError, MissingInputError

STEP = StepRecord(
    step=3, sample_ids=(5, 1, 9), batch_digest="sha256:" + "11" * 32, rng_digest="sha256:" + "22" * 32, loss=0.6931471824645996
)
CHECKPOINT = CheckpointRecord(index=1, step=20, weights_digest="sha256:" + "44" * 32, rest_digest="sha256:" + "33" * 32)


# -- golden bytes ------------------------------------------------------------------------------------


def test_step_record_leaves_are_pinned() -> None:
    assert STEP.batch_leaf() == (
        b'{"batch_digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",'
        b'"loss":0.6931471824645996,"sample_ids":[5,1,9],"step":3,"type":"batch"}'
    )
    assert STEP.rng_leaf() == b'{"rng_digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","step":3,"type":"rng"}'
    assert leaf_hash(STEP.batch_leaf()).hex() == "cf2665f075935730c9f1a1515601053f40492fe3c16d7e1c19e47a735c98cde0"


def test_checkpoint_record_leaf_is_pinned() -> None:
    # Format v2 (issue 11): the leaf holds the weights and rest digests; the state digest is derived.
    assert CHECKPOINT.leaf() == (
        b'{"index":1,"rest_digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333",'
        b'"step":20,"type":"checkpoint",'
        b'"weights_digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444"}'
    )


def test_checkpoint_state_digest_is_derived_from_its_weights_and_rest() -> None:
    composed = b'{"rest":"sha256:' + b"33" * 32 + b'","weights":"sha256:' + b"44" * 32 + b'"}'
    expected = hashlib.sha256(b"trainwitness:state:v2\x00" + len(composed).to_bytes(8, "big") + composed).hexdigest()
    assert CHECKPOINT.state_digest == compose_state_digest(CHECKPOINT.weights_digest, CHECKPOINT.rest_digest) == "sha256:" + expected
    other = CheckpointRecord(index=1, step=20, weights_digest="sha256:" + "55" * 32, rest_digest=CHECKPOINT.rest_digest)
    assert other.state_digest != CHECKPOINT.state_digest  # a leaf's weights digest cannot change alone


def test_index_record_lines_are_pinned() -> None:
    assert canonical_json(STEP.to_json()) == (
        b'{"batch_digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","kind":"step",'
        b'"loss":0.6931471824645996,"rng_digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",'
        b'"sample_ids":[5,1,9],"step":3}'
    )
    assert canonical_json(CHECKPOINT.to_json()).startswith(b'{"index":1,"kind":"checkpoint","rest_digest":')


def test_checkpoint_paths_and_steps() -> None:
    assert checkpoint_relpath(40, compressed=True) == "checkpoints/0000000040.safetensors.zst"
    assert checkpoint_relpath(40, compressed=False) == "checkpoints/0000000040.safetensors"
    assert checkpoint_steps(120, 20) == [0, 20, 40, 60, 80, 100, 120]
    assert checkpoint_steps(50, 20) == [0, 20, 40, 50]
    with pytest.raises(ValueError):
        checkpoint_steps(0, 20)


# -- the index ---------------------------------------------------------------------------------------


def _step(n: int) -> StepRecord:
    return StepRecord(step=n, sample_ids=(n, n + 1), batch_digest="sha256:" + "ab" * 32, rng_digest="sha256:" + "cd" * 32)


def _checkpoint(index: int, step: int) -> CheckpointRecord:
    return CheckpointRecord(index=index, step=step, weights_digest="sha256:" + "01" * 32, rest_digest="sha256:" + "ef" * 32)


def _write_index(store: Path, records: list[StepRecord | CheckpointRecord]) -> None:
    store.mkdir(exist_ok=True)
    (store / INDEX_FILE).touch()
    for record in records:
        append_line(store / INDEX_FILE, record.to_json())


def test_index_round_trips_in_order(tmp_path: Path) -> None:
    records = [_checkpoint(0, 0), _step(0), _step(1), _checkpoint(1, 2)]
    _write_index(tmp_path, records)
    index = read_index(tmp_path)
    assert index.steps == (_step(0), _step(1))
    assert index.checkpoints == (_checkpoint(0, 0), _checkpoint(1, 2))
    assert index.batch_leaves() == [_step(0).batch_leaf(), _step(1).batch_leaf()]


def test_torn_last_line_is_refused_unless_resuming(tmp_path: Path) -> None:
    _write_index(tmp_path, [_checkpoint(0, 0), _step(0)])
    with open(tmp_path / INDEX_FILE, "ab") as f:
        f.write(canonical_json(_step(1).to_json())[:25])
    with pytest.raises(MalformedInputError, match="unfinished record"):
        read_index(tmp_path)
    index = read_index(tmp_path, allow_torn_tail=True)
    assert index.steps == (_step(0),)
    assert index.torn_tail_bytes == 25


@pytest.mark.parametrize(
    ("records", "cause"),
    [
        ([_step(1)], "step 1 out of order"),
        ([_checkpoint(1, 0)], "checkpoint 1 at step 0 out of order"),
        ([_checkpoint(0, 0), _step(0), _checkpoint(1, 0)], "out of order"),
    ],
)
def test_out_of_order_index_is_refused(tmp_path: Path, records: list[StepRecord | CheckpointRecord], cause: str) -> None:
    _write_index(tmp_path, records)
    with pytest.raises(MalformedInputError, match=cause):
        read_index(tmp_path)


_LINE_WITHOUT_LOSS = (
    b'{"kind":"step","step":0,"sample_ids":[],"batch_digest":"sha256:' + b"ab" * 32 + b'","rng_digest":"sha256:' + b"cd" * 32 + b'"}'
)


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        (b'{"kind":"weird"}', "unknown record kind"),
        (b"[1]", "not a JSON object"),
        (b'{"kind":"step","step":0,"sample_ids":[-1],"batch_digest":"x","rng_digest":"y"}', "non-negative"),
        (b'{"kind":"step","step":true,"sample_ids":[],"batch_digest":"x","rng_digest":"y"}', "record.step has the wrong type"),
        (b'{"kind":"step","step":0,"sample_ids":[],"batch_digest":"x","rng_digest":"y"}', "batch_digest"),
        (_LINE_WITHOUT_LOSS, "'loss' is missing"),
        (_LINE_WITHOUT_LOSS[:-1] + b',"loss":"0.5"}', "'loss' is missing or not a float"),
        (_LINE_WITHOUT_LOSS[:-1] + b',"loss":1}', "'loss' is missing or not a float"),
    ],
)
def test_malformed_index_lines_are_refused_with_their_line(tmp_path: Path, line: bytes, cause: str) -> None:
    (tmp_path / INDEX_FILE).write_bytes(line + b"\n")
    with pytest.raises(MalformedInputError, match="index.jsonl line 1") as raised:
        read_index(tmp_path)
    assert cause in str(raised.value)


def test_extra_fields_in_an_index_record_are_refused(tmp_path: Path) -> None:
    record = dict(_step(0).to_json(), extra=1)
    (tmp_path / INDEX_FILE).write_bytes(canonical_json(record) + b"\n")
    with pytest.raises(MalformedInputError, match="unexpected fields"):
        read_index(tmp_path)


def test_missing_store_is_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        read_index(tmp_path / "nowhere")


# -- file access -------------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write(tmp_path / "sub" / "f", b"data")
    assert (tmp_path / "sub" / "f").read_bytes() == b"data"
    assert os.listdir(tmp_path / "sub") == ["f"]


def test_store_reads_refuse_symlinks_and_oversize_files(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    store = tmp_path / "store"
    store.mkdir()
    (store / "link").symlink_to(outside)
    with pytest.raises(MalformedInputError, match="cannot be opened safely"):
        read_store_file(store, "link", 100)
    (store / "big").write_bytes(b"x" * 10)
    with pytest.raises(MalformedInputError, match="over the limit"):
        read_store_file(store, "big", 9)
    with pytest.raises(MissingInputError, match="missing"):
        read_store_file(store, "absent", 9)
    (store / "dir").mkdir()
    with pytest.raises(MalformedInputError, match="dir is not a regular file"):
        read_store_file(store, "dir", 9)


def test_store_reads_refuse_a_symlinked_directory_pointing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    atomic_write(outside / "0000000000.safetensors", b"data")
    store = tmp_path / "store"
    store.mkdir()
    (store / "checkpoints").symlink_to(outside)
    with pytest.raises(MalformedInputError, match="is a symlink"):
        read_store_file(store, checkpoint_relpath(0, compressed=False), 100)


def test_store_read_of_a_planted_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(MalformedInputError, match="fifo is not a regular file"):
        read_store_file(tmp_path, "fifo", 9)


def test_find_checkpoint_prefers_the_compressed_file(tmp_path: Path) -> None:
    atomic_write(tmp_path / checkpoint_relpath(20, compressed=False), b"")
    assert find_checkpoint(tmp_path, 20) == checkpoint_relpath(20, compressed=False)
    atomic_write(tmp_path / checkpoint_relpath(20, compressed=True), b"")
    assert find_checkpoint(tmp_path, 20) == checkpoint_relpath(20, compressed=True)
    with pytest.raises(MissingInputError, match="step 40 is missing"):
        find_checkpoint(tmp_path, 40)


def test_data_parallel_step_record_leaves_are_pinned_and_parse_back(tmp_path: Path) -> None:
    from trainwitness.commit.store import RankShard, ShardedStepRecord

    a, b, c, d = ("sha256:" + x * 32 for x in ("11", "22", "33", "44"))
    record = ShardedStepRecord(step=0, ranks=(RankShard((5, 1), a, b), RankShard((9, 2), c, d)))
    assert record.batch_leaf() == (
        b'{"ranks":[{"batch_digest":"' + a.encode() + b'","sample_ids":[5,1]},{"batch_digest":"' + c.encode()
        + b'","sample_ids":[9,2]}],"step":0,"type":"batch"}'
    )
    assert record.rng_leaf() == b'{"rng_digests":["' + b.encode() + b'","' + d.encode() + b'"],"step":0,"type":"rng"}'
    assert record.sample_ids == (5, 1, 9, 2)
    _write_index(tmp_path, [record])  # type: ignore[list-item]
    assert read_index(tmp_path).steps == (record,)
    # Every step of a store has one world size: a one-rank step after a two-rank one is refused.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_index(mixed, [record, StepRecord(step=1, sample_ids=(3,), batch_digest=a, rng_digest=b)])  # type: ignore[list-item]
    with pytest.raises(MalformedInputError, match="has 1 ranks, step 0 has 2"):
        read_index(mixed)
