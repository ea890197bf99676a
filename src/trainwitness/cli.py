"""The command line: one ``main`` that dispatches from a table and maps the error root to an exit status.

Exit status: 0 verified (or done), 1 rejected (the evidence contradicts the claim), 2 could not
verify (usage, missing or unreadable input).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import MalformedInputError, TrainwitnessError

__all__ = ["main"]


def _keygen(args: argparse.Namespace) -> int:
    from .signing import generate_keypair, key_id

    out: Path = args.out
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    try:
        key = generate_keypair(private, public)
    except FileExistsError as e:
        raise MalformedInputError(f"{private} already exists; keys are never overwritten") from e
    print(f"private key {private} (keep it secret)\npublic key  {public}\nkey id      {key_id(key)}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .progress import progress_line
    from .prover import attest_store, record_run
    from .signing import load_private_key
    from .spec import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    run = record_run(
        args.spec,
        overrides,
        args.store,
        args.weights,
        torch_threads=args.threads,
        compress_level=None if args.no_compress else args.zstd_level,
        progress=progress_line("steps"),
    )
    if run.resumed_from_step is not None:
        print(f"resumed from the checkpoint at step {run.resumed_from_step}")
    print(f"trained: final weights {run.weights_path}, state {run.final.state_digest}")
    if args.key is not None:
        envelope = attest_store(args.store, args.weights, load_private_key(args.key))
        args.attestation.write_bytes(envelope)
        print(f"signed attestation {args.attestation}")
    return 0


def _attest(args: argparse.Namespace) -> int:
    from .prover import attest_store
    from .signing import load_private_key

    args.out.write_bytes(attest_store(args.store, args.weights, load_private_key(args.key)))
    print(f"signed attestation {args.out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .progress import progress_line
    from .verifier import VerifyOptions, verify_run

    options = VerifyOptions(segments=None if args.all else args.segments, seed=args.seed)
    report = verify_run(args.attestation, args.store, args.weights, args.key, options, progress_line("segments"))
    print(report.to_text())
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    return 0 if report.accepted else 1


def _inspect(args: argparse.Namespace) -> int:
    from .attestation import Statement
    from .signing import _unverified_payload

    data = args.attestation.read_bytes() if args.attestation.is_file() else b""
    if not data:
        raise MalformedInputError(f"attestation {args.attestation} does not exist or is empty")
    _, payload, _ = _unverified_payload(data)
    statement = Statement.from_payload(payload)
    print("UNVERIFIED: this shows what the attestation claims; `trainwitness verify` checks it.")
    print(json.dumps(json.loads(statement.to_payload()), indent=2, sort_keys=True))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import fresh_directory, run_demo

    try:
        out = fresh_directory(args.out)
    except FileExistsError as e:
        raise MalformedInputError(str(e)) from e
    return 0 if run_demo(out, args.workload).accepted else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainwitness", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for NAME.key and NAME.pub")
    p.add_argument("--name", default="trainwitness")

    p = sub.add_parser("train", help="train a spec with recording (resumes a store left by a crash)")
    p.add_argument("spec", help="entry point module:function of a @training_spec")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="where to write the final model.safetensors")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a hyperparameter")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (recorded; replay uses the same)")
    p.add_argument("--zstd-level", type=int, default=3)
    p.add_argument("--no-compress", action="store_true")
    p.add_argument("--key", type=Path, help="private key: sign an attestation when training ends")
    p.add_argument("--attestation", type=Path, default=Path("attestation.json"))

    p = sub.add_parser("attest", help="sign the attestation of a completed store")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="private key")
    p.add_argument("--out", type=Path, default=Path("attestation.json"))

    p = sub.add_parser("verify", help="verify an attestation by replaying randomly sampled segments")
    p.add_argument("attestation", type=Path)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="the prover's public key")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument("--segments", type=int, default=10, help="segments to replay (default 10)")
    how_many.add_argument("--all", action="store_true", help="replay every segment")
    p.add_argument("--seed", type=int, help="seed the segment draw for a reproducible audit (default: OS randomness)")
    p.add_argument("--json", type=Path, help="also write the report as JSON")

    p = sub.add_parser("inspect", help="print what an attestation claims (signature not checked)")
    p.add_argument("attestation", type=Path)

    p = sub.add_parser("demo", help="train, attest and verify a built-in workload (digits MLP or lm transformer)")
    p.add_argument("--out", type=Path, help="new directory for the demo's files")
    p.add_argument("--workload", default="digits", choices=["digits", "lm"])
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": _keygen,
    "train": _train,
    "attest": _attest,
    "verify": _verify,
    "inspect": _inspect,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainwitnessError as e:
        print(f"trainwitness: error: {e}", file=sys.stderr)
        return e.exit_status
    except OSError as e:
        print(f"trainwitness: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
