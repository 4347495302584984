"""Vault keeper: keeps on-chain derivative vaults inside their risk mandate."""

from __future__ import annotations

__version__ = "0.1.0"
