"""Which shell output and which workspace files come from the network (untrusted content).

A page fetched with ``curl`` can carry a prompt injection just like one opened in the browser,
so the shell tool marks its output untrusted when the command reaches the network
(:func:`network_reason`: curl, wget, git clone/fetch/pull, pip/npm download or install, nc, ssh,
scp, rsync to a host, ...), and remembers the files such a command wrote in the workspace
(:class:`DownloadedFiles`); reading one of them later (``cat page.html``, ``file_view``) marks the
run untrusted too. The policy then asks before shell, file-writing and JavaScript calls.

Like :mod:`.shell_policy` this reads the command line, not what it does: a tripwire for the
common ways of fetching content, not a proof. Files are recognised by their inode, size and
modification time before and after a network command, so a file the command touched counts as
downloaded even if it came from elsewhere (erring on the side of untrusted).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .shell_policy import _cut_substitutions, _program, _split_commands

__all__ = ["DownloadedFiles", "downloaded_files", "mentions_downloaded_file", "network_reason"]

_ALWAYS_NETWORK = {
    "curl", "wget", "aria2c", "http", "https", "lwp-request", "fetch", "nc", "ncat", "netcat", "socat",
    "telnet", "ssh", "scp", "sftp", "ftp", "lftp", "ping", "dig", "nslookup", "host", "whois", "w3m",
    "lynx", "links", "elinks", "svn", "hg", "gh", "youtube-dl", "yt-dlp",
}  # fmt: skip
_SUBCOMMANDS = {
    "git": {"clone", "fetch", "pull", "ls-remote", "submodule", "remote"},
    "pip": {"install", "download", "wheel", "index"},
    "pip3": {"install", "download", "wheel", "index"},
    "uv": {"pip", "add", "sync", "run", "tool"},
    "npm": {"install", "i", "ci", "add", "view", "info", "pack", "exec"},
    "npx": None,
    "yarn": {"add", "install", "dlx"},
    "pnpm": {"add", "install", "i", "dlx"},
    "apt": {"install", "download", "update", "source"},
    "apt-get": {"install", "download", "update", "source"},
    "docker": {"pull", "run", "build"},
    "cargo": {"install", "fetch", "add"},
    "go": {"get", "install", "mod"},
    "gem": {"install", "fetch"},
    "conda": {"install", "create"},
}
"""Programs that reach the network only with these subcommands (None: always)."""
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
_PY_NETWORK = ("urllib", "requests", "httpx", "http.client", "socket", "aiohttp", "urlopen")
_MAX_SCAN = 20_000
"""Most workspace files compared around a network command (a huge tree is not walked whole)."""


def network_reason(command: str, *, _depth: int = 0) -> str | None:
    """Why ``command`` (a bash command line) reaches the network, or None."""
    if _depth > 4:
        return None
    text, substitutions = _cut_substitutions(command)
    for inner in substitutions:
        reason = network_reason(inner, _depth=_depth + 1)
        if reason:
            return reason
    for simple in _split_commands(text):
        name, args = _program(simple.words)
        reason = _program_reason(name, args, _depth)
        if reason:
            return reason
    return None


def _program_reason(name: str, args: list[str], depth: int) -> str | None:
    if name in _ALWAYS_NETWORK:
        return f"{name} reaches the network"
    if name in _SUBCOMMANDS:
        subs = _SUBCOMMANDS[name]
        first = next((a for a in args if not a.startswith("-")), "")
        if subs is None or first in subs:
            return f"{name} {first}".strip() + " reaches the network"
    if name in ("python", "python3") and args[:2] == ["-m", "pip"]:
        return _program_reason("pip", args[2:], depth)
    if name in ("python", "python3", "node", "perl", "ruby") and ("-c" in args or "-e" in args):
        code = " ".join(args)
        if any(word in code for word in _PY_NETWORK):
            return f"{name} code that opens network connections"
    if name == "rsync" and any(":" in a and not a.startswith("-") for a in args):
        return "rsync to or from a remote host"
    if name in _SHELLS and "-c" in args:
        at = args.index("-c")
        if at + 1 < len(args):
            return network_reason(args[at + 1], _depth=depth + 1)
    return None


class DownloadedFiles:
    """Files in one workspace that a network command wrote (absolute, resolved paths)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace).resolve()
        self.paths: set[Path] = set()

    def snapshot(self) -> dict[Path, tuple[int, int, int]]:
        """(inode, size, mtime_ns) of every workspace file, taken before a network command."""
        files: dict[Path, tuple[int, int, int]] = {}
        for root, _dirs, names in os.walk(self.workspace):
            for name in names:
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                files[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
                if len(files) >= _MAX_SCAN:
                    return files
        return files

    def note_changed(self, before: dict[Path, tuple[int, int, int]]) -> list[Path]:
        """Record every workspace file that is new or changed since ``before`` (:meth:`snapshot`)."""
        after = self.snapshot()
        found = [path.resolve() for path, sig in after.items() if before.get(path) != sig]
        self.paths.update(found)
        return found

    def __contains__(self, path: object) -> bool:
        try:
            return Path(str(path)).resolve() in self.paths
        except (OSError, ValueError):
            return False


_REGISTRY: dict[Path, DownloadedFiles] = {}


def downloaded_files(workspace: str | os.PathLike[str]) -> DownloadedFiles:
    """The one record of downloaded files for ``workspace`` in this process (shared by the
    shell tool, which writes it, and the file tools, which read it)."""
    key = Path(workspace).resolve()
    if key not in _REGISTRY:
        _REGISTRY[key] = DownloadedFiles(key)
    return _REGISTRY[key]


def mentions_downloaded_file(command: str, cwd: Path, record: DownloadedFiles) -> Path | None:
    """A downloaded file that ``command`` names (so its output may show that file's content)."""
    if not record.paths:
        return None
    try:
        words = shlex.split(command, comments=False)
    except ValueError:
        words = command.split()
    for word in words:
        for token in word.replace("=", " ").split():
            candidate = Path(token).expanduser()
            path = candidate if candidate.is_absolute() else cwd / candidate
            if path in record:
                return path
    return None
