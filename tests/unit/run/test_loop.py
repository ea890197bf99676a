import pytest

from trainwitness.run.loop import TrainingRun, snapshot
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.tensors.state import FlatState, state_digest


def test_restore_does_not_let_training_write_into_the_restored_checkpoint() -> None:
    function = load_entry_point("trainwitness.workloads.digits:digits")
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, {"total_steps": 4, "checkpoint_interval": 2}))
    run.run(0, 2, lambda *args: None)  # momentum buffers now exist
    checkpoint = snapshot(run.capture())
    before = state_digest(checkpoint)
    run.restore(checkpoint)
    run.run(2, 4, lambda *args: None)
    assert state_digest(checkpoint) == before


def _digits_run() -> TrainingRun:
    function = load_entry_point("trainwitness.workloads.digits:digits")
    return TrainingRun.start(function, resolve_hyperparameters(function.defaults, {"total_steps": 4, "checkpoint_interval": 2}))


def test_restore_taking_ownership_lands_where_a_copying_restore_does() -> None:
    run = _digits_run()
    run.run(0, 2, lambda *args: None)
    stored = encode_checkpoint(snapshot(run.capture()))
    run.run(2, 3, lambda *args: None)  # move away, so each restore has something to undo
    run.restore(decode_checkpoint(stored, "c"))
    run.run(2, 4, lambda *args: None)
    copied = state_digest(run.capture())

    released: list[bool] = []

    def decode() -> FlatState:  # the run lets go of what the checkpoint replaces before it is decoded
        released.append(not run.spec.optimizer.state and all(p.grad is None for p in run.spec.model.parameters()))
        return decode_checkpoint(stored, "c")

    run.restore_taking_ownership(decode)
    run.run(2, 4, lambda *args: None)
    assert released == [True]
    assert state_digest(run.capture()) == copied


def test_restore_taking_ownership_refuses_tensors_that_share_memory() -> None:
    run = _digits_run()
    run.run(0, 2, lambda *args: None)
    checkpoint = snapshot(run.capture())
    momentum = [k for k in checkpoint.tensors if k.startswith("optimizer/") and checkpoint.tensors[k].numel() > 1]
    shared = dict(checkpoint.tensors)
    shared[momentum[1]] = shared[momentum[0]].view(-1)[: shared[momentum[1]].numel()].view_as(shared[momentum[1]])
    with pytest.raises(ValueError, match="share no memory"):
        run.restore_taking_ownership(lambda: FlatState(shared, checkpoint.skeleton))
