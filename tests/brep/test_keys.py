"""Agent keys, fingerprints and challenges (bbot.brep.keys), checked against the real openssl CLI."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbot.brep.keys import (
    AgentKeyError,
    TrustedKeys,
    fingerprint,
    generate_private_key,
    load_private_key,
    load_public_key,
    new_challenge,
    public_pem,
    sign_challenge,
    verify_challenge,
    write_private_key,
)
from bbot.cli import main as bbot_main

ROOT = Path(__file__).resolve().parent.parent.parent
OPENSSL = "/usr/bin/openssl"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
FAST = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def openssl(*args: str | Path, stdin: bytes = b"") -> bytes:
    """Run the real openssl CLI (fails, never skips, when it is missing); its stdout."""
    assert Path(OPENSSL).is_file(), f"{OPENSSL} is missing: install openssl (3.x)"
    done = subprocess.run([OPENSSL, *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def openssl_fingerprint(public_pem_file: Path) -> str:
    """brep's computation: `openssl pkey -pubin -outform DER`, then SHA-256 (here by `openssl dgst`)."""
    der = openssl("pkey", "-pubin", "-in", public_pem_file, "-outform", "DER")
    return openssl("dgst", "-sha256", "-r", stdin=der).split()[0].decode()


def modulus_bytes(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> int:
    return (key.key_size + 7) // 8


def raw_sign(key: rsa.RSAPrivateKey, em: bytes) -> bytes:
    """pow(EM, d, n) for an arbitrary encoded message: lets the tests forge bad paddings."""
    numbers = key.private_numbers()
    return pow(int.from_bytes(em, "big"), numbers.d, numbers.public_numbers.n).to_bytes(len(em), "big")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_private_key(1024)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_private_key(1024)


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory, key: rsa.RSAPrivateKey) -> tuple[Path, Path]:
    """(private key file as write_private_key writes it, public key file as public_pem prints it)."""
    directory = tmp_path_factory.mktemp("keys")
    private, public = directory / "key.pem", directory / "pub.pem"
    write_private_key(key, private)
    public.write_text(public_pem(key))
    return private, public


# -- fingerprints ---------------------------------------------------------------------------------

def test_fingerprint_is_openssls_sha256_of_the_der_public_key(key: rsa.RSAPrivateKey,
                                                              key_files: tuple[Path, Path]) -> None:
    expected = openssl_fingerprint(key_files[1])
    assert HEX64.match(expected)
    assert fingerprint(key) == expected
    assert fingerprint(key.public_key()) == expected
    assert fingerprint(load_public_key(key_files[1].read_bytes())) == expected


def test_pkcs1_public_key_form_has_the_same_fingerprint(key: rsa.RSAPrivateKey, key_files: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    pkcs1 = tmp_path / "rsa-pub.pem"
    openssl("rsa", "-in", key_files[0], "-RSAPublicKey_out", "-out", pkcs1)
    assert pkcs1.read_text().startswith("-----BEGIN RSA PUBLIC KEY-----")
    loaded = load_public_key(pkcs1.read_text(), str(pkcs1))
    assert fingerprint(loaded) == fingerprint(key) == openssl_fingerprint(pkcs1)


def test_public_pem_is_subject_public_key_info(key: rsa.RSAPrivateKey) -> None:
    text = public_pem(key)
    assert text.startswith("-----BEGIN PUBLIC KEY-----\n") and text.endswith("-----END PUBLIC KEY-----\n")
    assert public_pem(key.public_key()) == text


# -- challenges -----------------------------------------------------------------------------------

def test_new_challenge_is_64_lower_case_hex_and_fresh() -> None:
    challenges = [new_challenge() for _ in range(2000)]
    assert all(HEX64.match(c) for c in challenges)
    assert len(set(challenges)) == len(challenges)


def test_openssl_signature_verifies_and_equals_ours(key: rsa.RSAPrivateKey, key_files: tuple[Path, Path]) -> None:
    challenge = new_challenge()
    theirs = openssl("pkeyutl", "-sign", "-inkey", key_files[0], stdin=challenge.encode("ascii"))
    assert len(theirs) == modulus_bytes(key)
    assert verify_challenge(key.public_key(), challenge, theirs)
    # Type-1 padding is deterministic: byte for byte what openssl makes.
    assert sign_challenge(key, challenge) == theirs


def test_brep_recovers_exactly_the_challenge_from_our_signature(key: rsa.RSAPrivateKey,
                                                                key_files: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    challenge = new_challenge()
    signature = tmp_path / "signature"
    signature.write_bytes(sign_challenge(key, challenge))
    recovered = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", key_files[1], "-in", signature)
    assert recovered == challenge.encode("ascii")  # no newline, nothing else: brep reads one line, then EOF


def test_default_2048_bit_key_against_openssl(tmp_path: Path) -> None:
    key = generate_private_key()
    assert key.key_size == 2048 and key.public_key().public_numbers().e == 65537
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    write_private_key(key, private)
    public.write_text(public_pem(key))
    assert fingerprint(load_private_key(private)) == openssl_fingerprint(public)
    challenge = new_challenge()
    signature = tmp_path / "signature"
    signature.write_bytes(sign_challenge(key, challenge))
    assert openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", public, "-in", signature) == challenge.encode()
    theirs = openssl("pkeyutl", "-sign", "-inkey", private, stdin=challenge.encode())
    assert verify_challenge(key.public_key(), challenge, theirs)


def test_keys_openssl_made_load_and_sign_alike(tmp_path: Path) -> None:
    traditional = tmp_path / "rsa.pem"  # "BEGIN RSA PRIVATE KEY", as older tools write
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", tmp_path / "p8.pem")
    openssl("pkey", "-in", tmp_path / "p8.pem", "-traditional", "-out", traditional)
    assert traditional.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = load_private_key(traditional)
    challenge = new_challenge()
    assert sign_challenge(key, challenge) == openssl("pkeyutl", "-sign", "-inkey", traditional,
                                                     stdin=challenge.encode())


def test_signature_over_the_challenge_and_a_newline_is_rejected(key: rsa.RSAPrivateKey,
                                                                key_files: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    challenge = new_challenge()
    echoed = sign_challenge(key, challenge + "\n")  # as `echo $challenge | ...` would sign it
    (tmp_path / "signature").write_bytes(echoed)
    recovered = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", key_files[1], "-in", tmp_path / "signature")
    assert recovered == challenge.encode() + b"\n"
    assert not verify_challenge(key.public_key(), challenge, echoed)
    assert verify_challenge(key.public_key(), challenge + "\n", echoed)


def test_digestinfo_signature_from_cryptography_is_rejected(key: rsa.RSAPrivateKey) -> None:
    challenge = new_challenge()
    with_digest_info = key.sign(challenge.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert len(with_digest_info) == modulus_bytes(key)
    assert not verify_challenge(key.public_key(), challenge, with_digest_info)


def test_bad_signatures_are_false(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    public = key.public_key()
    challenge = new_challenge()
    good = sign_challenge(key, challenge)
    assert verify_challenge(public, challenge, good)
    flipped = bytes([good[0] ^ 0x01]) + good[1:]
    k = modulus_bytes(key)
    n = public.public_numbers().n
    for bad in (
        flipped,
        good[:-1],  # truncated
        good[1:],
        good + b"\x00",
        b"\x00" + good,
        b"",
        b"\x00" * k,
        b"\xff" * k,  # above the modulus
        n.to_bytes(k, "big"),  # equal to the modulus
        sign_challenge(other_key, challenge),  # another agent's key
        challenge.encode(),  # the challenge itself, unsigned
    ):
        assert verify_challenge(public, challenge, bad) is False
    for other_challenge in (new_challenge(), challenge[:-1], challenge.upper(), challenge + " ", "", "é" * 64):
        assert verify_challenge(public, other_challenge, good) is False
    assert verify_challenge(other_key.public_key(), challenge, good) is False


def test_padding_is_checked_strictly(key: rsa.RSAPrivateKey) -> None:
    public, k = key.public_key(), modulus_bytes(key)

    def forge(prefix: bytes, data: bytes) -> bytes:
        return raw_sign(key, prefix + b"\xff" * (k - len(prefix) - len(data) - 1) + b"\x00" + data)

    eight_ff_data = b"a" * (k - 11)  # the longest data type-1 padding allows
    assert verify_challenge(public, eight_ff_data.decode(), forge(b"\x00\x01", eight_ff_data))
    seven_ff_data = b"a" * (k - 10)
    assert not verify_challenge(public, seven_ff_data.decode(), forge(b"\x00\x01", seven_ff_data))
    challenge = new_challenge()
    data = challenge.encode()
    assert not verify_challenge(public, challenge, forge(b"\x00\x02", data))  # type 2 (encryption)
    assert not verify_challenge(public, challenge, forge(b"\x01\x01", data))
    # A byte other than FF inside the padding.
    em = bytearray(b"\x00\x01" + b"\xff" * (k - len(data) - 3) + b"\x00" + data)
    em[5] = 0xFE
    assert not verify_challenge(public, challenge, raw_sign(key, bytes(em)))
    # No 00 separator at all.
    assert not verify_challenge(public, challenge, raw_sign(key, b"\x00\x01" + b"\xff" * (k - 2)))


@FAST
@given(garbage=st.binary(max_size=300))
def test_garbage_signatures_are_false_never_an_error(key: rsa.RSAPrivateKey, garbage: bytes) -> None:
    assert verify_challenge(key.public_key(), "0" * 64, garbage) is False


@FAST
@given(garbage=st.binary(min_size=128, max_size=128))  # exactly k bytes for the 1024-bit key
def test_garbage_of_the_right_length_is_false(key: rsa.RSAPrivateKey, garbage: bytes) -> None:
    assert verify_challenge(key.public_key(), new_challenge(), garbage) is False


@FAST
@given(challenge=st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=117),
       other=st.text(max_size=120))
def test_sign_verify_round_trip(key: rsa.RSAPrivateKey, challenge: str, other: str) -> None:
    signature = sign_challenge(key, challenge)
    assert verify_challenge(key.public_key(), challenge, signature)
    assert verify_challenge(key.public_key(), other, signature) is (other == challenge)


def test_sign_challenge_refuses_what_cannot_be_signed(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="not ASCII"):
        sign_challenge(key, "é")
    with pytest.raises(ValueError, match="too long"):
        sign_challenge(key, "a" * (modulus_bytes(key) - 10))


# -- key files ------------------------------------------------------------------------------------

def test_written_private_key_is_pkcs8_mode_0600_and_loads(key: rsa.RSAPrivateKey,
                                                          key_files: tuple[Path, Path]) -> None:
    private = key_files[0]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    openssl("pkey", "-in", private, "-noout")  # openssl (brep's side) reads it
    assert load_private_key(private).private_numbers() == key.private_numbers()


def test_write_private_key_is_0600_even_with_an_open_umask(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_key(key, tmp_path / "key.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_write_private_key_never_overwrites(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
                                            tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    write_private_key(key, path)
    before = path.read_bytes()
    with pytest.raises(AgentKeyError, match=re.escape(f"{path}: already exists")):
        write_private_key(other_key, path)
    assert path.read_bytes() == before
    missing = tmp_path / "no-such-dir" / "key.pem"
    with pytest.raises(AgentKeyError, match=re.escape(f"{missing}: cannot create")):
        write_private_key(key, missing)


def test_generate_refuses_odd_sizes() -> None:
    with pytest.raises(ValueError, match="512 bits"):
        generate_private_key(512)


def test_load_private_key_names_the_file_and_the_fix(key_files: tuple[Path, Path], tmp_path: Path) -> None:
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-aes256", "-pass", "pass:x",
            "-out", tmp_path / "encrypted.pem")
    openssl("genpkey", "-algorithm", "ed25519", "-out", tmp_path / "ed25519.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", tmp_path / "small.pem")
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(tmp_path / "openssh")],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "junk.pem").write_text("hello\n")
    (tmp_path / "damaged.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    cases = {
        tmp_path / "missing.pem": "cannot read",
        key_files[1]: "holds a public key",
        tmp_path / "encrypted.pem": "encrypted",
        tmp_path / "ed25519.pem": "an Ed25519 key",
        tmp_path / "small.pem": "512-bit RSA key, too small",
        tmp_path / "openssh": "OpenSSH-format",
        tmp_path / "junk.pem": "not a PEM file",
        tmp_path / "damaged.pem": "not a usable PEM private key",
    }
    for path, what in cases.items():
        with pytest.raises(AgentKeyError) as caught:
            load_private_key(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and what in message, message
        assert "`" in message, f"no fix given: {message}"  # every message ends with a command to run


def test_load_public_key_refuses_a_private_key(key: rsa.RSAPrivateKey, key_files: tuple[Path, Path]) -> None:
    with pytest.raises(AgentKeyError, match=r"^agent\.pem: a private key, where only public keys belong"):
        load_public_key(key_files[0].read_bytes(), "agent.pem")
    assert fingerprint(load_public_key(public_pem(key))) == fingerprint(key)


# -- the controller's agent-keys directory --------------------------------------------------------

def test_trusted_keys_by_fingerprint(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
                                     key_files: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "alice.pem").write_text(public_pem(key))
    openssl("rsa", "-in", key_files[0], "-RSAPublicKey_out", "-out", tmp_path / "alice-pkcs1.txt")
    (tmp_path / "bob.pem").write_text(public_pem(other_key))
    (tmp_path / "README").write_text("not a key: only *.pem files are read\n")
    trusted = TrustedKeys.load(tmp_path)
    assert len(trusted) == 2
    assert trusted.fingerprints == sorted([fingerprint(key), fingerprint(other_key)])
    alice = trusted.get(fingerprint(key))
    assert alice is not None and alice.public_numbers() == key.public_key().public_numbers()
    assert trusted.name_of(fingerprint(key)) == "alice" and trusted.name_of(fingerprint(other_key)) == "bob"
    assert trusted.get("0" * 64) is None
    with pytest.raises(KeyError):
        trusted.name_of("0" * 64)
    # What the controller does with it: look up the agent's key, check its signature.
    challenge = new_challenge()
    assert verify_challenge(alice, challenge, sign_challenge(key, challenge))


def test_trusted_keys_lists_every_bad_file_in_one_error(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
                                                         key_files: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "good.pem").write_text(public_pem(key))
    (tmp_path / "private.pem").write_bytes(key_files[0].read_bytes())
    (tmp_path / "junk.pem").write_text("just some text\n")
    openssl("genpkey", "-algorithm", "ed25519", "-out", tmp_path / "ed.key")
    openssl("pkey", "-in", tmp_path / "ed.key", "-pubout", "-out", tmp_path / "ed25519.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", tmp_path / "small.key")
    openssl("pkey", "-in", tmp_path / "small.key", "-pubout", "-out", tmp_path / "small.pem")
    (tmp_path / "two.pem").write_text(public_pem(other_key) + public_pem(key))
    (tmp_path / "twin.pem").write_text(public_pem(key))  # the same key as good.pem (sorted before it)
    (tmp_path / "dir.pem").mkdir()
    with pytest.raises(AgentKeyError) as caught:
        TrustedKeys.load(tmp_path)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0].startswith(f"agent keys directory {tmp_path}: 7 unusable file(s)")
    assert "bbot agent-key public <private.pem>" in lines[0]
    expected = {
        "twin.pem": f"the same key as {tmp_path / 'good.pem'}",
        "dir.pem": "cannot read",
        "ed25519.pem": "an Ed25519 key",
        "junk.pem": "not a PEM public key",
        "private.pem": "a private key, where only public keys belong",
        "small.pem": "512-bit RSA key, too small",
        "two.pem": "2 PEM blocks",
    }
    problems = lines[1:]
    assert len(problems) == len(expected), problems  # one line per file
    for name, what in expected.items():
        [line] = [p for p in problems if p.startswith(f"  {tmp_path / name}: ")]
        assert what in line, line
    assert not any(p.startswith(f"  {tmp_path / 'good.pem'}:") for p in problems)


def test_trusted_keys_empty_or_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "agent-keys"
    with pytest.raises(AgentKeyError, match=re.escape(f"agent keys directory {missing}: does not exist")) as e1:
        TrustedKeys.load(missing)
    assert f"bbot agent-key public <private.pem> > {missing}/<agent>.pem" in str(e1.value)
    missing.mkdir()
    with pytest.raises(AgentKeyError, match="no agent keys") as e2:
        TrustedKeys.load(missing)
    assert f"> {missing}/<agent>.pem" in str(e2.value)
    (missing / "alice.pub").write_text("wrongly named\n")
    with pytest.raises(AgentKeyError, match=re.escape("only *.pem files are read; ignored: alice.pub")):
        TrustedKeys.load(missing)
    (tmp_path / "file").write_text("")
    with pytest.raises(AgentKeyError, match="is not a directory"):
        TrustedKeys.load(tmp_path / "file")


# -- bbot agent-key -------------------------------------------------------------------------------

def bbot(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bbot.cli", "agent-key", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_generate_public_fingerprint_end_to_end(tmp_path: Path) -> None:
    private, keys_dir = tmp_path / "agent.pem", tmp_path / "agent-keys"
    keys_dir.mkdir()
    generated = bbot("generate", private, "--bits", "1024")
    assert generated.returncode == 0, generated.stderr
    fp = generated.stdout.strip()
    assert HEX64.match(fp) and generated.stdout == fp + "\n"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_private_key(private).key_size == 1024

    public = bbot("public", private)
    assert public.returncode == 0, public.stderr
    (keys_dir / "host1.pem").write_text(public.stdout)  # as the operator does with `>`
    assert openssl_fingerprint(keys_dir / "host1.pem") == fp
    assert TrustedKeys.load(keys_dir).name_of(fp) == "host1"

    for path in (private, keys_dir / "host1.pem"):
        printed = bbot("fingerprint", path)
        assert (printed.returncode, printed.stdout, printed.stderr) == (0, fp + "\n", "")

    again = bbot("generate", private, "--bits", "1024")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith(f"bbot agent-key: {private}: already exists"), again.stderr
    assert TrustedKeys.load(keys_dir).get(fp) is not None  # the trusted key still matches the file


@pytest.mark.parametrize("argv, error", [
    (["public", "{dir}/missing.pem"], "{dir}/missing.pem: cannot read"),
    (["fingerprint", "{dir}/missing.pem"], "{dir}/missing.pem: cannot read"),
    (["public", "{dir}/pub.pem"], "{dir}/pub.pem: holds a public key"),
    (["fingerprint", "{dir}/junk.pem"], "{dir}/junk.pem: not a PEM public key"),
    (["generate", "{dir}/new.pem", "--bits", "512"], "an agent key of 512 bits"),
])
def test_cli_errors_exit_2(argv: list[str], error: str, key: rsa.RSAPrivateKey, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pub.pem").write_text(public_pem(key))
    (tmp_path / "junk.pem").write_text("junk\n")
    code = bbot_main(["agent-key", *(a.format(dir=tmp_path) for a in argv)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("bbot agent-key: " + error.format(dir=tmp_path)), err
    assert not (tmp_path / "new.pem").exists()


def test_cli_fingerprint_of_private_key_matches_openssl(key_files: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert bbot_main(["agent-key", "fingerprint", str(key_files[0])]) == 0
    assert capsys.readouterr().out == openssl_fingerprint(key_files[1]) + "\n"
    assert hashlib.sha256(openssl("pkey", "-in", key_files[0], "-pubout", "-outform", "DER")).hexdigest() \
        == fingerprint(load_private_key(key_files[0]))
