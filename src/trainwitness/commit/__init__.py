"""The bytes that are hashed, signed and stored: canonical JSON, domain-separated digests, RFC 9162
Merkle trees, the in-toto statement and its parser, the store's layout and records.

Torch-free and pure: everything here can be read and checked without importing torch
(checked in CI), so it is the smallest part of the trusted core to audit.
"""
