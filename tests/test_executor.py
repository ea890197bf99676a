from trainwitness.executor import TrainingRun, snapshot
from trainwitness.spec import load_entry_point, resolve_hyperparameters
from trainwitness.state import state_digest


def test_restore_does_not_let_training_write_into_the_restored_checkpoint() -> None:
    function = load_entry_point("trainwitness.workloads.digits:digits")
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, {"total_steps": 4, "checkpoint_interval": 2}))
    run.run(0, 2, lambda *args: None)  # momentum buffers now exist
    checkpoint = snapshot(run.capture())
    before = state_digest(checkpoint)
    run.restore(checkpoint)
    run.run(2, 4, lambda *args: None)
    assert state_digest(checkpoint) == before
