"""TFTP between an agent and the worker inside a build machine, on tftpy.

The agent runs one :class:`TftpService`; per boot it makes ``<root>/<boot-id>/`` holding
``task.manifest`` and registers that directory with :meth:`TftpService.allow`. The worker
downloads ``<boot-id>/task.manifest`` and uploads ``<boot-id>/result.manifest`` with the client
helpers :func:`download` and :func:`upload`.

The code being built is untrusted, so the server is strict: only the two file names below,
only in registered directories, never through a symlink, uploads bounded in size and made
visible only once complete (written under a temporary name, renamed at the end).

tftpy supplies the protocol state machines (packets, options, block transfer); the receive loop
is ours so that one malformed datagram or one failing session cannot stop the server for
every other machine, traffic from a foreign address cannot join a session, and ``stop()``
returns at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import select
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tftpy
from tftpy.TftpContexts import TftpContextServer
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import (
    TftpPacketACK,
    TftpPacketDAT,
    TftpPacketERR,
    TftpPacketRRQ,
    TftpPacketWRQ,
)
from tftpy.TftpShared import TftpErrors, TftpException, TftpTimeout, TftpTimeoutExpectACK

__all__ = [
    "DEFAULT_BLKSIZE",
    "MAX_UPLOAD_BYTES",
    "RESULT_MANIFEST",
    "TASK_MANIFEST",
    "TftpError",
    "TftpService",
    "download",
    "is_valid_boot_dir_name",
    "parse_request_path",
    "upload",
]

log = logging.getLogger(__name__)

# tftpy logs every packet at INFO and many harmless events (duplicate ACKs) at WARNING.
logging.getLogger("tftpy").setLevel(logging.WARNING)

#: The file the agent leaves in a boot directory for the worker to download.
TASK_MANIFEST = "task.manifest"
#: The file the worker uploads into its boot directory.
RESULT_MANIFEST = "result.manifest"

#: Largest result the server accepts by default; the worker keeps results below 15 MiB.
MAX_UPLOAD_BYTES = 16 * 1024 * 1024

#: Block size the client asks for (RFC 2348's largest, fits one loopback/jumbo datagram).
DEFAULT_BLKSIZE = 65464

# A datagram never exceeds this (block size 65536 plus the 4-byte DAT header).
_MAX_DATAGRAM = 65536 + 4

_ERROR_NAMES = {
    TftpErrors.NotDefined: "error",
    TftpErrors.FileNotFound: "file not found",
    TftpErrors.AccessViolation: "access violation",
    TftpErrors.DiskFull: "disk full or allocation exceeded",
    TftpErrors.IllegalTftpOp: "illegal TFTP operation",
    TftpErrors.UnknownTID: "unknown transfer id",
    TftpErrors.FileAlreadyExists: "file already exists",
    TftpErrors.NoSuchUser: "no such user",
    TftpErrors.FailedNegotiation: "failed to negotiate options",
}

# Boot directory names: a conservative portable file name, so that no name can mean a path.
_BOOT_DIR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class TftpError(Exception):
    """A TFTP transfer failed; ``code`` is the TFTP error code the server sent, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AccessDenied(Exception):
    """A request names something outside what the server serves."""


def is_valid_boot_dir_name(name: str) -> bool:
    """Whether ``name`` may name a boot directory (one plain path component, no dot-dirs)."""
    return _BOOT_DIR_NAME.fullmatch(name) is not None and name not in (".", "..")


def parse_request_path(name: str, *, write: bool) -> str:
    """Check a requested TFTP file name and return its boot directory name.

    A valid name is exactly ``<boot-dir>/task.manifest`` for a read, or
    ``<boot-dir>/result.manifest`` for a write. Raises :class:`AccessDenied` otherwise.
    """
    if "\x00" in name:
        raise AccessDenied("file name contains NUL")
    if name.startswith(("/", "\\")):
        raise AccessDenied("absolute path")
    parts = name.split("/")
    if len(parts) != 2:
        raise AccessDenied("expected <boot-dir>/<file>")
    boot_dir, file_name = parts
    if not is_valid_boot_dir_name(boot_dir):
        raise AccessDenied(f"invalid boot directory name {boot_dir!r}")
    expected = RESULT_MANIFEST if write else TASK_MANIFEST
    if file_name != expected:
        verb = "uploaded" if write else "downloaded"
        raise AccessDenied(f"only {expected!r} may be {verb}, not {file_name!r}")
    return boot_dir


def _error_packet(code: int) -> bytes:
    packet = TftpPacketERR()
    packet.errorcode = code
    return bytes(packet.encode().buffer)


class _Refusal(TftpException):  # type: ignore[misc]
    """Raised inside a session to end it with a TFTP error sent to the client."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _open_boot_dir(root: Path, boot_dir: str) -> int:
    """Open ``root/boot_dir`` as a directory fd, refusing a symlink in its place."""
    try:
        return os.open(root / boot_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise _Refusal(
            f"boot directory {boot_dir!r} is not a directory: {error.strerror}",
            TftpErrors.AccessViolation,
        ) from error


class _AtomicUpload:
    """The file object tftpy writes an upload into.

    Data goes to a hidden temporary file in the boot directory; :meth:`commit` renames it to
    its final name, :meth:`close` without a commit discards it (tftpy closes the file object
    the same way whether the transfer completed or was aborted).
    """

    def __init__(self, dir_fd: int, final_name: str, max_bytes: int) -> None:
        self._dir_fd = dir_fd
        self._final_name = final_name
        self._max_bytes = max_bytes
        self.name = f".{final_name}.{secrets.token_hex(8)}.part"
        fd = os.open(
            self.name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        self._file = os.fdopen(fd, "wb")
        self.closed = False
        self.written = 0

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self._max_bytes:
            raise _Refusal(
                f"upload exceeds the limit of {self._max_bytes} bytes", TftpErrors.DiskFull
            )
        self._file.write(data)
        self.written += len(data)
        return len(data)

    def commit(self) -> None:
        """Make the upload visible under its final name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(
            self.name, self._final_name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd
        )
        self._release()

    def close(self) -> None:
        if self.closed:
            return
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self._dir_fd)
        self._release()

    def _release(self) -> None:
        self.closed = True
        os.close(self._dir_fd)


@dataclass
class _Session:
    context: Any  # tftpy.TftpContexts.TftpContextServer
    boot_dir: str
    write: bool
    peer: tuple[str, int]
    declared_size: int | None = None
    upload: _AtomicUpload | None = None
    # After a committed upload: the last block number, and until when to answer repeats of it.
    final_block: int | None = None
    dally_until: float | None = None


class TftpService:
    """The agent's TFTP server, confined to registered boot directories under ``root``.

    ``on_upload(boot_dir, path)`` is called on the server thread once a completed upload has
    been renamed into place, before the client is told the upload succeeded; it should
    return quickly (signal another thread, no builds). ``on_download(boot_dir)`` is called
    likewise when a download of a task manifest starts: the worker is up.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        on_upload: Callable[[str, Path], None] | None = None,
        on_download: Callable[[str], None] | None = None,
        session_timeout: float = 2.0,
        session_retries: int = 5,
    ) -> None:
        self.root = Path(root)
        self.host = host
        self._requested_port = port
        self.max_upload_bytes = max_upload_bytes
        self.on_upload = on_upload
        self.on_download = on_download
        self._session_timeout = session_timeout
        self._session_retries = session_retries
        self._allowed: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._wake_send: socket.socket | None = None
        self._wake_recv: socket.socket | None = None
        self._jail: str | None = None
        self._factory = TftpPacketFactory()
        self.port = 0

    # -- registration ---------------------------------------------------------------------

    def allow(self, boot_dir_name: str) -> None:
        """Serve ``<root>/<boot_dir_name>/``: task downloads and result uploads."""
        if not is_valid_boot_dir_name(boot_dir_name):
            raise ValueError(
                f"invalid boot directory name {boot_dir_name!r}: use letters, digits, '.', '_' "
                "and '-' (at most 128, not starting with '.' or '-')"
            )
        path = self.root / boot_dir_name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            raise ValueError(f"boot directory {path} does not exist: create it first") from None
        if not stat.S_ISDIR(mode):
            raise ValueError(f"boot directory {path} is not a directory (or is a symlink)")
        with self._lock:
            self._allowed.add(boot_dir_name)

    def forbid(self, boot_dir_name: str) -> None:
        """Stop serving ``<root>/<boot_dir_name>/`` (transfers already running finish)."""
        with self._lock:
            self._allowed.discard(boot_dir_name)

    def is_allowed(self, boot_dir_name: str) -> bool:
        with self._lock:
            return boot_dir_name in self._allowed

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Bind the UDP socket and serve on a daemon thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("TftpService already started")
        if not self.root.is_dir():
            raise ValueError(f"TFTP root {self.root} is not a directory: create it first")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as error:
            sock.close()
            raise OSError(
                error.errno,
                f"cannot bind TFTP server to {self.host}:{self._requested_port}: "
                f"{error.strerror}",
            ) from error
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._wake_recv, self._wake_send = socket.socketpair()
        # tftpy serves files that exist under its root directly; an empty private root makes
        # every read go through our confined opener instead.
        self._jail = tempfile.mkdtemp(prefix="bbot-tftp-")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"tftp-{self.host}:{self.port}", daemon=True
        )
        self._thread.start()
        log.info("TFTP server on %s:%d serving %s", self.host, self.port, self.root)

    def stop(self) -> None:
        """Stop serving, abort running transfers (partial uploads are discarded), join."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        assert self._wake_send is not None
        with contextlib.suppress(OSError):
            self._wake_send.send(b"x")
        thread.join()
        self._thread = None
        for sock in (self._sock, self._wake_send, self._wake_recv):
            if sock is not None:
                sock.close()
        self._sock = self._wake_send = self._wake_recv = None
        if self._jail is not None:
            shutil.rmtree(self._jail, ignore_errors=True)
            self._jail = None

    def __enter__(self) -> TftpService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the receive loop -----------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None and self._wake_recv is not None
        sessions: dict[tuple[str, int], _Session] = {}
        poll_interval = max(0.05, self._session_timeout / 2)
        try:
            while not self._stopping.is_set():
                by_socket = {s.context.sock: key for key, s in sessions.items()}
                readable = [self._sock, self._wake_recv, *by_socket]
                try:
                    ready, _, _ = select.select(readable, [], [], poll_interval)
                except InterruptedError:
                    continue
                for sock in ready:
                    if sock is self._wake_recv:
                        self._wake_recv.recv(64)
                    elif sock is self._sock:
                        self._accept(sessions)
                    else:
                        key = by_socket[sock]
                        if not self._advance(sessions[key]):
                            del sessions[key]
                self._check_timeouts(sessions)
        except Exception:  # a bug here must not pass silently; sessions are closed below
            log.exception("TFTP server loop failed")
        finally:
            for session in sessions.values():
                self._end(session)

    def _accept(self, sessions: dict[tuple[str, int], _Session]) -> None:
        assert self._sock is not None
        try:
            data, peer = self._sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            log.warning("TFTP receive failed: %s", error)
            return
        if peer in sessions:
            return  # a retransmitted request: the session answers from its own port
        try:
            packet = self._factory.parse(data)
        except Exception as error:
            log.warning("TFTP: malformed request from %s:%d refused: %s", *peer, error)
            self._send_error(peer, TftpErrors.IllegalTftpOp)
            return
        if not isinstance(packet, TftpPacketRRQ | TftpPacketWRQ):
            self._send_error(peer, TftpErrors.IllegalTftpOp)
            return
        write = isinstance(packet, TftpPacketWRQ)
        verb = "upload" if write else "download"
        try:
            boot_dir = parse_request_path(packet.filename, write=write)
            if not self.is_allowed(boot_dir):
                raise AccessDenied(f"boot directory {boot_dir!r} is not registered")
        except AccessDenied as error:
            log.warning(
                "TFTP %s of %r from %s:%d refused: %s", verb, packet.filename, *peer, error
            )
            self._send_error(peer, TftpErrors.AccessViolation)
            return
        session = _Session(context=None, boot_dir=boot_dir, write=write, peer=peer)
        if write:
            options = {str(k).lower(): v for k, v in packet.options.items()}
            if "tsize" in options:
                try:
                    session.declared_size = int(options["tsize"])
                except ValueError:
                    session.declared_size = -1
                if session.declared_size < 0:
                    log.warning("TFTP upload from %s:%d: invalid tsize refused", *peer)
                    self._send_error(peer, TftpErrors.FailedNegotiation)
                    return
                if session.declared_size > self.max_upload_bytes:
                    log.warning(
                        "TFTP upload of %r from %s:%d refused: %d bytes exceed the limit of %d",
                        packet.filename, *peer, session.declared_size, self.max_upload_bytes,
                    )
                    self._send_error(peer, TftpErrors.DiskFull)
                    return

        def open_download(_name: str, **_peer: object) -> io.BufferedReader | None:
            opened = self._open_task(boot_dir)
            if self.on_download is not None:
                try:
                    self.on_download(boot_dir)
                except Exception:
                    log.exception("TFTP on_download hook failed for %s", boot_dir)
            return opened

        def open_upload(_path: str, _context: object) -> _AtomicUpload:
            session.upload = self._open_result(boot_dir)
            return session.upload

        context = TftpContextServer(
            peer[0],
            peer[1],
            self._session_timeout,
            self._jail,
            dyn_file_func=open_download,
            upload_open=open_upload,
            retries=self._session_retries,
            flock=False,
        )
        session.context = context
        try:
            context.sock.bind((self.host, 0))
            context.start(data)
        except Exception as error:
            self._fail(session, error)
            return
        log.debug("TFTP %s of %r for %s:%d started", verb, packet.filename, *peer)
        sessions[peer] = session

    def _advance(self, session: _Session) -> bool:
        """Handle one datagram of a session; False when the session is over."""
        context = session.context
        try:
            data, source = context.sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return True
        except OSError as error:
            self._fail(session, error)
            return False
        if source != (context.address, context.tidport):
            # RFC 1350: answer a stranger with "unknown transfer id", leave the transfer alone.
            log.warning("TFTP: datagram from %s:%d for another session ignored", *source)
            with contextlib.suppress(OSError):
                context.sock.sendto(_error_packet(TftpErrors.UnknownTID), source)
            return True
        try:
            packet = self._factory.parse(data)
            if session.dally_until is not None:
                self._dally(session, packet)
                return True
            context.last_update = time.time()
            context.timeout_expectACK = False
            if (
                session.upload is not None
                and isinstance(packet, TftpPacketDAT)
                and packet.blocknumber == context.next_block
            ):
                if session.upload.written + len(packet.data) > self.max_upload_bytes:
                    # Refused before tftpy acknowledges the block.
                    raise _Refusal(
                        f"upload exceeds the limit of {self.max_upload_bytes} bytes",
                        TftpErrors.DiskFull,
                    )
                if len(packet.data) < context.getBlocksize():
                    self._finish_upload(session, packet)
                    return True
            context.state = context.state.handle(packet, source[0], source[1])
            context.retry_count = 0
        except TftpTimeoutExpectACK:
            context.timeout_expectACK = True
            return True
        except Exception as error:
            self._fail(session, error)
            return False
        if context.state is None:  # a download whose last block was acknowledged
            self._end(session)
            return False
        return True

    def _finish_upload(self, session: _Session, packet: Any) -> None:
        """Save the last block, commit the file, and only then acknowledge the block.

        tftpy would acknowledge first and write afterwards, so the client could believe an
        upload succeeded that was then lost; here the final ACK means the result is in place.
        """
        upload = session.upload
        assert upload is not None
        upload.write(packet.data)
        final_path = self.root / session.boot_dir / RESULT_MANIFEST
        if session.declared_size is not None and upload.written != session.declared_size:
            raise _Refusal(
                f"{upload.written} bytes arrived but tsize announced {session.declared_size}",
                TftpErrors.IllegalTftpOp,
            )
        try:
            upload.commit()
        except OSError as error:
            raise _Refusal(f"{final_path} could not be saved: {error}", TftpErrors.DiskFull) from None
        log.info("TFTP upload of %d bytes saved to %s", upload.written, final_path)
        # The hook runs before the final ACK: when the client learns of its success, the
        # agent already knows of the result.
        if self.on_upload is not None:
            try:
                self.on_upload(session.boot_dir, final_path)
            except Exception:
                log.exception("TFTP on_upload hook failed for %s", final_path)
        self._send_ack(session, packet.blocknumber)
        # Linger so that a lost final ACK is sent again when the client repeats its last block.
        session.final_block = packet.blocknumber
        session.dally_until = time.time() + self._session_timeout * 2

    def _dally(self, session: _Session, packet: Any) -> None:
        if isinstance(packet, TftpPacketDAT) and packet.blocknumber == session.final_block:
            self._send_ack(session, packet.blocknumber)

    def _send_ack(self, session: _Session, blocknumber: int) -> None:
        ack = TftpPacketACK()
        ack.blocknumber = blocknumber
        context = session.context
        with contextlib.suppress(OSError):
            context.sock.sendto(ack.encode().buffer, (context.address, context.tidport))

    def _check_timeouts(self, sessions: dict[tuple[str, int], _Session]) -> None:
        now = time.time()
        for key, session in list(sessions.items()):
            context = session.context
            if session.dally_until is not None:
                if now > session.dally_until:
                    self._end(session)
                    del sessions[key]
                continue
            try:
                context.checkTimeout(now)
                continue
            except TftpTimeout:
                pass
            context.retry_count += 1
            if context.retry_count >= context.retries:
                log.warning(
                    "TFTP %s for %s:%d timed out; transfer abandoned",
                    "upload" if session.write else "download", *session.peer,
                )
                self._end(session)
                del sessions[key]
                continue
            try:
                context.state.resendLast()
                context.last_update = now
                context.timeout_expectACK = False
            except Exception as error:
                self._fail(session, error)
                del sessions[key]

    # -- sessions -------------------------------------------------------------------------

    def _open_task(self, boot_dir: str) -> io.BufferedReader | None:
        if not self.is_allowed(boot_dir):
            raise _Refusal(f"boot directory {boot_dir!r} was forbidden", TftpErrors.AccessViolation)
        dir_fd = _open_boot_dir(self.root, boot_dir)
        try:
            fd = os.open(TASK_MANIFEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None  # tftpy answers "file not found"
        except OSError as error:
            raise _Refusal(
                f"{boot_dir}/{TASK_MANIFEST} cannot be opened: {error.strerror}",
                TftpErrors.AccessViolation,
            ) from error
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _Refusal(
                f"{boot_dir}/{TASK_MANIFEST} is not a regular file", TftpErrors.AccessViolation
            )
        return os.fdopen(fd, "rb")

    def _open_result(self, boot_dir: str) -> _AtomicUpload:
        dir_fd = _open_boot_dir(self.root, boot_dir)
        try:
            return _AtomicUpload(dir_fd, RESULT_MANIFEST, self.max_upload_bytes)
        except BaseException:
            os.close(dir_fd)
            raise

    def _fail(self, session: _Session, error: BaseException) -> None:
        """End a session after an error, telling the client when tftpy has not."""
        context = session.context
        if isinstance(error, _Refusal):
            code: int | None = error.code
        elif isinstance(error, TftpException):
            code = None  # tftpy sent its own error packet where it had one to send
        else:
            code = TftpErrors.IllegalTftpOp
        log.warning(
            "TFTP %s for %s:%d (%s) failed: %s",
            "upload" if session.write else "download", *session.peer, session.boot_dir, error,
        )
        if code is not None and context is not None:
            with contextlib.suppress(OSError):
                context.sock.sendto(_error_packet(code), session.peer)
        self._end(session)

    def _end(self, session: _Session) -> None:
        if session.context is None:
            return
        try:
            session.context.end()
        except Exception:
            log.exception("TFTP: closing a session failed")
        if session.upload is not None and not session.upload.closed:
            session.upload.close()

    def _send_error(self, peer: tuple[str, int], code: int) -> None:
        # RFC 1350: a request is answered from a fresh port, errors included.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((self.host, 0))
                sock.sendto(_error_packet(code), peer)
            except OSError as error:
                log.warning("TFTP: cannot send error to %s:%d: %s", *peer, error)


# -- client -------------------------------------------------------------------------------

#: Attempts of a whole transfer before giving up on timeouts.
CLIENT_ATTEMPTS = 3
# Each attempt resends its last packet this many times before it counts as timed out.
_CLIENT_PACKET_RETRIES = 3


def _transfer(
    verb: str,
    host: str,
    port: int,
    remote: str,
    timeout: float,
    run: Callable[[Any, Callable[[Any], None], float], None],
) -> Any:
    """Run a transfer with retries on timeouts; returns the tftpy client of the last attempt."""
    where = f"TFTP {verb} of {remote!r} from {host}:{port}"
    if verb == "upload":
        where = f"TFTP upload of {remote!r} to {host}:{port}"
    packet_timeout = max(0.1, timeout / _CLIENT_PACKET_RETRIES)
    last_error: BaseException | None = None
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        server_errors: list[int] = []

        def note_errors(packet: Any, errors: list[int] = server_errors) -> None:
            if isinstance(packet, TftpPacketERR):
                errors.append(int(packet.errorcode))

        client = tftpy.TftpClient(host, port, options={}, flock=False)
        try:
            run(client, note_errors, packet_timeout)
            return client
        except TftpTimeout as error:
            last_error = error
            log.info("%s: attempt %d of %d timed out", where, attempt, CLIENT_ATTEMPTS)
            continue
        except (TftpException, OSError) as error:
            if server_errors:
                code = server_errors[-1]
                name = _ERROR_NAMES.get(code, f"error {code}")
                raise TftpError(
                    f"{where} failed: the server says {name} (code {code})", code
                ) from error
            raise TftpError(f"{where} failed: {error}") from error
    raise TftpError(
        f"{where} failed: no answer after {CLIENT_ATTEMPTS} attempts "
        f"(each giving up after {timeout:g}s of silence)"
    ) from last_error


def download(
    host: str, port: int, remote: str, timeout: float = 10.0, blksize: int = DEFAULT_BLKSIZE
) -> bytes:
    """Download ``remote`` and return its bytes; raises :class:`TftpError`.

    ``timeout`` is how long an attempt may go without an answer; a transfer that times out is
    tried again, :data:`CLIENT_ATTEMPTS` times in all.
    """
    received = io.BytesIO()

    def run(client: Any, hook: Callable[[Any], None], packet_timeout: float) -> None:
        received.seek(0)
        received.truncate()
        client.options = {"blksize": blksize, "tsize": 0}
        client.download(
            remote, received, packethook=hook, timeout=packet_timeout,
            retries=_CLIENT_PACKET_RETRIES,
        )

    client = _transfer("download", host, port, remote, timeout, run)
    data = received.getvalue()
    announced = (client.context.options or {}).get("tsize")
    if announced is not None and str(announced).isdigit() and int(announced) != len(data):
        raise TftpError(
            f"TFTP download of {remote!r} from {host}:{port} is incomplete: "
            f"{len(data)} of {announced} bytes"
        )
    return data


def upload(
    host: str,
    port: int,
    remote: str,
    data: bytes,
    timeout: float = 10.0,
    blksize: int = DEFAULT_BLKSIZE,
) -> None:
    """Upload ``data`` as ``remote``; raises :class:`TftpError` (timeouts as for download)."""

    def run(client: Any, hook: Callable[[Any], None], packet_timeout: float) -> None:
        client.options = {"blksize": blksize, "tsize": len(data)}
        client.upload(
            remote, io.BytesIO(data), packethook=hook, timeout=packet_timeout,
            retries=_CLIENT_PACKET_RETRIES,
        )

    _transfer("upload", host, port, remote, timeout, run)
