"""Debian's Dovecot as the IMAP server of the mailbox tests: its own configuration, passwd-file users and
Maildirs, on free ports, IMAP and LMTP. Mail gets in the way it really does: delivered over LMTP, or written
into a Maildir; never through our own code.

Dovecot refuses mail access as root, and these tests run as root: the mail processes run as `nobody` and the
auth process as `dovecot`, so the users file and the Maildirs live in a directory of their own that they may
enter (pytest's `tmp_path` sits under a directory only root may enter); configuration, sockets and logs stay
in `tmp_path`."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.smtp import free_port
from tests.support.tls import TlsFiles

MAIL_USER = "nobody"
CONFIG = """
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login{mechanisms}
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
{capability}
{oauth2_passdb}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {outside}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {outside}/users
  default_fields = home={homes}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
"""
# A wrong password is answered at once (Dovecot waits 2 s by default, more and more for an address that keeps
# failing): the tests of failing logins need not wait, and do not slow the other tests on the same server.
QUICK_FAILED_LOGINS = """
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
# Bearer tokens (SASL XOAUTH2 and OAUTHBEARER) checked against an OAuth2 server's introspection endpoint
# (RFC 7662), the address being the token's `email`; the users file still gives the mail home.
OAUTH2_PASSDB = """
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {outside}/oauth2.conf.ext
}}
"""
OAUTH2 = """
introspection_mode = post
introspection_url = {introspection}
force_introspection = yes
username_attribute = email
active_attribute = active
active_value = true
"""
# TLS on the IMAP port (STARTTLS) and implicit TLS on a port of its own.
TLS = """
ssl = yes
ssl_cert = <{certificate}
ssl_key = <{key}
service imap-login {{
  inet_listener imaps {{
    port = {tls_port}
  }}
}}
"""


def _path(program: str) -> str:
    found = shutil.which(program)
    assert found is not None, f"{program} is not installed (make test installs it)"
    return found


def installed() -> bool:
    return shutil.which("dovecot") is not None and shutil.which("doveadm") is not None


@dataclass
class Dovecot:
    base: Path
    homes: Path
    port: int
    lmtp_port: int
    tls_port: int = 0  # implicit TLS; 0 without a certificate

    @property
    def config(self) -> Path:
        return self.base / "dovecot.conf"

    def add_user(self, user: str, password: str) -> None:
        with (self.homes.parent / "users").open("a") as users:
            users.write(f"{user}:{{PLAIN}}{password}::::::\n")

    def deliver(self, user: str, raw: bytes, sender: str = "someone@lead.example") -> None:
        """Over LMTP, as a mail server hands mail to the mailbox."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as lmtp:
            lmtp.sendmail(sender, [user], raw)

    def write(self, user: str, raw: bytes, folder: str | None = None) -> None:
        """Straight into the Maildir's `new` (a folder is `.Name`), as a local delivery agent does."""
        self.write_all(user, [raw], folder)

    def write_all(self, user: str, raws: Iterable[bytes], folder: str | None = None) -> None:
        """Each of `raws` into the Maildir, in order (a backlog: handed to the mail user once, at the end)."""
        maildir = self.homes / user / "Maildir"
        target = maildir / f".{folder}" if folder else maildir
        for sub in ("tmp", "new", "cur"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        for raw in raws:
            name = f"{time.time():.6f}.{uuid.uuid4().hex}.test"
            (target / "tmp" / name).write_bytes(raw)
            (target / "tmp" / name).rename(target / "new" / name)
        user_ids = pwd.getpwnam(MAIL_USER)
        for path in [self.homes / user, *(self.homes / user).rglob("*")]:
            os.chown(path, user_ids.pw_uid, user_ids.pw_gid)

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(  # noqa: S603
            [_path("doveadm"), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, str]:
        """Each mail's flags by UID."""
        out = self.doveadm("-f", "flow", "fetch", "-u", user, "uid flags", "mailbox", folder)
        found = {}
        for line in out.splitlines():
            uid, _, flags = line.partition(" flags=")
            found[int(uid.removeprefix("uid="))] = flags
        return found

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        return sorted(self.flags(user, folder))

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def kick(self, user: str) -> None:
        """Drop the user's IMAP connections, as a server restart or a NAT would."""
        self.doveadm("kick", user)


def _wait_for(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"dovecot did not listen on {port}")


@contextlib.contextmanager
def running_dovecot(
    base: Path,
    idle: bool = True,
    tls: TlsFiles | None = None,
    extra_config: str = "",
    oauth2_introspection: str | None = None,
) -> Iterator[Dovecot]:
    """A Dovecot of its own; `idle=False` takes IDLE out of what it offers (a server where we must poll);
    with `tls` it offers STARTTLS on `port` and implicit TLS on `tls_port`, with that certificate;
    `extra_config` is added to its configuration (e.g. higher process limits for many sessions); with
    `oauth2_introspection` (a URL) it also takes XOAUTH2 and OAUTHBEARER, checking tokens there."""
    outside = Path(tempfile.mkdtemp(prefix="maildash-dovecot-"))
    outside.chmod(0o755)  # its auth process (user dovecot) reads the users, its mail processes the Maildirs
    homes = outside / "homes"
    homes.mkdir()
    user_ids = pwd.getpwnam(MAIL_USER)
    os.chown(homes, user_ids.pw_uid, user_ids.pw_gid)
    dovecot = Dovecot(base, homes, free_port(), free_port())
    for sub in ("run", "state"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (outside / "users").touch()
    if oauth2_introspection is not None:
        (outside / "oauth2.conf.ext").write_text(OAUTH2.format(introspection=oauth2_introspection))
    if tls is not None:
        dovecot.tls_port = free_port()
    capability = "" if idle else "imap_capability = IMAP4rev1 LITERAL+ SASL-IR ID ENABLE UIDPLUS MOVE"
    dovecot.config.write_text(
        CONFIG.format(
            base=base,
            outside=outside,
            homes=homes,
            uid=MAIL_USER,
            gid=user_ids.pw_gid,
            imap_port=dovecot.port,
            lmtp_port=dovecot.lmtp_port,
            capability=capability,
            mechanisms=" xoauth2 oauthbearer" if oauth2_introspection else "",
            oauth2_passdb=OAUTH2_PASSDB.format(outside=outside) if oauth2_introspection else "",
        )
        + QUICK_FAILED_LOGINS
        + (
            ""
            if tls is None
            else TLS.format(certificate=tls.certificate, key=tls.key, tls_port=dovecot.tls_port)
        )
        + extra_config
    )
    process = subprocess.Popen(  # noqa: S603
        [_path("dovecot"), "-F", "-c", str(dovecot.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(dovecot.port)
        _wait_for(dovecot.lmtp_port)
        if dovecot.tls_port:
            _wait_for(dovecot.tls_port)
        yield dovecot
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(outside, ignore_errors=True)
