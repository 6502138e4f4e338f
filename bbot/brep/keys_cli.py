"""``bbot agent-key``: make an agent's RSA key, print its public key or its fingerprint (§3.5)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bbot.brep import keys

Action = Callable[[argparse.Namespace], int]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bbot agent-key``."""
    parser = subparsers.add_parser(
        "agent-key",
        help="make an agent's RSA key, print its public key or fingerprint (brep agent authentication)",
        description=(
            "An agent proves who it is to a controller (or brep) with an RSA key: it sends the key's "
            "fingerprint and signs the controller's challenge. Make the key on the agent with `generate`, "
            "then put its public key in the controller's agent-keys directory: "
            "`bbot agent-key public KEY.pem > AGENT-KEYS-DIR/AGENT.pem`."
        ),
    )
    actions = parser.add_subparsers(dest="agent_key_command", required=True, metavar="ACTION")

    generate = actions.add_parser("generate",
                                  help="write a new private key (mode 0600) and print its fingerprint",
                                  description="Write a new unencrypted RSA private key (PEM, PKCS#8, mode "
                                  "0600) to PATH, which must not exist, and print its fingerprint.")
    generate.add_argument("path", type=Path, metavar="PATH")
    generate.add_argument("--bits", type=int, default=2048,
                          help=f"key size ({keys.MIN_KEY_BITS}-{keys.MAX_KEY_BITS}, default 2048)")
    generate.set_defaults(func=_run(_generate))

    public = actions.add_parser("public", help="print the public key of a private key file",
                                description="Print the public key (PEM) of the private key in PATH, for "
                                "the controller's agent-keys directory.")
    public.add_argument("path", type=Path, metavar="PATH")
    public.set_defaults(func=_run(_public))

    fingerprint = actions.add_parser("fingerprint",
                                     help="print the fingerprint of a private or public key file",
                                     description="Print the SHA-256 fingerprint (of the DER public key) that "
                                     "the agent sends and the controller looks up.")
    fingerprint.add_argument("path", type=Path, metavar="PATH")
    fingerprint.set_defaults(func=_run(_fingerprint))


def _run(func: Action) -> Action:
    """``func`` with a bad key file or bad arguments reported as exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ValueError as e:  # AgentKeyError, and generate's bad --bits
            print(f"bbot agent-key: {e}", file=sys.stderr)
            return 2

    return run


def _generate(args: argparse.Namespace) -> int:
    key = keys.generate_private_key(args.bits)
    keys.write_private_key(key, args.path)
    print(keys.fingerprint(key))
    return 0


def _public(args: argparse.Namespace) -> int:
    sys.stdout.write(keys.public_pem(keys.load_private_key(args.path)))
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        data = path.read_bytes()
    except OSError as e:
        raise keys.AgentKeyError(f"{path}: cannot read: {e.strerror or e}; give a key file") from None
    # A private key file names itself in its PEM label ("PRIVATE KEY", "RSA PRIVATE KEY", ...).
    if b"PRIVATE KEY-----" in data:
        print(keys.fingerprint(keys.load_private_key(path)))
    else:
        print(keys.fingerprint(keys.load_public_key(data, str(path))))
    return 0
