"""Dangerous-command detection for the shell tool: ``assess_command(cmd, workspace)``.

Returns a short reason when a command could destroy data or the machine (recursive deletes
outside the workspace, disk formatting, fork bombs, downloads piped into a shell, writes into
system paths, shutdown, ``kill -9 -1``...), else None. The shell tool wires it as its ``assess``
hook, so the agent's policy asks the user before such a command runs.

This is a tripwire for honest mistakes, not a security boundary: a determined model can always
obfuscate (``eval $(echo cm0gLXJmIC8K | base64 -d)``). The sandbox is the boundary. The checker
errs towards asking: a recursive delete whose target it cannot resolve (``rm -rf "$DIR"``) is
marked too, because an empty variable turned ``rm -rf $DIR/*`` into ``rm -rf /*`` more than once.

Tokenising uses :mod:`shlex` with punctuation splitting rather than a full bash parser (bashlex
rejects much valid bash and is not installed here); command and process substitutions are cut
out first and checked on their own, and ``bash -c``, ``sh -c``, ``eval``, ``sudo``, ``env``,
``xargs``... are unwrapped so the command they run is checked.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

__all__ = ["assess_command", "SYSTEM_DIRS"]

SYSTEM_DIRS = (
    "/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/var", "/sys", "/proc", "/dev", "/root", "/srv", "/snap", "/efi",
)  # fmt: skip
"""Writing, deleting or chmod-ing under these needs confirmation (unless inside the workspace)."""

_HARMLESS_PATHS = ("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero", "/dev/random",
                   "/dev/urandom", "/dev/full", "/dev/fd/", "/dev/shm/", "/var/tmp/", "/proc/self/fd/")  # fmt: skip

_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "ash", "busybox", "csh", "tcsh"}
_INTERPRETERS = _SHELLS | {"python", "python2", "python3", "perl", "ruby", "node", "php", "lua", "pwsh"}
_DOWNLOADERS = {"curl", "wget", "fetch", "aria2c", "http", "https", "lwp-request"}
# Prefix commands that run the rest of the line as a command (their own options are skipped).
_WRAPPERS = {"sudo", "doas", "nohup", "nice", "ionice", "time", "command", "builtin", "exec",
             "stdbuf", "chroot", "setsid", "unbuffer", "torsocks", "strace", "taskset", "chrt"}  # fmt: skip
_WRAPPER_OPTS_WITH_VALUE = {"-u", "-g", "-n", "-c", "-p", "-o", "-e", "-i", "-C", "-U", "-h", "-r", "-t", "-s"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case",
             "esac", "select", "function", "!", "{", "}", "[[", "]]", "coproc"}  # fmt: skip
_DISK_TOOLS = {"mkfs", "mke2fs", "mkswap", "wipefs", "fdisk", "sfdisk", "cfdisk", "gdisk", "sgdisk",
               "parted", "blkdiscard", "mkntfs", "mkdosfs", "badblocks", "zpool", "lvremove", "vgremove",
               "pvremove", "cryptsetup"}  # fmt: skip
_POWER = {"shutdown", "reboot", "halt", "poweroff", "kexec"}
_QUOTED_RE = re.compile(r"'[^']*'|\"(?:\\.|[^\"\\])*\"")
_PLACEHOLDER = "__OA_SUBST_{}__"
_PLACEHOLDER_RE = re.compile(r"__OA_SUBST_(\d+)__")
# name(){ name|name& };name  and  function name { name & name; }
_SHELL_FORK_BOMB_RE = re.compile(r"(?:function\s+)?([\w:.\-]+)\s*(?:\(\s*\))?\s*\{[^}]*?(?<![\w:.\-])\1\s*[|&][^}]*\}")
_SCRIPT_FORK_BOMB_RES = (  # inside perl -e '...' / python -c '...': matched on the raw text
    re.compile(r"\bfork\s+while\s+fork\b"),
    re.compile(r"while\s*(?:True|1)\s*:\s*os\.fork\(\)"),
    re.compile(r"\bwhile\s+(?:true|:)\s*;\s*do\s+\$0\s*&"),
)


@dataclass
class _Command:
    """One simple command: its words (redirections removed) and where it writes."""

    words: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    piped_from: "_Command | None" = None


@dataclass
class _Scope:
    workspace: str
    home: str
    cwd: str | None  # None once a `cd` went somewhere we cannot resolve
    substitutions: list[str]


def assess_command(cmd: str, workspace: str | os.PathLike[str]) -> str | None:
    """Return why ``cmd`` (a bash command line run from ``workspace``) needs confirmation, or None."""
    ws = os.path.realpath(os.fspath(workspace))
    home = os.path.realpath(os.path.expanduser("~"))
    return _assess(cmd, ws, home, depth=0)


def _assess(cmd: str, workspace: str, home: str, *, depth: int, cwd: str | None = None) -> str | None:
    if depth > 6:
        return "command nests shells too deeply to check"
    unquoted = _QUOTED_RE.sub("''", cmd)  # quoted text is data; `bash -c '...'` is checked when unwrapped
    if _SHELL_FORK_BOMB_RE.search(unquoted) or any(p.search(cmd) for p in _SCRIPT_FORK_BOMB_RES):
        return "looks like a fork bomb (a process that copies itself without end)"
    text, substitutions = _cut_substitutions(cmd)
    for inner in substitutions:
        reason = _assess(inner, workspace, home, depth=depth + 1, cwd=cwd)
        if reason:
            return reason
    scope = _Scope(workspace=workspace, home=home, cwd=cwd or workspace, substitutions=substitutions)
    for command in _split_commands(text):
        reason = _assess_simple(command, scope, depth)
        if reason:
            return reason
    return None


# -- tokenising ----------------------------------------------------------------------------------


def _cut_substitutions(cmd: str) -> tuple[str, list[str]]:
    """Replace ``$(...)``, ``<(...)``, ``>(...)`` and backticks by placeholders; return the inner
    commands. Single-quoted text is left alone (bash does not expand it)."""
    out: list[str] = []
    found: list[str] = []
    i, n = 0, len(cmd)
    in_single = False
    while i < n:
        ch = cmd[i]
        if ch == "'" and not in_single:
            in_single = True
        elif ch == "'" and in_single:
            in_single = False
        elif not in_single and ch in "$<>" and i + 1 < n and cmd[i + 1] == "(" and not cmd.startswith("$((", i):
            end = _matching_paren(cmd, i + 1)
            found.append(cmd[i + 2 : end])
            out.append(_PLACEHOLDER.format(len(found) - 1))
            i = end + 1
            continue
        elif not in_single and ch == "`":
            end = cmd.find("`", i + 1)
            end = n if end < 0 else end
            found.append(cmd[i + 1 : end])
            out.append(_PLACEHOLDER.format(len(found) - 1))
            i = end + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out), found


def _matching_paren(text: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def _tokens(text: str) -> list[str]:
    for suffix in ("", '"', "'"):
        lexer = shlex.shlex(text + suffix, posix=True, punctuation_chars=";&|()<>\n")
        lexer.whitespace = " \t\r"
        lexer.whitespace_split = True
        lexer.commenters = ""
        try:
            return list(lexer)
        except ValueError:  # unbalanced quotes: bash will refuse it too, but check what we can
            continue
    return text.split()


def _is_operator(token: str) -> bool:
    return bool(token) and all(c in ";&|()<>\n" for c in token)


def _split_commands(text: str) -> list[_Command]:
    """Split a command line into simple commands, noting pipes and redirect targets."""
    commands: list[_Command] = []
    current = _Command()
    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if _is_operator(tok):
            if ">" in tok and not tok.endswith("&"):
                if i + 1 < len(tokens) and not _is_operator(tokens[i + 1]):
                    current.writes.append(tokens[i + 1])
                    i += 2
                    continue
            elif ">" in tok or "<" in tok:  # >&2, 2>&1, <file, <<EOF: skip the operand
                i += 2 if i + 1 < len(tokens) and not _is_operator(tokens[i + 1]) else 1
                continue
            piped = current if ("|" in tok and "||" not in tok) else None
            if current.words or current.writes:
                commands.append(current)
            current = _Command(piped_from=piped)
            i += 1
            continue
        if tok.startswith("#") and not current.words:  # a comment runs to the end of the line
            while i < len(tokens) and tokens[i] != "\n":
                i += 1
            continue
        current.words.append(tok)
        i += 1
    if current.words or current.writes:
        commands.append(current)
    return commands


# -- paths ---------------------------------------------------------------------------------------


def _resolve(word: str, scope: _Scope) -> str | None:
    """Absolute path a word names (the folder a glob expands in), or None when unknowable."""
    if word.startswith("~"):
        head, _, rest = word.partition("/")
        if head != "~":
            return None  # ~user
        word = scope.home + ("/" + rest if rest else "")
    word = re.sub(r"^\$\{?HOME\}?(?=/|$)", lambda _: scope.home, word)
    if "$" in word or _PLACEHOLDER_RE.search(word):
        return None
    glob_at = min((word.find(c) for c in "*?[" if c in word), default=-1)
    if glob_at >= 0:
        word = word[:glob_at].rsplit("/", 1)[0] + "/" if "/" in word[:glob_at] else "."
        globbed = True
    else:
        globbed = False
    if not os.path.isabs(word):
        if scope.cwd is None:
            return None
        word = os.path.join(scope.cwd, word)
    path = os.path.normpath(word)
    parent, name = os.path.split(path)
    resolved = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(path)
    return resolved + ("/*" if globbed else "")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _strictly_inside_workspace(path: str, scope: _Scope) -> bool:
    if path.endswith("/*"):  # the contents of a folder: fine when the folder is the workspace
        return _inside(path[:-2] or "/", scope.workspace)
    return _inside(path, scope.workspace) and path != scope.workspace


def _system_path(path: str, scope: _Scope) -> bool:
    bare = path[:-2] if path.endswith("/*") else path
    bare = bare or "/"
    if _inside(bare, scope.workspace):
        return False
    if any(bare == h.rstrip("/") or bare.startswith(h) for h in _HARMLESS_PATHS):
        return False
    return bare == "/" or any(_inside(bare, d) for d in SYSTEM_DIRS)


def _describe(word: str, path: str | None) -> str:
    same = path is None or path == word or (path.rstrip("/") == word.rstrip("/") and path != "/*")
    return word if same else f"{word} (= {path})"


# -- rules ---------------------------------------------------------------------------------------


def _program(words: list[str]) -> tuple[str, list[str]]:
    """Strip keywords, ``VAR=value`` assignments and wrappers; return (program name, its args)."""
    i = 0
    while i < len(words):
        w = words[i]
        if w in _KEYWORDS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            i += 1
            continue
        name = os.path.basename(w)
        if name in _WRAPPERS or name == "env" or name == "timeout":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                opt = words[i]
                i += 1
                if opt in _WRAPPER_OPTS_WITH_VALUE and name != "env" and i < len(words):
                    i += 1
            if name == "timeout" and i < len(words):
                i += 1  # the duration
            continue
        return name, words[i + 1 :]
    return "", []


def _flags(args: list[str]) -> tuple[set[str], list[str]]:
    """Split ``args`` into single-letter/long flags and operands (``--`` ends the options)."""
    flags: set[str] = set()
    operands: list[str] = []
    options_done = False
    for a in args:
        if options_done or not a.startswith("-") or a == "-":
            operands.append(a)
        elif a == "--":
            options_done = True
        elif a.startswith("--"):
            flags.add(a)
        else:
            flags.update("-" + c for c in a[1:])
    return flags, operands


def _assess_simple(command: _Command, scope: _Scope, depth: int) -> str | None:
    for target in command.writes:
        if re.match(r"^/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|mapper/|md|loop|mem|kmem|port)", target):
            return f"writes directly to a device: {target}"
        path = _resolve(target, scope)
        if path is not None and _system_path(path, scope):
            return f"redirects output into a system path: {_describe(target, path)}"
    name, args = _program(command.words)
    if not name:
        return None
    checks = (_check_nested, _check_download_into_shell, _check_disk, _check_delete, _check_writes,
              _check_permissions, _check_power, _check_kill)  # fmt: skip
    for check in checks:
        reason = check(name, args, command, scope, depth)
        if reason:
            return reason
    if name == "cd":
        _follow_cd(args, scope)
    return None


def _check_nested(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    """``bash -c '...'``, ``eval ...``, ``xargs CMD``, ``find -exec CMD``: check the inner command."""
    inner: str | None = None
    if name in _SHELLS:
        # -c, -ec, -xc...: the word after the option cluster is the command string
        at = next((i for i, a in enumerate(args) if re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", a)), None)
        inner = args[at + 1] if at is not None and at + 1 < len(args) else None
    elif name in {"eval", "su"}:
        inner = " ".join(args[args.index("-c") + 1 :] if name == "su" and "-c" in args else args)
    elif name in {"xargs", "parallel"}:
        rest = [a for a in args if not a.startswith("-")]
        inner = shlex.join(rest) if rest else None
    elif name == "find":
        reason = _check_find(args, scope)
        if reason:
            return reason
    if inner:
        return _assess(_restore(inner, scope), scope.workspace, scope.home, depth=depth + 1, cwd=scope.cwd)
    return None


def _restore(text: str, scope: _Scope) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: f"$({scope.substitutions[int(m.group(1))]})", text)


def _check_find(args: list[str], scope: _Scope) -> str | None:
    roots = []
    for a in args:
        if a.startswith("-") or a in {"(", ")", "!"}:
            break
        roots.append(a)
    roots = roots or ["."]
    deletes = "-delete" in args or any(
        a in {"-exec", "-execdir", "-ok"} and i + 1 < len(args) and os.path.basename(args[i + 1]) in {"rm", "shred"}
        for i, a in enumerate(args)
    )
    if not deletes:
        return None
    for root in roots:
        path = _resolve(root, scope)
        if path is None or not _inside(path.rstrip("/*") or "/", scope.workspace):
            return f"find deletes files outside the workspace: {_describe(root, path)}"
    return None


def _check_download_into_shell(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    if name in _INTERPRETERS or name in {"eval", "source", "."}:
        upstream = command.piped_from
        while upstream is not None:
            if _program(upstream.words)[0] in _DOWNLOADERS:
                return f"pipes a download into {name} (runs code fetched from the network unseen)"
            upstream = upstream.piped_from
        for a in args:
            for m in _PLACEHOLDER_RE.finditer(a):
                inner = scope.substitutions[int(m.group(1))]
                if any(_program(c.words)[0] in _DOWNLOADERS for c in _split_commands(inner)):
                    return f"runs a download with {name} (runs code fetched from the network unseen)"
    return None


def _check_delete(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    if name not in {"rm", "shred", "unlink", "rmdir", "srm"}:
        return None
    flags, operands = _flags(args)
    recursive = bool(flags & {"-r", "-R", "--recursive"}) or name == "srm"
    if "--no-preserve-root" in flags:
        return "rm --no-preserve-root can delete the whole file system"
    for op in operands:
        path = _resolve(op, scope)
        if path is None:
            if recursive:
                return f"recursive delete of a target that cannot be checked before it runs: {op}"
            continue
        if path.rstrip("/*") in ("", scope.home) or path in ("/*",) or op.rstrip("/") in ("~", "$HOME"):
            what = "the root file system" if path.rstrip("/*") == "" else "the home folder"
            return f"deletes {what}: {_describe(op, path)}"
        if _system_path(path, scope):
            return f"deletes a system path: {_describe(op, path)}"
        if recursive and not _strictly_inside_workspace(path, scope):
            where = "of the whole workspace" if path.rstrip("/*") == scope.workspace else "outside the workspace"
            return f"recursive delete {where}: {_describe(op, path)}"
    return None


def _check_disk(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    base = name.split(".")[0]
    if base in _DISK_TOOLS:
        return f"{name} formats or repartitions disks"
    if name == "dd":
        for a in args:
            if a.startswith("of="):
                target = a[3:]
                path = _resolve(target, scope)
                if target.startswith("/dev/") and not _is_harmless(target):
                    return f"dd writes raw data to a device: {target}"
                if path is not None and _system_path(path, scope):
                    return f"dd overwrites a system path: {_describe(target, path)}"
    if name in {"shred", "wipe"} and any(a.startswith("/dev/") and not _is_harmless(a) for a in args):
        return f"{name} wipes a device"
    return None


def _is_harmless(path: str) -> bool:
    return any(path == h.rstrip("/") or path.startswith(h) for h in _HARMLESS_PATHS)


def _check_writes(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    """Commands that write to their operands (all of them, or only the last one: the target)."""
    flags, operands = _flags(args)
    if name in {"cp", "mv", "install", "ln", "rsync", "scp"}:
        target_opt = next((a.split("=", 1)[1] for a in args if a.startswith("--target-directory=")), None)
        if "-t" in flags:
            at = next((i for i, a in enumerate(args) if a == "-t"), None)
            target_opt = args[at + 1] if at is not None and at + 1 < len(args) else target_opt
        targets = [target_opt] if target_opt else operands[-1:] if len(operands) >= 2 else []
        if name == "mv":  # moving a system file away breaks the system just as well
            targets += operands[:-1]
    elif name in {"tee", "truncate", "touch", "mkdir", "chattr", "setfacl", "patch"}:
        targets = operands
    elif name in {"sed", "perl"} and any(f.startswith("-i") or f == "--in-place" for f in args if f.startswith("-")):
        targets = operands[1:] if not any(a in {"-e", "-f", "--expression"} for a in args) else operands
    else:
        return None
    for t in targets:
        path = _resolve(t, scope)
        if path is not None and _system_path(path, scope):
            return f"{name} writes into a system path: {_describe(t, path)}"
    return None


def _check_permissions(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    if name not in {"chmod", "chown", "chgrp"}:
        return None
    flags, operands = _flags(args)
    recursive = bool(flags & {"-R", "--recursive"})
    for op in operands[1:]:
        path = _resolve(op, scope)
        if path is None:
            if recursive:
                return f"recursive {name} of a target that cannot be checked: {op}"
            continue
        if _system_path(path, scope):
            return f"{name} changes permissions of a system path: {_describe(op, path)}"
        if recursive and not _inside(path.rstrip("/*") or "/", scope.workspace):
            return f"recursive {name} outside the workspace: {_describe(op, path)}"
    return None


def _check_power(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    if name in _POWER:
        return f"{name} stops or restarts the machine"
    if name in {"init", "telinit"} and args[:1] and args[0] in {"0", "6"}:
        return f"{name} {args[0]} stops or restarts the machine"
    if name == "systemctl" and any(a in {"poweroff", "reboot", "halt", "kexec", "suspend", "hibernate"} for a in args):
        return "systemctl stops or restarts the machine"
    return None


def _check_kill(name: str, args: list[str], command: _Command, scope: _Scope, depth: int) -> str | None:
    if name in {"killall5"}:
        return "killall5 signals every process on the machine"
    if name != "kill":
        return None
    targets: list[str] = []
    i = 0
    options_done = False
    while i < len(args):
        a = args[i]
        if options_done:
            targets.append(a)
        elif a == "--":
            options_done = True
        elif a in {"-s", "-n"}:
            i += 1
        elif a.startswith("-") and i == 0 and len(args) > 1:
            pass  # the signal (-9, -KILL)
        else:
            targets.append(a)
        i += 1
    if "-1" in targets:
        return "kill -1 signals every process the user may signal"
    if "1" in targets:
        return "kill 1 signals init (pid 1)"
    return None


def _follow_cd(args: list[str], scope: _Scope) -> None:
    operands = [a for a in args if not a.startswith("-") or a == "-"]
    if not operands:
        scope.cwd = scope.home
        return
    target = operands[0]
    if target == "-" or scope.cwd is None:
        scope.cwd = None
        return
    path = _resolve(target, scope)
    scope.cwd = None if path is None or path.endswith("/*") else path
