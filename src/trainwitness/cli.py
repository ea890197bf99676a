"""The command line: one ``main`` that dispatches from a table and maps the error root to an exit status.

Exit status: 0 verified (or done), 1 rejected (the evidence contradicts the claim), 2 could not
verify (usage, missing or unreadable input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwitness.display import escape
from trainwitness.errors import MalformedInputError, TrainwitnessError

if TYPE_CHECKING:
    from trainwitness.commit.statement import Statement

__all__ = ["main"]


def _keygen(args: argparse.Namespace) -> int:
    from trainwitness.identity.signing import generate_keypair, key_id

    out: Path = args.out
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    try:
        key = generate_keypair(private, public)
    except FileExistsError as e:
        raise MalformedInputError(f"{private} already exists; keys are never overwritten") from e
    print(f"private key {private} (keep it secret)\npublic key  {public}\nkey id      {key_id(key)}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainwitness.commit.hints import DEFAULT_EXACT
    from trainwitness.identity.signing import load_private_key
    from trainwitness.prover import Declarations, attest_store, record_run
    from trainwitness.run.spec import parse_override

    overrides = dict(parse_override(item) for item in args.set)
    run = record_run(
        args.spec,
        overrides,
        args.store,
        args.weights,
        device=args.device,
        torch_threads=args.threads,
        compress_level=None if args.no_compress else args.zstd_level,
        delta_every=args.delta_every,
        step_progress=True,
        declarations=Declarations(weights_license=args.weights_license, source_uri=args.source_uri),
        exact=DEFAULT_EXACT if args.exact else None,
        parent=args.parent,
        parent_mode=args.parent_mode,
        inputs=_inputs(args.input),
    )
    if run.resumed_from_step is not None:
        print(f"resumed from the checkpoint at step {run.resumed_from_step}")
    print(f"trained: final weights {run.weights_path}, state {run.final.state_digest}")
    if args.key is not None:
        envelope = attest_store(args.store, args.weights, load_private_key(args.key), allow_local_uri=args.allow_local_uri)
        _write_output(args.attestation, envelope)
        print(f"signed attestation {args.attestation}")
    return 0


def _attest(args: argparse.Namespace) -> int:
    from trainwitness.identity.signing import load_private_key
    from trainwitness.prover import attest_store

    _write_output(args.out, attest_store(args.store, args.weights, load_private_key(args.key), allow_local_uri=args.allow_local_uri))
    print(f"signed attestation {args.out}")
    return 0


def _inputs(items: Sequence[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for name, path in (_name_value(item, "--input") for item in items):
        if name in inputs:
            raise MalformedInputError(f"--input {name} is given twice")
        inputs[name] = Path(path)
    return inputs


def _publish(args: argparse.Namespace) -> int:
    from trainwitness.prover.publish import publish_run

    published = publish_run(
        args.run, args.out, attestation=args.attestation, store=args.store, weights=args.weights, key=args.key,
        base_url=args.base_url,
    )
    print(f"published {len(published.files)} files ({published.total_bytes} bytes) into {published.out}; see {published.out / 'index.html'}")
    return 0


def _run_verify(args: argparse.Namespace) -> tuple[Any, Any]:  # (Report or ChainReport, the published link's Report)
    """Verify as ``verify``/``export`` ask; prints the verdict and writes --json/--report."""
    from trainwitness.commit.link import LinkFiles
    from trainwitness.identity.keyring import Keyring
    from trainwitness.verifier import VerifyOptions, verify_run
    from trainwitness.verifier.chain import ChainReport, verify_chain
    from trainwitness.verifier.fetch import FetchSettings, is_url
    from trainwitness.verifier.report import Report
    from trainwitness.verifier.store_reader import default_cache_dir
    from trainwitness.verifier.terminal import print_report, progress_displays

    if args.report is not None and args.report.suffix.lower() not in (".html", ".htm", ".md", ".markdown"):
        raise MalformedInputError(f"--report {args.report}: the name must end in .html or .md")
    options = VerifyOptions(
        segments=None if args.all else args.segments,
        seed=args.seed,
        data={name: path if is_url(path) else Path(path) for name, path in (_name_value(item, "--data") for item in args.data)},
        code=args.code,
        policy=args.policy,
        sandbox=args.sandbox,
        threads=args.threads,
        bounded=args.bounded,
        workers=args.workers,
        cache=None if args.no_cache else (args.cache or default_cache_dir()),
        fetch=FetchSettings(timeout=args.fetch_timeout, attempts=args.fetch_attempts),
        device=args.device,
        ranks=args.ranks,
        cluster=args.cluster,
        shard_requests=args.shard_requests,
        shard_answers=args.shard_answers,
    )
    if sum(x is not None for x in (args.cluster, args.shard_requests, args.shard_answers)) > 1:
        raise MalformedInputError("--cluster, --shard-requests and --shard-answers exclude each other")
    with progress_displays() as (segments, downloads):
        if any(is_url(str(x)) for x in (args.attestation, args.store, args.weights, *args.key)):
            # One link read from URLs (a lineage is verified from local link directories).
            if args.parent or args.input:
                raise MalformedInputError("--parent and --input need local link directories: download the runs first")
            if any(is_url(str(k)) for k in args.key) and (len(args.key) > 1 or args.keyring is not None):
                raise MalformedInputError("a --key given by URL must be the only key (no other --key, no --keyring)")
            key = args.key[0] if args.key and is_url(str(args.key[0])) else Keyring.from_sources([Path(k) for k in args.key], args.keyring)
            published = verify_run(args.attestation, args.store, args.weights, key, options, segments, downloads)
            result: Report | ChainReport = published
        else:
            keys = Keyring.from_sources([Path(k) for k in args.key], args.keyring)
            files = LinkFiles(Path(args.attestation), Path(args.store), Path(args.weights))
            chain = verify_chain(files, keys, options, args.parent, _inputs(args.input), segments)
            result, published = chain, chain.published
            published.lineage = [
                {"subject": link.report.subject, "relation": link.start(),
                 "verified": f"{link.report.verdict}, signed by {link.report.signer or 'no trusted key'}"}
                for link in chain.links[:-1]
            ]
    # Every string from the attestation or the store escaped (display.escape), in the text and the JSON alike.
    document = json.dumps(result.to_display_json(), indent=2, sort_keys=True) + "\n"
    text_stream = sys.stderr if args.json == "-" else sys.stdout  # --json -: the JSON on stdout, the text beside it
    try:
        if isinstance(result, ChainReport) and (len(result.links) > 1 or result.inputs):
            print(result.to_text(), file=text_stream, flush=True)
        else:
            print_report(published, text_stream)
    except BrokenPipeError:  # ``verify ... | head``: the reader has gone, the verdict stands
        _silence_stdout()
    if args.json == "-":
        _print(document, sys.stdout, end="")
    elif args.json is not None:
        _write_output(Path(args.json), document.encode())
    if args.report is not None:
        from trainwitness.verifier.render import write_report

        write_report(published, args.report, verdict=result.verdict)
    return result, published


def _verify(args: argparse.Namespace) -> int:
    result, _ = _run_verify(args)
    if result.pending_shards is not None and all(c.passed for c in result.checks):
        return 0  # requests written: no verdict yet (the merge gives it)
    return 0 if result.accepted else 1


def _export(args: argparse.Namespace) -> int:
    from trainwitness.verifier.export import cyclonedx_json

    result, published = _run_verify(args)
    if not result.accepted or published.statement is None:
        print(f"nothing exported: the audit did not accept, so {args.out} would state facts that were not established", file=sys.stderr)
        return 1
    _write_output(args.out, cyclonedx_json(published, published.statement).encode("utf-8"))
    print(f"exported the verified facts as a CycloneDX 1.6 ML-BOM (validated): {args.out}")
    return 0


def _print(text: str, stream: object, end: str = "\n") -> None:
    """Print, giving up quietly when the reader has gone (``verify ... | head``): no "Broken pipe" error."""
    try:
        print(text, file=stream, end=end, flush=True)  # type: ignore[call-overload]
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    # Python flushes stdout again at exit and would report the broken pipe there: point it at nothing.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_output(path: Path, data: bytes) -> None:
    """Replace ``path`` whole or not at all (a kill or a full disk never leaves a half or empty file)."""
    from trainwitness.commit.atomic import atomic_write, remove_stale_temporaries

    remove_stale_temporaries(path.parent, final_name=path.name)  # what a killed earlier write left
    atomic_write(path, data)


def _replay_shard(args: argparse.Namespace) -> int:
    from trainwitness.verifier.shards import answer_request

    data = {name: Path(path) for name, path in (_name_value(item, "--data") for item in args.data)}
    answer = answer_request(args.request, args.out, args.store, data, args.code)
    report = answer.get("answer", {}).get("report", {}) if isinstance(answer.get("answer"), dict) else {}
    failed = [str(c["name"]) for c in report.get("checks", []) if not c.get("passed")]
    state = "sandbox error" if "sandbox_error" in answer else ("failed " + ", ".join(failed)) if failed else "no failure found"
    print(escape(f"answer {args.out}: {state} (the coordinator's --shard-answers merge decides)"))  # a worker wrote the names
    return 0


def _name_value(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise MalformedInputError(f"{option} expects NAME=VALUE, not {text!r}")
    return name, value


def _data_manifest(args: argparse.Namespace) -> int:
    from trainwitness.data.manifest import SourceInput, build_manifest

    licenses = dict(_name_value(item, "--license") for item in args.license)
    descriptions = dict(_name_value(item, "--description") for item in args.description)
    uris = dict(_name_value(item, "--uri") for item in args.uri)
    inputs = []
    for item in args.sources:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name.split(".")[0] or "source", item
        inputs.append(
            SourceInput(
                name=name, path=Path(path), license=licenses.get(name, "NOASSERTION"),
                description=descriptions.get(name, ""), uri=uris.get(name),
            )
        )
    unknown = sorted((set(licenses) | set(descriptions) | set(uris)) - {i.name for i in inputs})
    if unknown:
        raise MalformedInputError(f"--license/--description/--uri name sources that are not given: {', '.join(unknown)}")
    def show(samples: int, source_bytes: int) -> None:
        if sys.stderr.isatty():
            print(f"\rsamples: {samples}, this source: {source_bytes / 2**20:.1f} MiB", end="", file=sys.stderr, flush=True)

    summary = build_manifest(inputs, args.out, progress=show)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"manifest {args.out}: {summary.num_samples} samples, {summary.total_bytes} bytes, root {summary.root}")
    for source in summary.sources:
        print(f"  {source.name}: {source.num_samples} samples ({source.format}), licence {source.license}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from trainwitness.commit.bindings import (
        KINDS,
        STATEMENT_FIELDS,
        path_text,
        statement_field_pattern,
        statement_leaves,
    )
    from trainwitness.commit.canonical import parse_json
    from trainwitness.commit.safe_open import read_untrusted
    from trainwitness.commit.statement import Statement, statement_digest
    from trainwitness.display import escape_json, value_text
    from trainwitness.identity.signing import MAX_ENVELOPE_BYTES, unverified_payload

    data = read_untrusted(args.attestation, f"attestation {args.attestation}", MAX_ENVELOPE_BYTES, follow_symlinks=True)
    if not data:
        raise MalformedInputError(f"attestation {args.attestation} is empty")
    payload = unverified_payload(data, f"DSSE envelope {args.attestation}")
    parsed = Statement.from_payload(payload)  # strictly, before anything of it is shown
    statement = parse_json(parsed.to_payload(), "attestation statement")
    _print("UNVERIFIED: this shows what the attestation claims; `trainwitness verify` checks it.", sys.stdout)
    # The lineage quotes signed names (entry points, subjects, tensor names): escaped like every stored string.
    lineage = _declared_lineage(args.attestation, statement_digest(payload), parsed, args.parent)
    _print("\n".join(escape(line) for line in lineage.splitlines()), sys.stdout)
    if args.json:
        _print(json.dumps(escape_json(statement), indent=2, sort_keys=True), sys.stdout)
        return 0
    lines = ["Each field with what binds it once verified (docs/FORMAT.md, section 10):"]
    for path, value in statement_leaves(statement):
        kind = STATEMENT_FIELDS[statement_field_pattern(path)].kind
        lines.append(escape(f"  [{kind}] {path_text(statement, path)} = {value_text(value)}"))
    lines.append("Kinds:")
    lines.extend(f"  {kind}: {meaning}" for kind, meaning in KINDS.items() if kind != "unread")
    _print("\n".join(lines), sys.stdout)
    return 0


def _declared_lineage(attestation: Path, digest: str, statement: Statement, parents: Sequence[Path]) -> str:
    """The chain as the statements declare it (``--parent`` directories followed by digest), none of it verified."""
    from trainwitness.verifier.chain import read_links

    pool = read_links(parents)
    lines = ["declared lineage (UNVERIFIED), from the published weights back:"]
    current: Statement | None = statement
    where, name = str(attestation), digest
    while current is not None and len(lines) < 1000:
        claim = current.claim
        lines.append(f"  {where}: statement {name}, subject {current.subject_name} sha256:{current.subject_sha256}")
        lines.append(f"    entry point {claim.entry_point}, seed {claim.hyperparameters['seed']}, {claim.total_steps} steps")
        for input_name, frozen in sorted(claim.inputs.items()):
            attested = f", attestation {frozen.attestation}" if frozen.attestation else ", no attestation declared"
            lines.append(f"    reads frozen input {input_name}: weights {frozen.weights_digest}{attested}")
        parent = claim.parent
        if parent is None:
            lines.append("    starts from its seed (the origin)")
            break
        extra = ""
        if parent.reinitialised:
            extra += f"; re-initialised from the seed: {', '.join(parent.reinitialised)}"
        if parent.dropped:
            extra += f"; parent tensors dropped: {', '.join(parent.dropped)}"
        start = "final state " + str(parent.state_digest) if parent.mode == "continue" else "final weights " + parent.weights_digest
        lines.append(f"    starts from its parent ({parent.mode}): attestation {parent.attestation}, {start}{extra}")
        link = pool.get(parent.attestation)
        if link is None:
            lines.append(f"  (parent {parent.attestation} not given: pass its directory with --parent DIR to follow the chain)")
            break
        current, where, name = link.statement, str(link.files.attestation), link.digest
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from trainwitness.demo import fresh_directory, run_demo

    try:
        out = fresh_directory(args.out)
    except FileExistsError as e:
        raise MalformedInputError(str(e)) from e
    return 0 if run_demo(out, args.workload).accepted else 1


def _positive_int(text: str) -> int:
    """argparse type for counts: a usage error (exit 2, no traceback) rather than a ValueError deep inside."""
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


DESCRIPTION = """\
Signed, spot-checkable proofs that neural-network weights came from the declared code, data and
hyperparameters. The prover records beside training and signs an attestation; the verifier checks it
and replays randomly drawn segments of the run.

exit status: 0 verified (or done), 1 rejected (the evidence contradicts the claim),
2 could not verify (usage, a missing, unreadable or unfetchable input)."""


def _version() -> str:
    from trainwitness import __version__

    return f"trainwitness {__version__}"


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from e
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _add_verify_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `verify`, shared by `export` (which verifies before it writes anything)."""
    p.add_argument("attestation", help="the signed attestation (DSSE envelope): a path or URL")
    p.add_argument("--store", required=True, help="the run's store: a directory or URL (only its index and the drawn checkpoints are read)")
    p.add_argument("--weights", required=True, help="the final weights file (the attestation's subject): a path or URL")
    p.add_argument("--key", action="append", default=[],
                   help="a trusted public key (PEM; repeat: one per signer of a chain), named by its path in the report; "
                   "or one URL (it then proves only that whoever controls that URL signed)")
    p.add_argument("--keyring", type=Path, metavar="FILE", help="trusted keys by name: a TOML [keys] table (README, Lineage)")
    p.add_argument("--parent", type=Path, action="append", default=[], metavar="DIR",
                   help="a link of the declared lineage: DIR holds its attestation.json, store/ and model.safetensors (repeat for a chain)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                   help="a declared frozen input: its weights file (declared, not verified) or its attested run's directory (verified)")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument("--segments", type=_positive_int, default=10, help="segments to replay (default 10)")
    how_many.add_argument("--all", action="store_true", help="replay every segment")
    p.add_argument("--seed", type=int, help="seed the segment draw for a reproducible audit (default: OS randomness)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE ('-': to stdout, the text to stderr)")
    p.add_argument("--report", type=Path, metavar="FILE.html|FILE.md",
                   help="also write a report for people: self-contained HTML (plots inline) or Markdown, by suffix")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                   help="read declared data source NAME from the auditor's copy at PATH, or from a URL (only the "
                   "records the drawn segments use, by range where the format allows; repeatable)")
    p.add_argument("--code", type=Path, metavar="DIR", help="the auditor's copy of the training program's source tree")
    p.add_argument("--policy", metavar="NAME|FILE",
                   help="licence policy: a shipped one (" + ", ".join(_shipped_policies()) + ") or a TOML file")

    p.add_argument("--sandbox", choices=["auto", "off", "required"], default="auto",
                   help="replay the training code in a process without network and with a read-only filesystem "
                   "(auto: where the OS allows; required: refuse otherwise; off: in-process; default auto)")

    p.add_argument("--threads", type=_positive_int, help="torch threads for replay (default: the thread count the attestation records)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="W",
                   help="replay the drawn segments in W worker processes at once, each on a share (default 1)")
    p.add_argument("--device", default="cpu", help="replay on this device: cpu (default), cuda, cuda:N, mps; "
                   "a run recorded on another kind of device verifies in exact mode or with --bounded")
    p.add_argument(
        "--bounded", action="store_true",
        help="for runs without exact mode: accept replays within a calibrated distance (weaker; docs/EXACT.md)",
    )
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="keep verified downloads here, by digest (default: $XDG_CACHE_HOME/trainwitness or ~/.cache/trainwitness)")
    p.add_argument("--no-cache", action="store_true", help="keep no downloads (every URL is fetched again next time)")
    p.add_argument("--fetch-timeout", type=_non_negative_float, default=60.0, metavar="SECONDS",
                   help="give a download up after this long without progress (default 60)")
    p.add_argument("--fetch-attempts", type=_positive_int, default=3, metavar="N",
                   help="tries per file on timeouts, truncated bodies and server errors (default 3)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="replay the --workers shares as tasks on the Dask scheduler at ADDRESS (pip install 'trainwitness[cluster]')")
    p.add_argument("--shard-requests", type=Path, metavar="DIR",
                   help="write one replay request per --workers share to DIR and stop (no verdict): for batch systems")
    p.add_argument("--shard-answers", type=Path, metavar="DIR",
                   help="merge the replay-shard answers in DIR (written for the requests there) into a verdict")
    p.add_argument(
        "--ranks", choices=["auto", "local", "single"], default="auto",
        help="a data-parallel run: replay its W ranks in W local processes over gloo (local: bitwise), or in one "
        "process that averages every rank's gradients (single: exact mode or --bounded); auto: single where that "
        "suffices, else local (docs/DISTRIBUTED.md)",
    )



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainwitness", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="make an Ed25519 key pair", description="Make an Ed25519 key pair (PEM); the private key is never overwritten.")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for NAME.key and NAME.pub (default: the current directory)")
    p.add_argument("--name", default="trainwitness", help="file name stem of the pair (default: trainwitness)")

    p = sub.add_parser("train", help="train a spec with recording (resumes a store left by a crash)",
                       description="Train a spec with recording; run again after a crash to resume from the last durable checkpoint.")
    p.add_argument("spec", help="entry point module:function of a @training_spec")
    p.add_argument("--store", type=Path, required=True, help="directory for the run's evidence (index, checkpoints, manifest)")
    p.add_argument("--weights", type=Path, required=True, help="where to write the final model.safetensors")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a hyperparameter (repeatable)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch intra-op threads (recorded; replay uses the same; default 1)")
    p.add_argument(
        "--exact", action="store_true",
        help="exact mode: round gradients and state to grids with committed hints, so replay on other threads/hardware is bitwise (docs/EXACT.md)",
    )
    p.add_argument("--device", default="cpu", help="run the steps on this device: cpu (default), cuda, cuda:N, mps (recorded)")
    p.add_argument("--zstd-level", type=int, default=3, help="zstd level of the checkpoint files (default 3)")
    p.add_argument("--no-compress", action="store_true", help="write checkpoints uncompressed")
    p.add_argument("--delta-every", type=int, metavar="F", help="store checkpoints as XOR deltas, a full one every F")
    p.add_argument("--key", type=Path, help="private key: sign an attestation when training ends")
    p.add_argument("--attestation", type=Path, default=Path("attestation.json"), help="where to write it (default attestation.json)")
    p.add_argument("--weights-license", "--weights-licence", dest="weights_license", metavar="SPDX",
                   help="SPDX licence expression of the weights (signed)")
    p.add_argument("--source-uri", help="where the training program's source can be obtained (signed)")
    p.add_argument("--allow-local-uri", action="store_true",
                   help="sign even if a data source's uri is a path on this machine (a recipient cannot use it)")
    p.add_argument("--parent", type=Path, metavar="DIR",
                   help="start from an attested run: DIR holds its attestation.json, store/ and model.safetensors (signed by digest)")
    p.add_argument("--parent-mode", choices=["finetune", "continue"], default="finetune",
                   help="finetune: the parent's final weights, a fresh optimizer from --set seed (default); "
                   "continue: the parent's whole final state (optimizer, scheduler, RNG)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                   help="a frozen input the spec reads by NAME (a teacher): a weights file, or an attested run's directory")

    p = sub.add_parser("attest", help="sign the attestation of a completed store", description="Sign the attestation of a completed store.")
    p.add_argument("--store", type=Path, required=True, help="the run's store directory")
    p.add_argument("--weights", type=Path, required=True, help="the final weights file (the attestation's subject)")
    p.add_argument("--key", type=Path, required=True, help="private key")
    p.add_argument("--out", type=Path, default=Path("attestation.json"), help="where to write the attestation (default attestation.json)")
    p.add_argument("--allow-local-uri", action="store_true",
                   help="sign even if a data source's uri is a path on this machine (a recipient cannot use it)")

    p = sub.add_parser("publish", help="lay a signed run out for static hosting (web server or bucket)",
                       description="Copy a signed run into a new directory to serve as is: attestation, weights, public key, "
                       "store (index, manifest, checkpoints), SHA256SUMS and a short index.html. Checks the signature first.")
    p.add_argument("run", type=Path, help="the run directory (attestation.json, store/, the weights, one *.pub), as `demo` leaves it")
    p.add_argument("--out", type=Path, required=True, help="new (or empty) directory to write")
    p.add_argument("--attestation", type=Path, help="the attestation, if not RUN/attestation.json")
    p.add_argument("--store", type=Path, help="the store, if not RUN/store")
    p.add_argument("--weights", type=Path, help="the weights file, if not RUN/<the attestation's subject name>")
    p.add_argument("--key", type=Path, help="the public key, if RUN holds not exactly one *.pub")
    p.add_argument("--base-url", help="the URL the directory will be served at (shown in index.html's verify command)")

    p = sub.add_parser("verify", help="verify an attestation by replaying randomly sampled segments",
                       description="Verify an attestation: signature, commitments, final weights, data and code identity, then "
                       "replay randomly drawn segments. Every input may be a local path or a URL (http://, https://, s3://).")
    _add_verify_arguments(p)

    p = sub.add_parser("export", help="verify, then write the verified facts as a CycloneDX ML-BOM",
                       description="Verify exactly as `verify` does (same arguments); if the audit accepts, write its "
                       "verified facts as a CycloneDX 1.6 ML-BOM (JSON), validated against the schema. Nothing is written on REJECT.")
    _add_verify_arguments(p)
    p.add_argument("--format", choices=["cyclonedx"], default="cyclonedx", dest="export_format",
                   help="document format (default cyclonedx; SPDX 3 is not produced yet, see docs/PACKAGER.md)")
    p.add_argument("--out", type=Path, required=True, help="the document to write")

    p = sub.add_parser("replay-shard", help="answer one shard request of `verify --shard-requests` (any machine)")
    p.add_argument("request", type=Path, help="a request file written by `verify --shard-requests`")
    p.add_argument("--out", type=Path, required=True, help="the answer file (DIR/answer-KKK.json beside the request)")
    p.add_argument("--store", type=Path, help="where this machine sees the store (default: the request's path)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH", help="where this machine sees a data source")
    p.add_argument("--code", type=Path, metavar="DIR", help="where this machine sees the training program's source tree")

    p = sub.add_parser("data", help="dataset manifests", description="Dataset manifests.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    q = data_sub.add_parser("manifest", help="build a manifest (per-sample digests, Merkle root) from data sources",
                            description="Build a manifest (per-sample digests, Merkle root) from data sources.")
    q.add_argument("sources", nargs="+", metavar="[NAME=]PATH",
                   help="a directory of files, a file, a .jsonl/.csv (optionally .gz) file, or a .npy array")
    q.add_argument("--out", type=Path, required=True, help="the manifest file to write (JSON lines)")
    q.add_argument("--license", "--licence", action="append", default=[], metavar="NAME=SPDX",
                   help="SPDX licence expression of source NAME (default NOASSERTION, which fails every policy)")
    q.add_argument("--description", action="append", default=[], metavar="NAME=TEXT", help="what source NAME is")
    q.add_argument("--uri", action="append", default=[], metavar="NAME=URI", help="where source NAME can be obtained")

    p = sub.add_parser("inspect", help="print what an attestation claims and what binds each field (signature not checked)",
                       description="Print what an attestation claims and what binds each field. The signature is NOT checked: use verify for that.")
    p.add_argument("attestation", type=Path, help="the attestation file")
    p.add_argument("--json", action="store_true", help="print the statement as JSON (every string escaped)")
    p.add_argument("--parent", type=Path, action="append", default=[], metavar="DIR",
                   help="follow the declared chain through these link directories (nothing is verified)")

    p = sub.add_parser("demo", help="train, attest and verify a built-in workload (digits MLP or lm transformer)",
                       description="Train, attest and verify a built-in workload; leaves every file to try verify by hand.")
    p.add_argument("--out", type=Path, help="new directory for the demo's files (default: ./trainwitness-demo[-N])")
    p.add_argument("--workload", default="digits", choices=["digits", "lm"], help="digits (MLP, seconds) or lm (transformer, minutes); default digits")
    return parser


def _shipped_policies() -> list[str]:
    from trainwitness.verifier.policy import shipped_policies

    return shipped_policies()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keygen": _keygen,
    "train": _train,
    "attest": _attest,
    "publish": _publish,
    "verify": _verify,
    "export": _export,
    "replay-shard": _replay_shard,
    "data": _data_manifest,
    "inspect": _inspect,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainwitnessError as e:
        # One line, whatever a library's message held (torch's name a tensor per line); stored names escaped.
        print(f"trainwitness: error: {escape(' '.join(str(e).split()))}", file=sys.stderr)
        return e.exit_status
    except BrokenPipeError:  # the reader of our output went away: nothing to say, and nowhere to say it
        _silence_stdout()
        return 141  # what a shell reports for a command ended by SIGPIPE
    except OSError as e:
        where = f"{escape(e.filename)}: " if e.filename else ""
        print(f"trainwitness: error: {where}{escape(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
