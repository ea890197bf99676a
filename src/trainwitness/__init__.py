"""trainwitness: signed, spot-checkable proofs that weights came from the declared training run."""

__all__ = ["__version__"]

__version__ = "0.1.0"
