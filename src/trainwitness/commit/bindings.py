"""What binds each signed and stored field: the verifier's recomputation, a Merkle root, the auditor's copy, or nothing.

Every field of the attestation and of the store is listed here with the kind of check that makes
it true, and a line saying how. A field whose kind is ``declared`` is covered by the signature
alone: the key holder says so, nothing checks it. ``verify`` lists those with their values under
"declared, not verified", ``inspect`` marks every field with its kind, and docs/FORMAT.md carries
the same table (a test keeps them equal). The statement parser (``statement.py``) refuses any
field that is not listed, so nothing signed can escape this table.

Paths: ``.`` between object keys, ``[]`` for every item of a list, ``*`` for every key of a
mapping whose keys are free (the hyperparameters). Store paths start with the file name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "Binding",
    "STATEMENT_FIELDS",
    "STORE_FIELDS",
    "statement_field_pattern",
    "statement_leaves",
    "declared_fields",
    "path_text",
]

KINDS: dict[str, str] = {
    "replay": "recomputed by the verifier (the rebuilt seeded start, the replayed segments) and compared",
    "auditor": "checked against the auditor's own copy (source trees, data records, weights file, installation)",
    "merkle": "committed under a Merkle root that the verifier rebuilds from the store and the signature covers",
    "derived": "checked against, or derived from, fields that are themselves checked",
    "format": "a constant of the format, checked when parsed",
    "declared": "declared, not verified: covered by the signature only",
    "unread": "never read by the verifier (the prover's own record, e.g. for resuming)",
}


@dataclass(frozen=True)
class Binding:
    kind: str  # a key of KINDS
    how: str


def _b(kind: str, how: str) -> Binding:
    if kind not in KINDS:  # pragma: no cover - a typo in the table below
        raise ValueError(kind)
    return Binding(kind, how)


_ENVIRONMENT = ("python", "implementation", "torch", "numpy", "trainwitness", "platform", "machine", "device",
                "deterministic_algorithms", "cudnn_benchmark", "matmul_allow_tf32")
_GRID = ("mantissa_bits", "margin_log2", "floor_exponent")

STATEMENT_FIELDS: dict[str, Binding] = {
    "_type": _b("format", "in-toto Statement v1"),
    "predicateType": _b("format", "this format's predicate type and version"),
    "subject[].name": _b("declared", "the weights file's name as published; the auditor names the file it checks (--weights)"),
    "subject[].digest.sha256": _b("auditor", "SHA-256 of the weights file the auditor gives (--weights)"),
    "predicate.code.entry_point": _b("replay", "the function the verifier builds and replays from the attested tree; start and segments must land"),
    "predicate.code.source_root": _b("auditor", "the name of the tree the entry point resolves to on the auditor's machine"),
    "predicate.code.tree_digest": _b("auditor", "the entry point's source tree, hashed on the auditor's machine before it is imported"),
    "predicate.code.file_count": _b("auditor", "the number of files of that tree"),
    "predicate.code.git_commit": _b("declared", "type checked (null or a 40/64-digit hex object name); the tree digest is what is checked"),
    "predicate.code.source_uri": _b("declared", "where the prover says the source can be obtained; the tree digest is what is checked"),
    "predicate.code.packages": _b("auditor", "every local package the run imported besides the entry point's; replay may import no other local code"),
    "predicate.code.packages[].name": _b("auditor", "a local top-level package the run imported; must be importable on the auditor's machine (else exit 2)"),
    "predicate.code.packages[].tree_digest": _b("auditor", "that package's source tree, hashed on the auditor's machine; replay may import no other local code"),
    "predicate.code.packages[].file_count": _b("auditor", "the number of files of that tree"),
    "predicate.code.distributions": _b("auditor", "the installed distributions the run imported, each looked up on the auditor's machine"),
    "predicate.code.distributions[].name": _b("auditor", "an installed distribution the run imported; must be installed on the auditor's machine (else exit 2)"),
    "predicate.code.distributions[].version": _b("declared", "compared with the auditor's installed version; a difference is noted"),
    **{f"predicate.environment.{k}": _b("declared", "compared with the auditor's machine where it can change results; a difference is noted")
       for k in _ENVIRONMENT},
    "predicate.environment.torch_threads": _b("replay", "the replay's thread count (unless --threads); bitwise replay must land with it"),
    "predicate.hyperparameters.*": _b("replay", "the run is rebuilt from exactly these (the spec's whole set); start and segments must land"),
    "predicate.data.dataset": _b("replay", "the name of the dataset the spec builds"),
    "predicate.data.num_samples": _b("derived", "the manifest's sample count, and the size of the dataset the spec builds"),
    "predicate.data.sampler.name": _b("replay", "the sampler the spec builds"),
    "predicate.data.sampler.batch_size": _b("derived", "the batch_size hyperparameter; the sampler the spec builds"),
    "predicate.data.sampler.seed": _b("derived", "the data_seed hyperparameter; every step's sample ids are recomputed from it"),
    "predicate.data.sampler.num_samples": _b("derived", "the manifest's sample count"),
    "predicate.data.manifest.format": _b("format", "trainwitness-manifest/v1"),
    "predicate.data.manifest.root": _b("auditor", "manifest.jsonl hashes to it; every record replay reads from the auditor's copy is proven against it"),
    "predicate.data.manifest.num_samples": _b("derived", "the number of entries in manifest.jsonl, and the sum over the sources"),
    "predicate.data.manifest.total_bytes": _b("derived", "the sum over the sources"),
    "predicate.data.manifest.sources[].name": _b("replay", "a source the training code reads (an unknown one is a failed data check)"),
    "predicate.data.manifest.sources[].format": _b("auditor", "how records are read from the auditor's copy; each record read is proven"),
    "predicate.data.manifest.sources[].compression": _b("auditor", "how records are read from the auditor's copy; each record read is proven"),
    "predicate.data.manifest.sources[].num_samples": _b("derived", "the manifest entries of that source"),
    "predicate.data.manifest.sources[].total_bytes": _b("derived", "the sum of that source's entry sizes; each record read has its size"),
    "predicate.data.manifest.sources[].license": _b("declared", "must equal the training code's declaration and pass --policy; its truth is not checked"),
    "predicate.data.manifest.sources[].description": _b("declared", "the prover's description of the source"),
    "predicate.data.manifest.sources[].uri": _b("declared", "where the prover says the source can be obtained"),
    "predicate.data.manifest.sources[].archive_sha256": _b("declared", "SHA-256 of the file at uri; records are proven one by one, not the file"),
    "predicate.commitments.checkpoints.root": _b("merkle", "rebuilt from the store's checkpoint records"),
    "predicate.commitments.checkpoints.size": _b("derived", "the number of checkpoint steps for total_steps and checkpoint_interval"),
    "predicate.commitments.batches.root": _b("merkle", "rebuilt from the store's step records"),
    "predicate.commitments.batches.size": _b("derived", "total_steps"),
    "predicate.commitments.rng.root": _b("merkle", "rebuilt from the store's step records"),
    "predicate.commitments.rng.size": _b("derived", "total_steps"),
    "predicate.commitments.hints.root": _b("merkle", "rebuilt from the store's hints.jsonl (exact mode)"),
    "predicate.commitments.hints.size": _b("derived", "total_steps (exact mode)"),
    "predicate.final.state_digest": _b("replay", "the last checkpoint's state digest, reached by replaying the last segment on every audit"),
    "predicate.final.weights_digest": _b("replay", "a component of that state digest, and the weights digest of the auditor's weights file"),
    "predicate.weights_license": _b("declared", "checked against --policy when given; its truth is not checked"),
    "predicate.declared.training_wall_seconds": _b("declared", "what training took, as the prover measured it; shown beside the replay's cost estimate"),
    "predicate.parent.mode": _b("replay", "how checkpoint 0 is formed from the parent (fine-tune or continue); checkpoint 0 is recomputed"),
    "predicate.parent.attestation": _b("auditor", "the statement digest of the parent link the auditor gives (--parent); verify_chain verifies that link too"),
    "predicate.parent.weights_digest": _b("derived", "the parent's attested final weights digest; checkpoint 0 is recomputed from the file holding them"),
    "predicate.parent.state_digest": _b("derived", "continued training: the parent's attested final state digest, which checkpoint 0 must be"),
    "predicate.parent.reinitialised": _b("replay", "model tensors kept as the seed built them; checkpoint 0 is recomputed with exactly these"),
    "predicate.parent.dropped": _b("replay", "parent tensors the model lacks; checked when checkpoint 0 is recomputed"),
    "predicate.inputs.*.weights_digest": _b("auditor", "the frozen input's file the auditor gives (--input) must hold these weights"),
    "predicate.inputs.*.attestation": _b("auditor", "the input's own attested run, verified as a chain when its directory is given; a bare file: reported as declared, not verified"),
    "predicate.distributed.world_size": _b("replay", "the ranks whose shards every step commits and replay reproduces (data-parallel runs)"),
    "predicate.distributed.backend": _b("replay", "decides how the verifier replays the ranks; the replay must land"),
    "predicate.distributed.split": _b("format", "the batch split (contiguous/v1); every step's shards are checked against it"),
    "predicate.distributed.reduction": _b("format", "the gradient reduction (ddp-allreduce-mean/v1) replay reproduces"),
    "predicate.exact.mode": _b("format", "the exact-mode algorithm and its version"),
    **{f"predicate.exact.{g}.{k}": _b("replay", "the grid replay rounds to; every committed hint must fit it")
       for g in ("gradients", "state") for k in _GRID},
}

STORE_FIELDS: dict[str, Binding] = {
    "index.jsonl step.step": _b("merkle", "the leaf's position in the batches and rng trees; steps run 0, 1, 2, ..."),
    "index.jsonl step.sample_ids": _b("replay", "batches tree; recomputed from the sampler for every step, replayed or not"),
    "index.jsonl step.batch_digest": _b("replay", "batches tree; recomputed from the proven records for every replayed step"),
    "index.jsonl step.rng_digest": _b("replay", "rng tree; recomputed before every replayed step"),
    "index.jsonl step.loss": _b("replay", "batches tree; compared with the loss each replayed step returns (exact mode: within 2^-7; not in bounded mode)"),
    "index.jsonl step.ranks[].sample_ids": _b("replay", "a data-parallel step: batches tree; each rank's shard of the sampler's batch, checked for every step"),
    "index.jsonl step.ranks[].batch_digest": _b("replay", "a data-parallel step: batches tree; recomputed for every replayed step and rank"),
    "index.jsonl step.ranks[].rng_digest": _b("replay", "a data-parallel step: rng tree; recomputed before every replayed step, per rank"),
    "index.jsonl checkpoint.index": _b("merkle", "the leaf's position in the checkpoints tree"),
    "index.jsonl checkpoint.step": _b("derived", "the checkpoint schedule of total_steps and checkpoint_interval"),
    "index.jsonl checkpoint.weights_digest": _b("replay", "checkpoints tree; a component of the derived state digest that restore, replay and the seeded start recompute; the final one is the weights file's"),
    "index.jsonl checkpoint.rest_digest": _b("replay", "checkpoints tree; the other component of that state digest"),
    "checkpoints/*.safetensors[.zst] tensors and skeleton": _b("replay", "hash to the leaf's state digest when read; restoring one must give back that state"),
    "checkpoints/*.delta.safetensors.zst base, xor, dtype, shape": _b("replay", "the state they reconstruct must hash to its leaf's state digest"),
    "hints.jsonl": _b("replay", "hints tree (exact mode); each hint replay applies must fit the grid and its own value"),
    "manifest.jsonl header": _b("derived", "must equal the signed data summary"),
    "manifest.jsonl entries": _b("auditor", "hash to the signed manifest root; each record replay reads is proven against its entry"),
    "run.json code_files": _b("derived", "used only to name differing files, and only when it hashes to the signed tree digest"),
    "run.json (every other field)": _b("unread", "the prover's declaration, compared when resuming; the statement carries what is checked"),
    "imports.json packages[].files": _b("derived", "used only to name differing files, and only when it hashes to the package's signed digest"),
    "imports.json (every other field)": _b("unread", "the prover's record, copied into the statement by attest"),
    "timing.json": _b("unread", "the prover's own measure of training time, copied into the statement by attest (predicate.declared)"),
}


_FREE_KEYS = (("predicate", "hyperparameters"), ("predicate", "inputs"))  # mappings whose keys are names, not fields


def statement_field_pattern(path: tuple[str | int, ...]) -> str:
    """The table key of a concrete path into the statement (list indices as ``[]``, free names as ``*``)."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += "[]"
        elif i == 2 and path[:2] in _FREE_KEYS:
            out += ".*"
        else:
            out += ("." if out else "") + part
    return out


def statement_leaves(statement: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every leaf value of a statement's JSON with its path: a hyperparameter's value, and a list of plain
    values (tensor names), are one leaf each, whatever they hold."""
    plain_list = isinstance(statement, list) and not any(isinstance(v, (dict, list)) for v in statement)
    if (path[:2] == ("predicate", "hyperparameters") and len(path) == 3) or plain_list:
        yield path, statement
    elif isinstance(statement, dict) and statement:
        for key in sorted(statement):
            yield from statement_leaves(statement[key], (*path, key))
    elif isinstance(statement, list) and statement:
        for i, item in enumerate(statement):
            yield from statement_leaves(item, (*path, i))
    else:
        yield path, statement


def declared_fields(statement: Any) -> list[tuple[str, Any]]:
    """The statement's fields that only the signature covers, as (path text, value), in document order."""
    out = []
    for path, value in statement_leaves(statement):
        binding = STATEMENT_FIELDS.get(statement_field_pattern(path))
        if binding is not None and binding.kind == "declared":
            out.append((path_text(statement, path), value))
    return out


def path_text(statement: Any, path: tuple[str | int, ...]) -> str:
    """A path for display: list items that have a string ``name`` are shown by it (``sources[uci-digits]``), others by index."""
    out, node = "", statement
    for i, part in enumerate(path):
        if isinstance(part, int):
            item = node[part]
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[{name}]" if isinstance(name, str) else f"[{part}]"
        else:
            out += ("." if i else "") + part
        node = node[part]
    return out
