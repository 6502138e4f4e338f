"""TftpService and the client helpers over real UDP on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bbot.tftp import (
    RESULT_MANIFEST,
    TASK_MANIFEST,
    AccessDenied,
    TftpError,
    TftpService,
    download,
    parse_request_path,
    upload,
)

ACCESS_VIOLATION = 2
DISK_FULL = 3
ILLEGAL_OPERATION = 4
UNKNOWN_TID = 5

Uploads = list[tuple[str, Path]]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the deadline")
        time.sleep(0.01)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "boot1").mkdir()
    (tmp_path / "boot1" / TASK_MANIFEST).write_bytes(b": 1\nname: libhello\n")
    return tmp_path


@pytest.fixture
def uploads() -> Uploads:
    return []


@pytest.fixture
def service(root: Path, uploads: Uploads) -> Iterator[TftpService]:
    server = TftpService(
        root,
        max_upload_bytes=64 * 1024,
        on_upload=lambda boot, path: uploads.append((boot, path)),
        session_timeout=0.5,
        session_retries=2,
    )
    server.start()
    server.allow("boot1")
    try:
        yield server
    finally:
        server.stop()


def boot_files(root: Path) -> list[str]:
    return sorted(os.listdir(root / "boot1"))


# -- raw protocol helpers, for what the tftpy client will not do --------------------------


def request(opcode: int, name: str, **options: int) -> bytes:
    body = name.encode() + b"\0octet\0"
    for key, value in options.items():
        body += key.encode() + b"\0" + str(value).encode() + b"\0"
    return struct.pack("!H", opcode) + body


def data_packet(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", 3, block) + payload


class RawClient:
    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.peer: tuple[str, int] | None = None

    def send(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.peer or self.server)

    def receive(self) -> tuple[int, int, bytes]:
        """Next packet as (opcode, block-or-error-code, rest)."""
        packet, peer = self.sock.recvfrom(70000)
        self.peer = self.peer or peer
        (opcode,) = struct.unpack("!H", packet[:2])
        if opcode == 6:  # OACK: options only
            return opcode, 0, packet[2:]
        (number,) = struct.unpack("!H", packet[2:4])
        return opcode, number, packet[4:]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(service: TftpService) -> Iterator[RawClient]:
    client = RawClient(service.port)
    yield client
    client.close()


# -- pure name checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../boot1/task.manifest",
        "boot1/../boot1/task.manifest",
        "/boot1/task.manifest",
        "/etc/passwd",
        "boot1/sub/task.manifest",
        "boot1//task.manifest",
        "boot1/result.manifest",
        "boot1/other",
        "./task.manifest",
        "../task.manifest",
        "boot1\0/task.manifest",
        "task.manifest",
        "-x/task.manifest",
        "",
    ],
)
def test_parse_request_path_refuses_anything_but_the_task_file(name: str) -> None:
    with pytest.raises(AccessDenied):
        parse_request_path(name, write=False)


def test_parse_request_path_accepts_the_two_files() -> None:
    assert parse_request_path("boot-1.x_y/task.manifest", write=False) == "boot-1.x_y"
    assert parse_request_path("boot1/result.manifest", write=True) == "boot1"
    with pytest.raises(AccessDenied):
        parse_request_path("boot1/task.manifest", write=True)


# -- service ------------------------------------------------------------------------------


def test_download_task_manifest(service: TftpService) -> None:
    assert download("127.0.0.1", service.port, "boot1/task.manifest") == b": 1\nname: libhello\n"


def test_download_with_a_client_that_negotiates_nothing(service: TftpService) -> None:
    import io

    import tftpy

    received = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", service.port, options={}, flock=False).download(
        "boot1/task.manifest", received, timeout=2
    )
    assert received.getvalue() == b": 1\nname: libhello\n"


def test_small_blksize_is_negotiated(service: TftpService, raw: RawClient) -> None:
    raw.send(request(1, "boot1/task.manifest", blksize=8, tsize=0))
    opcode, _, options = raw.receive()
    assert opcode == 6  # OACK
    fields = options.rstrip(b"\0").split(b"\0")
    assert dict(zip(fields[0::2], fields[1::2], strict=True)) == {b"blksize": b"8", b"tsize": b"19"}
    raw.send(struct.pack("!HH", 4, 0))
    opcode, block, payload = raw.receive()
    assert (opcode, block, payload) == (3, 1, b": 1\nname")


def test_missing_task_manifest_is_file_not_found(service: TftpService, root: Path) -> None:
    (root / "boot2").mkdir()
    service.allow("boot2")
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, "boot2/task.manifest")
    assert caught.value.code == 1


def test_unregistered_and_forbidden_directories_are_refused(
    service: TftpService, root: Path
) -> None:
    (root / "boot2").mkdir()
    (root / "boot2" / TASK_MANIFEST).write_text("secret")
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, "boot2/task.manifest")
    assert caught.value.code == ACCESS_VIOLATION
    assert "access violation" in str(caught.value)

    service.forbid("boot1")
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, "boot1/task.manifest")
    assert caught.value.code == ACCESS_VIOLATION
    with pytest.raises(TftpError):
        upload("127.0.0.1", service.port, "boot1/result.manifest", b"x")
    assert RESULT_MANIFEST not in boot_files(root)


@pytest.mark.parametrize(
    "name",
    ["../boot1/task.manifest", "/etc/passwd", "boot1/../boot1/task.manifest", "boot1/x"],
)
def test_hostile_download_names_are_access_violations(service: TftpService, name: str) -> None:
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, name)
    assert caught.value.code == ACCESS_VIOLATION


def test_name_with_nul_is_refused(service: TftpService, raw: RawClient) -> None:
    # The NUL ends the file name on the wire: the server sees "boot1" and a strange mode.
    raw.send(b"\x00\x01boot1\x00/task.manifest\x00octet\x00")
    opcode, code, _ = raw.receive()
    assert (opcode, code) == (5, ILLEGAL_OPERATION)
    raw.peer = None
    raw.send(b"\x00\x01boot1\x00/task.manifest\x00octet\x00x\x00")
    opcode, code, _ = raw.receive()
    assert (opcode, code) == (5, ACCESS_VIOLATION)


def test_hostile_upload_names_are_refused(service: TftpService, root: Path) -> None:
    for name in ["boot1/task.manifest", "../result.manifest", "boot1/../x/result.manifest"]:
        with pytest.raises(TftpError) as caught:
            upload("127.0.0.1", service.port, name, b"evil")
        assert caught.value.code == ACCESS_VIOLATION
    assert (root / "boot1" / TASK_MANIFEST).read_bytes() == b": 1\nname: libhello\n"
    assert not (root / RESULT_MANIFEST).exists()


def test_symlinks_are_not_followed(service: TftpService, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / TASK_MANIFEST).write_text("outside")
    (root / "boot3").mkdir()
    (root / "boot3" / TASK_MANIFEST).symlink_to(outside / TASK_MANIFEST)
    service.allow("boot3")
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, "boot3/task.manifest")
    assert caught.value.code == ACCESS_VIOLATION

    # A registered directory later replaced by a symlink.
    (root / "boot4").mkdir()
    service.allow("boot4")
    (root / "boot4").rmdir()
    (root / "boot4").symlink_to(outside)
    with pytest.raises(TftpError) as caught:
        download("127.0.0.1", service.port, "boot4/task.manifest")
    assert caught.value.code == ACCESS_VIOLATION
    with pytest.raises(TftpError):
        upload("127.0.0.1", service.port, "boot4/result.manifest", b"x")
    assert sorted(os.listdir(outside)) == [TASK_MANIFEST]


def test_allow_checks_its_argument(service: TftpService, root: Path) -> None:
    with pytest.raises(ValueError, match="invalid boot directory name"):
        service.allow("..")
    with pytest.raises(ValueError, match="does not exist"):
        service.allow("nope")
    (root / "link").symlink_to(root / "boot1")
    with pytest.raises(ValueError, match="symlink"):
        service.allow("link")


def test_upload_lands_atomically_and_calls_the_hook(
    service: TftpService, root: Path, uploads: Uploads
) -> None:
    payload = os.urandom(50_000)
    upload("127.0.0.1", service.port, "boot1/result.manifest", payload)
    # The server acknowledges the last block only once the file is in place.
    assert (root / "boot1" / RESULT_MANIFEST).read_bytes() == payload
    assert uploads == [("boot1", root / "boot1" / RESULT_MANIFEST)]
    assert boot_files(root) == [RESULT_MANIFEST, TASK_MANIFEST]

    upload("127.0.0.1", service.port, "boot1/result.manifest", b"second")
    assert (root / "boot1" / RESULT_MANIFEST).read_bytes() == b"second"


def test_partial_upload_is_invisible_then_discarded(
    service: TftpService, root: Path, raw: RawClient, uploads: Uploads
) -> None:
    raw.send(request(2, "boot1/result.manifest", blksize=512, tsize=2000))
    assert raw.receive()[0] == 6  # OACK
    raw.send(data_packet(1, b"a" * 512))
    assert raw.receive()[:2] == (4, 1)
    assert RESULT_MANIFEST not in boot_files(root)
    assert any(name.endswith(".part") for name in boot_files(root))
    # The client gives up; the server times the session out and drops the partial file.
    wait_for(lambda: boot_files(root) == [TASK_MANIFEST])
    assert uploads == []


def test_aborted_upload_is_discarded(service: TftpService, root: Path, raw: RawClient) -> None:
    raw.send(request(2, "boot1/result.manifest", blksize=512))
    assert raw.receive()[0] == 6
    raw.send(data_packet(1, b"a" * 512))
    assert raw.receive()[:2] == (4, 1)
    raw.send(struct.pack("!HH", 5, 0) + b"client gave up\0")
    wait_for(lambda: boot_files(root) == [TASK_MANIFEST])


def test_upload_shorter_than_its_tsize_is_refused(
    service: TftpService, root: Path, raw: RawClient
) -> None:
    raw.send(request(2, "boot1/result.manifest", blksize=512, tsize=1000))
    assert raw.receive()[0] == 6
    raw.send(data_packet(1, b"short"))
    opcode, _, _ = raw.receive()
    assert opcode == 5  # an error, not the ACK that would mean success
    wait_for(lambda: boot_files(root) == [TASK_MANIFEST])


def test_oversized_upload_is_rejected_up_front(service: TftpService, root: Path) -> None:
    with pytest.raises(TftpError) as caught:
        upload("127.0.0.1", service.port, "boot1/result.manifest", b"x" * 100_000)
    assert caught.value.code == DISK_FULL
    assert boot_files(root) == [TASK_MANIFEST]


def test_oversized_upload_without_tsize_is_stopped(
    service: TftpService, root: Path, raw: RawClient
) -> None:
    raw.send(request(2, "boot1/result.manifest", blksize=40000))
    assert raw.receive()[0] == 6
    raw.send(data_packet(1, b"a" * 40000))
    assert raw.receive()[:2] == (4, 1)
    raw.send(data_packet(2, b"a" * 30000))  # the last block, past the 64 KiB limit
    opcode, code, _ = raw.receive()
    assert (opcode, code) == (5, DISK_FULL)
    wait_for(lambda: boot_files(root) == [TASK_MANIFEST])


def test_traffic_from_a_stranger_does_not_join_a_session(
    service: TftpService, root: Path, raw: RawClient
) -> None:
    raw.send(request(2, "boot1/result.manifest", blksize=512, tsize=600))
    assert raw.receive()[0] == 6
    assert raw.peer is not None
    stranger = RawClient(service.port)
    try:
        stranger.peer = raw.peer
        stranger.send(data_packet(1, b"evil"))
        assert stranger.receive()[:2] == (5, UNKNOWN_TID)
    finally:
        stranger.close()
    raw.send(data_packet(1, b"g" * 512))
    assert raw.receive()[:2] == (4, 1)
    raw.send(data_packet(2, b"g" * 88))
    assert raw.receive()[:2] == (4, 2)
    assert (root / "boot1" / RESULT_MANIFEST).read_bytes() == b"g" * 600


def test_garbage_does_not_stop_the_server(service: TftpService) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for garbage in [
            b"",
            b"\xff",
            b"\x00\x09abc",
            b"\x00\x01\xff\xfe/task.manifest\x00octet\x00",
            b"\x00\x02boot1/result.manifest\x00octet\x00tsize\x00",
            b"\x00\x01boot1/task.manifest\x00octet\x00blksize\x00lots\x00",
            b"\x00\x02boot1/result.manifest\x00octet\x00tsize\x00-5\x00",
            b"\x00\x03\x00\x01data",
        ]:
            sock.sendto(garbage, ("127.0.0.1", service.port))
    assert download("127.0.0.1", service.port, "boot1/task.manifest") == b": 1\nname: libhello\n"


def test_concurrent_transfers(service: TftpService, root: Path) -> None:
    names = [f"b{i}" for i in range(6)]
    for name in names:
        (root / name).mkdir()
        (root / name / TASK_MANIFEST).write_bytes(name.encode() * 10_000)
        service.allow(name)
    results: dict[str, bytes] = {}

    def fetch(name: str) -> None:
        results[name] = download("127.0.0.1", service.port, f"{name}/task.manifest", blksize=1024)

    threads = [threading.Thread(target=fetch, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {name: name.encode() * 10_000 for name in names}


def test_big_files_both_ways(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    payload = os.urandom(24 * 1024 * 1024 + 17)
    (tmp_path / "big" / TASK_MANIFEST).write_bytes(payload)
    with TftpService(tmp_path, max_upload_bytes=32 * 1024 * 1024) as service:
        service.allow("big")
        assert download("127.0.0.1", service.port, "big/task.manifest") == payload
        upload("127.0.0.1", service.port, "big/result.manifest", payload)
    assert (tmp_path / "big" / RESULT_MANIFEST).read_bytes() == payload


@pytest.mark.slow
def test_block_number_rollover(tmp_path: Path) -> None:
    # 65536 blocks of 8 bytes: the block number wraps, at a size that stays quick.
    (tmp_path / "roll").mkdir()
    payload = os.urandom(65536 * 8 + 100)
    (tmp_path / "roll" / TASK_MANIFEST).write_bytes(payload)
    with TftpService(tmp_path) as service:
        service.allow("roll")
        assert download("127.0.0.1", service.port, "roll/task.manifest", blksize=8) == payload


def test_client_times_out_with_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(TftpError, match="no answer after 3 attempts"):
            download("127.0.0.1", port, "boot1/task.manifest", timeout=0.3)
        assert time.monotonic() - started < 5


def test_stop_is_prompt_and_releases_the_port(root: Path) -> None:
    service = TftpService(root)
    service.start()
    port = service.port
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 1
    assert service._thread is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # free again


def test_stop_discards_an_upload_in_flight(root: Path) -> None:
    service = TftpService(root)
    service.start()
    service.allow("boot1")
    client = RawClient(service.port)
    try:
        client.send(request(2, "boot1/result.manifest", blksize=512))
        assert client.receive()[0] == 6
        client.send(data_packet(1, b"a" * 512))
        assert client.receive()[:2] == (4, 1)
        assert any(name.endswith(".part") for name in boot_files(root))
    finally:
        service.stop()
        client.close()
    assert boot_files(root) == [TASK_MANIFEST]
