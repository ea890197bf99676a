"""Record a data-parallel run of the example spec (``ddp_digits``) under torchrun, and sign it on rank 0.

    torchrun --nproc-per-node 2 examples/ddp/train.py --out ddp-run [--key keys/trainwitness.key] [--exact]

Every rank runs this script; ``record_run`` sees the process group and records the run
data-parallel: rank 0 writes the store ``OUT/store`` and the weights ``OUT/model.safetensors``,
every rank trains on its shard of each batch. Run the same command again after a crash to resume.
gloo on CPU; NCCL when ``--device cuda`` (one GPU per rank). Verify on one machine with

    trainwitness verify OUT/attestation.json --store OUT/store --weights OUT/model.safetensors \\
        --key keys/trainwitness.pub --code examples/ddp/ddp_digits --all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the spec's package, ddp_digits

from trainwitness.commit.hints import DEFAULT_EXACT  # noqa: E402
from trainwitness.errors import TrainwitnessError  # noqa: E402
from trainwitness.identity.signing import load_private_key  # noqa: E402
from trainwitness.prover import attest_store, record_run  # noqa: E402
from trainwitness.run.spec import parse_override  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key", type=Path, help="private key: rank 0 signs OUT/attestation.json at the end")
    parser.add_argument("--exact", action="store_true", help="exact mode (docs/EXACT.md): verifiable from one process")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--spec", default="ddp_digits:digits", help="the training spec's entry point (default: this example's)")
    args = parser.parse_args()
    if args.device == "cuda":
        raise SystemExit("this example's spec trains on the CPU; a GPU spec moves its model to cuda:LOCAL_RANK and uses nccl")
    dist.init_process_group("gloo")
    try:
        run = record_run(
            args.spec, dict(parse_override(item) for item in args.set), args.out / "store",
            args.out / "model.safetensors", torch_threads=args.threads, exact=DEFAULT_EXACT if args.exact else None,
        )
        if dist.get_rank() == 0:
            if run.resumed_from_step is not None:
                print(f"resumed from the checkpoint at step {run.resumed_from_step}")
            print(f"trained on {dist.get_world_size()} ranks: weights {run.weights_path}, state {run.final.state_digest}")
            if args.key is not None:
                (args.out / "attestation.json").write_bytes(attest_store(run.store, run.weights_path, load_private_key(args.key)))
                print(f"signed attestation {args.out / 'attestation.json'}")
    except TrainwitnessError as e:
        print(f"trainwitness: error (rank {dist.get_rank()}): {e}", file=sys.stderr)
        return e.exit_status
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
