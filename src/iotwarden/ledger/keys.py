"""The Ed25519 signing key of a ledger and the signed tree heads it produces.

Key location: the key file sits beside the SQLite store, named
``<store stem>.ledger-key.pem`` (see :func:`ledger_key_path`). For the default
store that is inside :func:`iotwarden.paths.data_dir`. Keeping the key beside
its store means that two stores never share a key and that a copied store can
be verified with the key copied next to it.

NOTE: anyone who can write the key file can sign a rewritten log. Tree heads
protect against changes made without the key. Against someone who has it,
keep checkpoints (signed tree heads exported to a file) somewhere they cannot
write, and pass them to verification, which then proves that the log only grew.

The key file is an unencrypted PKCS#8 PEM created with mode 0600 on first use.
The key id is the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from iotwarden.ledger.errors import LedgerError

__all__ = [
    "CHECKPOINT_FORMAT",
    "LedgerKey",
    "SignedTreeHead",
    "key_id_of",
    "ledger_key_path",
    "read_checkpoint",
    "tree_head_message",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "iotwarden-ledger-checkpoint/1"

# Domain separation prefix of the signed bytes, so a ledger signature cannot
# be mistaken for a signature over anything else made with the same key.
_TREE_HEAD_PREFIX = b"iotwarden-ledger-tree-head/1\x00"


def ledger_key_path(store_path: str | os.PathLike[str]) -> Path:
    """Return the signing key file that belongs to the store at ``store_path``."""
    store = Path(store_path)
    return store.with_name(store.stem + ".ledger-key.pem")


def key_id_of(public_key: bytes) -> bytes:
    """Return the key id (SHA-256) of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).digest()


def tree_head_message(size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    """Return the bytes that a tree head signature covers.

    Layout: the ASCII prefix ``iotwarden-ledger-tree-head/1`` and a zero byte,
    then the tree size and the timestamp in milliseconds since the Unix epoch
    as unsigned 64-bit big-endian integers, then the 32-byte root hash.
    """
    return _TREE_HEAD_PREFIX + struct.pack(">QQ", size, timestamp_ms) + root_hash


class LedgerKey:
    """An Ed25519 private key that signs tree heads."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> LedgerKey:
        """Load the key at ``path``, creating it with mode 0600 if the file does not exist."""
        key_path = Path(path)
        try:
            return cls._load(key_path)
        except FileNotFoundError:
            pass

        private_key = Ed25519PrivateKey.generate()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process created the key between our read and our write.
            return cls._load(key_path)
        except OSError as exc:
            raise LedgerError(f"cannot create ledger signing key {key_path}: {exc.strerror}") from exc
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        logger.info("created ledger signing key %s", key_path)
        return cls(private_key)

    @classmethod
    def _load(cls, path: Path) -> LedgerKey:
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise LedgerError(f"cannot read ledger signing key {path}: {exc.strerror}") from exc
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning("ledger signing key %s has mode %o; run chmod 600 on it", path, mode)
        try:
            private_key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"invalid ledger signing key {path}: {exc}") from exc
        if not isinstance(private_key, Ed25519PrivateKey):
            raise LedgerError(f"invalid ledger signing key {path}: expected Ed25519, got {type(private_key).__name__}")
        return cls(private_key)

    def public_key_pem(self) -> str:
        """Return the public key as a SubjectPublicKeyInfo PEM block."""
        return _public_pem(self.public_key)

    def sign_tree_head(self, size: int, root_hash: bytes, timestamp_ms: int) -> SignedTreeHead:
        """Sign a tree head and return it."""
        signature = self._private_key.sign(tree_head_message(size, timestamp_ms, root_hash))
        return SignedTreeHead(
            size=size,
            root_hash=root_hash,
            timestamp_ms=timestamp_ms,
            key_id=self.key_id,
            public_key=self.public_key,
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A tree size and root hash signed with a ledger key.

    Attributes:
        size: Number of entries the tree covers.
        root_hash: RFC 9162 root hash of those entries (32 bytes).
        timestamp_ms: Signing time in milliseconds since the Unix epoch.
        key_id: SHA-256 of ``public_key``, as the signer claims it.
        public_key: Raw 32-byte Ed25519 public key of the signer.
        signature: Ed25519 signature over :func:`tree_head_message`.
    """

    size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: bytes
    public_key: bytes
    signature: bytes

    @property
    def public_key_pem(self) -> str:
        """Signer's public key as a PEM block."""
        return _public_pem(self.public_key)

    def signature_problem(self) -> str | None:
        """Return why the signature does not check out, or None when it is valid.

        This checks only that the head is signed by the key it names, not that
        the key is one the caller trusts: compare ``key_id`` for that.
        """
        if len(self.public_key) != 32:
            return f"public key has {len(self.public_key)} bytes, expected 32"
        if key_id_of(self.public_key) != self.key_id:
            return "key id does not match the public key"
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                self.signature, tree_head_message(self.size, self.timestamp_ms, self.root_hash)
            )
        except InvalidSignature:
            return "signature is invalid"
        return None

    def to_json(self) -> str:
        """Return the checkpoint file text for this tree head."""
        document = {
            "format": CHECKPOINT_FORMAT,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "timestamp_ms": self.timestamp_ms,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "key_id": self.key_id.hex(),
            "public_key": self.public_key_pem,
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SignedTreeHead:
        """Parse checkpoint file text. The signature is not checked here."""
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise LedgerError(f"invalid checkpoint: not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise LedgerError("invalid checkpoint: expected a JSON object")
        if document.get("format") != CHECKPOINT_FORMAT:
            raise LedgerError(f"invalid checkpoint: format must be {CHECKPOINT_FORMAT!r}, got {document.get('format')!r}")

        size = _field(document, "size", int)
        timestamp_ms = _field(document, "timestamp_ms", int)
        if size < 0 or timestamp_ms < 0:
            raise LedgerError("invalid checkpoint: size and timestamp_ms must be non-negative")
        try:
            root_hash = bytes.fromhex(_field(document, "root_hash", str))
            key_id = bytes.fromhex(_field(document, "key_id", str))
            signature = base64.b64decode(_field(document, "signature", str), validate=True)
        except (ValueError, binascii.Error) as exc:
            raise LedgerError(f"invalid checkpoint: bad hex or base64 value ({exc})") from exc
        if len(root_hash) != 32 or len(key_id) != 32:
            raise LedgerError("invalid checkpoint: root_hash and key_id must be 32 bytes (64 hex digits)")
        try:
            public_key = serialization.load_pem_public_key(_field(document, "public_key", str).encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise LedgerError(f"invalid checkpoint: public_key is not a PEM public key ({exc})") from exc
        if not isinstance(public_key, Ed25519PublicKey):
            raise LedgerError("invalid checkpoint: public_key is not an Ed25519 key")
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(size=size, root_hash=root_hash, timestamp_ms=timestamp_ms, key_id=key_id, public_key=raw, signature=signature)


def write_checkpoint(head: SignedTreeHead, path: str | os.PathLike[str]) -> None:
    """Write ``head`` to a checkpoint file, replacing the file atomically."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        temporary.write_text(head.to_json(), encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        raise LedgerError(f"cannot write checkpoint {target}: {exc.strerror}") from exc


def read_checkpoint(path: str | os.PathLike[str]) -> SignedTreeHead:
    """Read a checkpoint file written by :func:`write_checkpoint`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise LedgerError(f"invalid checkpoint {path}: not UTF-8 text") from exc
    try:
        return SignedTreeHead.from_json(text)
    except LedgerError as exc:
        raise LedgerError(f"{path}: {exc}") from exc


def _public_pem(public_key: bytes) -> str:
    key = Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _field(document: dict, name: str, expected: type) -> object:
    value = document.get(name)
    if type(value) is not expected:
        raise LedgerError(f"invalid checkpoint: {name} must be {expected.__name__}, got {value!r}")
    return value
