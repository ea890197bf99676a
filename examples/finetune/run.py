"""Weights handed from person to person: an upstream trains and signs, a fine-tuner builds on it, an auditor checks both.

    python examples/finetune/run.py --out DIR

leaves two link directories, each holding ``attestation.json``, ``store/``, ``model.safetensors`` and
``trainwitness.pub``:

* ``DIR/parent/``: the upstream's run, the built-in digits MLP trained from seed 0 on the UCI digits,
  signed with the upstream's key;
* ``DIR/child/``: the fine-tuner's run (``mirrored_digits.py``): the upstream's final weights, a new
  data source (the digits mirrored), Adam instead of SGD, and a re-initialised output layer, signed
  with the fine-tuner's own key. Its statement names the parent by the digest of the parent's statement.

The private keys stay in ``DIR/private/`` (they are not part of a hand-over); ``DIR/keyring.toml``
names the two public keys for the auditor, and ``DIR/data/`` holds the fine-tuner's new data source.
Then the whole chain is verified, every segment of both links replayed, and the command that does
the same by hand is printed. Nothing is downloaded. Exit status: 0 when the chain verifies.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the fine-tuner's spec, mirrored_digits.py, is imported by entry point

from mirrored_digits import write_mirrored_digits  # noqa: E402

from trainwitness.commit.link import LinkFiles  # noqa: E402
from trainwitness.identity.keyring import Keyring  # noqa: E402
from trainwitness.identity.signing import generate_keypair, load_private_key  # noqa: E402
from trainwitness.prover import attest_store, record_run  # noqa: E402
from trainwitness.verifier import VerifyOptions  # noqa: E402
from trainwitness.verifier.chain import verify_chain  # noqa: E402
from trainwitness.workloads.digits import digits_csv_path  # noqa: E402

UPSTREAM_SPEC = "trainwitness.workloads.digits:digits"
UPSTREAM_RUN = {"total_steps": 120, "checkpoint_interval": 20}  # 6 segments: quick, and enough to show the draw
FINETUNE_SPEC = "mirrored_digits:mirrored_digits"


def sign(link: Path, private_key: Path) -> None:
    files = LinkFiles.at(link)
    files.attestation.write_bytes(attest_store(files.store, files.weights, load_private_key(private_key)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new (or empty) directory for both links")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; choose a new --out directory")
    parent, child, private, data = out / "parent", out / "child", out / "private", out / "data"
    for directory in (parent, child, private, data):
        directory.mkdir(parents=True, exist_ok=True)
    threads = 1

    print(f"[1/4] upstream: trains the digits MLP from seed 0 and signs it -> {parent}")
    generate_keypair(private / "upstream.key", parent / "trainwitness.pub")
    files = LinkFiles.at(parent)
    record_run(UPSTREAM_SPEC, UPSTREAM_RUN, files.store, files.weights, torch_threads=threads)
    sign(parent, private / "upstream.key")

    mirrored = data / "mirrored-digits.csv"
    count = write_mirrored_digits(digits_csv_path(), mirrored)
    os.environ["MIRRORED_DIGITS"] = str(mirrored)
    print(f"[2/4] fine-tuner: a new data source, {count} mirrored digits -> {mirrored}")

    print(f"[3/4] fine-tuner: starts from the upstream's final weights (new head, Adam), signs with its own key -> {child}")
    generate_keypair(private / "finetuner.key", child / "trainwitness.pub")
    files = LinkFiles.at(child)
    record_run(FINETUNE_SPEC, {}, files.store, files.weights, torch_threads=threads, parent=parent, parent_mode="finetune")
    sign(child, private / "finetuner.key")

    keyring = out / "keyring.toml"
    keyring.write_text('[keys]\nupstream = "parent/trainwitness.pub"\nfinetuner = "child/trainwitness.pub"\n', encoding="utf-8")
    print(f"[4/4] auditor: verifies the chain, trusting the keys in {keyring}, replaying every segment of both links")
    report = verify_chain(
        LinkFiles.at(child), Keyring.from_sources(keyring=keyring),
        VerifyOptions(segments=None, data={"mirrored-digits": mirrored}), parents=[parent],
    )
    print(report.to_text())
    print(
        "\nBy hand (from this directory, with examples/finetune on PYTHONPATH for the fine-tuner's spec):\n"
        f"  PYTHONPATH={HERE} trainwitness verify {child}/attestation.json --store {child}/store "
        f"--weights {child}/model.safetensors --parent {parent} --keyring {keyring} "
        f"--data mirrored-digits={mirrored} --segments 3\n"
        f"  trainwitness inspect {child}/attestation.json --parent {parent}"
    )
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
