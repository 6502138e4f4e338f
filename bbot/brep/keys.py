"""Agent keys, fingerprints and challenges (``shared/docs/bbot-protocol.md`` §3.5, §2.2, §2.5).

brep authenticates an agent in three steps:

1. the task request carries ``fingerprint``: the SHA-256 (lower-case hex) of the
   agent's RSA public key in DER SubjectPublicKeyInfo form (:func:`fingerprint`);
2. the task response carries ``challenge``: 64 lower-case hex characters
   (:func:`new_challenge`);
3. the result request carries the agent's signature over exactly those 64 ASCII
   bytes, made with raw PKCS#1 v1.5 type-1 padding and *no* DigestInfo
   (:func:`sign_challenge`), which brep checks with
   ``openssl pkeyutl -verifyrecover`` (:func:`verify_challenge` does the same).

The signature is computed by hand with the key's numbers because
``cryptography`` only signs with a DigestInfo, which brep rejects. Base64 on
the wire is the manifest layer's business, not this module's.

No network I/O here; only the ``load``/``write`` functions touch files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

# Smallest key we generate or accept. cryptography generates no smaller one, and a
# 64-character challenge needs k >= 64 + 11 bytes of modulus to be signed at all.
MIN_KEY_BITS = 1024
# Largest key `generate` makes: beyond this generation takes minutes and buys nothing.
MAX_KEY_BITS = 16384
PUBLIC_EXPONENT = 65537

# PKCS#1 v1.5 type-1 padding: 00 01, at least 8 FF bytes, 00, then the data.
_PADDING_OVERHEAD = 11
_MIN_PADDING_FF = 8

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_PUBLIC_LABELS = (b"PUBLIC KEY", b"RSA PUBLIC KEY")

ADD_KEY_HINT = "`bbot agent-key public <private.pem> > {directory}/<agent>.pem`"


class AgentKeyError(ValueError):
    """A key file (or key text) that cannot be used; the message names the file and the fix."""


def generate_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A new RSA agent key with public exponent 65537."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"an agent key of {bits} bits: use {MIN_KEY_BITS} to {MAX_KEY_BITS} bits "
                         f"(2048 or more for real agents)")
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)


def write_private_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    """Write ``key`` to a new file ``path`` (PEM, PKCS#8, unencrypted, mode 0600).

    An existing file is never overwritten: it may be the only copy of a key a
    controller already trusts.
    """
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        # O_EXCL refuses an existing file atomically; 0600 from the start: never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AgentKeyError(f"{path}: already exists; refusing to overwrite a key file: "
                            f"pick another path, or remove it yourself if it is really unused") from None
    except OSError as e:
        raise AgentKeyError(f"{path}: cannot create: {e.strerror or e}; "
                            f"check that the directory exists and is writable") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # the mode given to open() is narrowed by the umask, never widened
            f.write(pem)
    except OSError as e:
        path.unlink(missing_ok=True)  # a half-written key is worse than none
        raise AgentKeyError(f"{path}: cannot write: {e.strerror or e}; check the free space and try again") \
            from None


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``), ending in a newline."""
    return _public(key).public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """SHA-256, lower-case hex, of the DER SubjectPublicKeyInfo of the public key (what brep computes)."""
    der = _public(key).public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The unencrypted RSA private key in the PEM file ``path``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AgentKeyError(f"{path}: cannot read the agent's private key: {e.strerror or e}; "
                            f"make one with `bbot agent-key generate {path}`") from None
    labels = _PEM_BEGIN.findall(data)
    if not labels:
        raise AgentKeyError(f"{path}: not a PEM file (no -----BEGIN line); give the agent's private key, "
                            f"as `bbot agent-key generate <new.pem>` writes it")
    if labels[0] in _PUBLIC_LABELS:
        raise AgentKeyError(f"{path}: holds a public key; give the agent's private key "
                            f"(the file `bbot agent-key generate` wrote)")
    if labels[0] == b"OPENSSH PRIVATE KEY":
        raise AgentKeyError(f"{path}: an OpenSSH-format key; convert a copy to PEM with "
                            f"`ssh-keygen -p -N '' -m PKCS8 -f <copy>` or make one with "
                            f"`bbot agent-key generate <new.pem>`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for an encrypted key given no password.
        raise AgentKeyError(f"{path}: encrypted; the agent signs unattended and needs it unencrypted: "
                            f"`openssl pkey -in {path} -out <new.pem>` (then chmod 600 <new.pem>)") from None
    except (ValueError, NotImplementedError) as e:
        raise AgentKeyError(f"{path}: not a usable PEM private key ({_first_line(e)}); "
                            f"make one with `bbot agent-key generate <new.pem>`") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AgentKeyError(f"{path}: {_kind(key)} key; brep's challenge needs an RSA key: "
                            f"make one with `bbot agent-key generate <new.pem>`")
    _check_size(key.key_size, str(path))
    return key


def load_public_key(pem: bytes | str, source: str = "<key>") -> rsa.RSAPublicKey:
    """The one RSA public key in ``pem`` (``PUBLIC KEY`` or ``RSA PUBLIC KEY``).

    ``source`` (a file name, a manifest) names the key in errors.
    """
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
    labels = _PEM_BEGIN.findall(data)
    if not labels:
        raise AgentKeyError(f"{source}: not a PEM public key (no -----BEGIN line); "
                            f"make it with `bbot agent-key public <private.pem>`")
    if len(labels) > 1:
        # brep would silently use the first one; the others would look trusted and not be.
        raise AgentKeyError(f"{source}: {len(labels)} PEM blocks; put one public key in each file")
    label = labels[0]
    if label.endswith(b"PRIVATE KEY"):
        raise AgentKeyError(f"{source}: a private key, where only public keys belong; delete this copy "
                            f"(the private key stays on the agent) and put its public key here instead: "
                            f"`bbot agent-key public <private.pem>`")
    if label == b"CERTIFICATE":
        raise AgentKeyError(f"{source}: a certificate, where a bare public key belongs; extract it with "
                            f"`openssl x509 -in <certificate> -pubkey -noout`")
    if label not in _PUBLIC_LABELS:
        raise AgentKeyError(f"{source}: a PEM {label.decode('ascii')!r} block, not a public key; "
                            f"make one with `bbot agent-key public <private.pem>`")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, NotImplementedError) as e:
        raise AgentKeyError(f"{source}: a damaged PEM public key ({_first_line(e)}); "
                            f"make it again with `bbot agent-key public <private.pem>`") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise AgentKeyError(f"{source}: {_kind(key)} key; brep's challenge needs an RSA key: "
                            f"make one on the agent with `bbot agent-key generate <new.pem>`")
    _check_size(key.key_size, source)
    return key


def new_challenge() -> str:
    """A fresh challenge, as brep makes it.

    The SHA-256 hex of 64 random bytes followed by the time in ns (8 bytes, native order).
    """
    # brep appends the clock so that a weak random source still gives distinct challenges.
    now = time.time_ns().to_bytes(8, sys.byteorder)
    return hashlib.sha256(secrets.token_bytes(64) + now).hexdigest()


def sign_challenge(key: rsa.RSAPrivateKey, challenge: str) -> bytes:
    """The signature brep expects: raw PKCS#1 v1.5 type 1, no DigestInfo, over the challenge's ASCII bytes.

    The same bytes as ``printf %s CHALLENGE | openssl pkeyutl -sign -inkey key.pem``
    (this padding is deterministic). That command takes at most 64 bytes, just
    what a brep challenge is; here the limit is the key's size less 11 bytes.
    """
    try:
        data = challenge.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"challenge {challenge!r}: not ASCII; brep's challenges are hex strings") from None
    numbers = key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    k = _modulus_bytes(n)
    if len(data) > k - _PADDING_OVERHEAD:
        raise ValueError(f"challenge of {len(data)} bytes: too long for a {key.key_size}-bit key "
                         f"(at most {k - _PADDING_OVERHEAD} bytes)")
    em = b"\x00\x01" + b"\xff" * (k - len(data) - 3) + b"\x00" + data
    return pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")


def verify_challenge(key: rsa.RSAPublicKey, challenge: str, signature: bytes) -> bool:
    """Whether ``signature`` recovers exactly ``challenge`` under ``key``, as brep checks it.

    Strict where OpenSSL is: the signature is exactly k bytes and below the
    modulus, the padding is 00 01, at least 8 FF bytes, 00. Nothing but the
    challenge may follow (a DigestInfo, as ``cryptography``'s PKCS1v15 signing
    adds, fails). Any bad input gives False, never an exception.
    """
    if not isinstance(challenge, str) or not isinstance(signature, bytes | bytearray | memoryview):
        return False
    try:
        expected = challenge.encode("ascii")
        numbers = key.public_numbers()
    except (UnicodeEncodeError, AttributeError):
        return False
    n, e = numbers.n, numbers.e
    k = _modulus_bytes(n)
    signature = bytes(signature)
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    if em[:2] != b"\x00\x01":
        return False
    separator = em.find(b"\x00", 2)
    padding = em[2:separator]
    if separator < 0 or len(padding) < _MIN_PADDING_FF or padding != b"\xff" * len(padding):
        return False
    return hmac.compare_digest(em[separator + 1:], expected)


class TrustedKeys:
    """The controller's agent-keys directory: one PEM public key per ``*.pem`` file, by fingerprint.

    Like brep (``build-bot-agent-keys``), it is read once; a new key needs a reload.
    """

    def __init__(self, directory: Path, keys: dict[str, tuple[str, rsa.RSAPublicKey]]) -> None:
        self.directory = directory
        self._keys = keys  # fingerprint -> (file stem, key)

    @classmethod
    def load(cls, directory: Path) -> TrustedKeys:
        """Read every ``*.pem`` in ``directory``; one AgentKeyError lists every file that cannot be used."""
        hint = ADD_KEY_HINT.format(directory=directory)
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise AgentKeyError(f"agent keys directory {directory}: {what}; create it and add one public key "
                                f"per agent: {hint}")
        try:
            entries = sorted(directory.iterdir())
        except OSError as e:
            raise AgentKeyError(f"agent keys directory {directory}: cannot list: {e.strerror or e}; "
                                f"check its permissions") from None
        files = [p for p in entries if p.name.endswith(".pem")]
        others = [p.name for p in entries if not p.name.endswith(".pem")]
        if not files:
            ignored = f" (only *.pem files are read; ignored: {', '.join(others)})" if others else ""
            raise AgentKeyError(f"agent keys directory {directory}: no agent keys{ignored}; add one public "
                                f"key per agent: {hint}")
        problems: list[str] = []
        keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        for path in files:
            try:
                key = load_public_key(path.read_bytes(), str(path))
            except AgentKeyError as e:
                problems.append(str(e))
                continue
            except OSError as e:
                problems.append(f"{path}: cannot read: {e.strerror or e}; make it a readable file")
                continue
            fp = fingerprint(key)
            if fp in keys:
                problems.append(f"{path}: the same key as {directory / keys[fp][0]}.pem; "
                                f"keep one file per agent and remove the other")
                continue
            keys[fp] = (path.stem, key)
        if problems:
            listed = "\n".join(f"  {p}" for p in problems)
            raise AgentKeyError(f"agent keys directory {directory}: {len(problems)} unusable file(s) "
                                f"(each file holds one agent's public key, made by {hint}):\n{listed}")
        return cls(directory, keys)

    def get(self, fp: str) -> rsa.RSAPublicKey | None:
        """The key with fingerprint ``fp``, or None when no agent has it."""
        entry = self._keys.get(fp)
        return entry[1] if entry else None

    @property
    def fingerprints(self) -> list[str]:
        """Every trusted fingerprint, sorted."""
        return sorted(self._keys)

    def name_of(self, fp: str) -> str:
        """The agent's name for a trusted fingerprint: its file's stem. KeyError for an unknown one."""
        try:
            return self._keys[fp][0]
        except KeyError:
            raise KeyError(f"fingerprint {fp}: not among the agent keys in {self.directory}") from None

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({str(self.directory)!r}, {len(self)} key(s))"


def _public(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> rsa.RSAPublicKey:
    return key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key


def _modulus_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _check_size(bits: int, source: str) -> None:
    if bits < MIN_KEY_BITS:
        raise AgentKeyError(f"{source}: a {bits}-bit RSA key, too small (at least {MIN_KEY_BITS} bits); "
                            f"make a new one with `bbot agent-key generate <new.pem>`")


def _kind(key: object) -> str:
    kinds: tuple[tuple[tuple[type, ...], str], ...] = (
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC"),
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
        ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519"),
        ((x448.X448PrivateKey, x448.X448PublicKey), "an X448"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
    )
    for types, name in kinds:
        if isinstance(key, types):
            return name
    return "a non-RSA"


def _first_line(error: BaseException) -> str:
    return str(error).split("\n", 1)[0].strip() or type(error).__name__
