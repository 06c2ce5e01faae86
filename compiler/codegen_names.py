"""Names from a model in generated text: one escaping (or mangling) function per output
language, and the file stems of `q35c run`.

Every name that reaches generated code or a listing comes from the model, and the model
is untrusted (docs/security.md): an ONNX output name that closes a C string literal can
add code that `q35c run --target c` compiles and runs. So no printer pastes a name as it
is; it calls the function for the language it writes:

    c_string        a C string literal ("..." included)
    c_comment       text inside a C block comment
    c_identifier    a C identifier (`c_identifiers` for a scope: unique)
    asm_symbol      one operand token of an assembly listing (groq program.s)
    plain_text      a single line of a text report (report.txt) or a terminal line
    html_text       HTML text and attribute values (timeline.html)
    file_stems      file names of tensors (`q35c run` .npy files, the C runner's .raw files)

For names that are already plain identifiers every function returns the name unchanged
(file stems, symbols, text) or as q35c always wrote it (C identifiers: lower case), so
outputs of ordinary models stay byte-identical.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Sequence

C_COMMENT_MAX = 512
"""Characters of a name kept in a comment (the rest is '...'): comments are for people."""
C_IDENTIFIER_MAX = 64
"""Longer C identifiers are cut and get a hash, so any name stays a short identifier."""
STEM_MAX_BYTES = 200
"""UTF-8 bytes of a file stem before its hash: with a `~N` suffix and an extension the
file name stays below the 255-byte limit of common file systems."""


def _c_plain(ch: str) -> bool:
    """Whether a C string literal or comment may hold `ch` as it is: printable ASCII except
    `"`, `\\` and `?` (trigraphs such as `??/`, a backslash, exist under -std=c99)."""
    return " " <= ch <= "~" and ch not in '"\\?'


def _digest(name: str, length: int = 8) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:length]


# -- C --------------------------------------------------------------------------------------


def c_string(text: str) -> str:
    """`text` as a C string literal holding its UTF-8 bytes.

    Printable ASCII stays (except `"`, `\\`, `?`, which get a backslash); every other byte
    becomes a three-digit octal escape, which cannot merge with the characters after it
    (a hex escape would: "\\x41B" is one escape).
    """
    out = []
    for ch in text:
        if _c_plain(ch):
            out.append(ch)
        elif ch in '"\\?':
            out.append("\\" + ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogatepass"))
    return '"' + "".join(out) + '"'


def c_comment(text: str) -> str:
    """`text` made safe inside `/* ... */` on one line.

    Non-printable and non-ASCII characters, `\\` and `?` become visible escapes (`\\n`,
    `\\x07`, `\\xe9`, `\\u202e`), so no line break, line splice or trigraph can occur;
    `*/` and `/*` get a space. Names longer than `C_COMMENT_MAX` are cut, with '...'.
    """
    if len(text) > C_COMMENT_MAX:
        text = text[:C_COMMENT_MAX] + "..."
    out = "".join(ch if _c_plain(ch) or ch == '"' else _visible_escape(ch) for ch in text)
    out = re.sub(r"\*(?=/)", "* ", out)
    return re.sub(r"/(?=\*)", "/ ", out)


def _visible_escape(ch: str) -> str:
    if ch in "\\?":
        return "\\" + ch
    return json.dumps(ch)[1:-1] if ch in "\n\r\t" else f"\\x{ord(ch):02x}" if ord(ch) < 256 \
        else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"


def c_identifier(name: str) -> str:
    """A C identifier for `name` (deterministic; not unique: see `c_identifiers`).

    Characters outside ASCII letters, digits and `_` become `_`, letters are lower-cased,
    a leading digit gets `m_`; an identifier longer than `C_IDENTIFIER_MAX` is cut and
    ends in `_` and 8 hex digits of the name's SHA-256.
    """
    ident = re.sub(r"\W", "_", name, flags=re.ASCII).lower()
    ident = ident if ident and not ident[0].isdigit() else f"m_{ident}"
    if len(ident) > C_IDENTIFIER_MAX:
        ident = f"{ident[:C_IDENTIFIER_MAX - 9]}_{_digest(name)}"
    return ident


def c_identifiers(names: Sequence[str], prefix: str) -> list[str]:
    """Identifiers for the names of one scope (e.g. the inputs of a function): `prefix`,
    the position, then `c_identifier`. The position makes them unique whatever the names
    (`a/b` and `a_b`, `X` and `x` mangle alike)."""
    return [f"{prefix}{i}_{c_identifier(name)}" for i, name in enumerate(names)]


# -- assembly listings and text reports -----------------------------------------------------

_ASM_PLAIN = re.compile(r"[A-Za-z0-9_.:$@/+\-\[\]<>=]+")


def asm_symbol(name: str) -> str:
    """`name` as one operand token of a listing: itself when it holds only letters, digits
    and `_.:$@/+-[]<>=`; else a double-quoted string with C escapes (as GNU as reads
    quoted symbols), so no `;` starts a comment and no line break starts a line."""
    if _ASM_PLAIN.fullmatch(name):
        return name
    return c_string(name)


def plain_text(text: str) -> str:
    """`text` on one line of printable characters: control, format (bidirectional
    overrides), separator and unassigned characters become visible escapes, and `\\`
    is doubled, so the escapes are unambiguous."""
    return "".join(ch if ch != "\\" and (ch == " " or unicodedata.category(ch)[0] not in "CZ")
                   else _visible_escape(ch) for ch in text)


# -- HTML -----------------------------------------------------------------------------------


def html_text(text: str) -> str:
    """`text` for HTML element content or a quoted attribute value: `& < > " '` escaped
    (html.escape), and characters HTML forbids (controls, lone surrogates) as escapes."""
    visible = "".join(_visible_escape(ch) if _html_forbidden(ch) else ch for ch in text)
    return html.escape(visible, quote=True)


def _html_forbidden(ch: str) -> bool:
    code = ord(ch)
    return (code < 0x20 and ch not in "\t\n\r") or 0x7F <= code < 0xA0 \
        or 0xD800 <= code < 0xE000


# -- file names -----------------------------------------------------------------------------


def file_stem(name: str) -> str:
    """A file name (without extension) for tensor `name`, inside the folder it is written to.

    Every character outside letters, digits, `_`, `-` and `.` becomes `_`; a leading `.`
    or `-` (hidden files, options to shell commands) gets a `_` in front, as does the
    empty name; a stem over `STEM_MAX_BYTES` UTF-8 bytes is cut and ends in `-` and 8 hex
    digits of the name's SHA-256. Not unique (`a/b` and `a_b` agree): see `file_stems`.
    """
    stem = "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
    if not stem or stem[0] in ".-":
        stem = "_" + stem
    if len(stem.encode()) > STEM_MAX_BYTES:
        cut = stem.encode()[:STEM_MAX_BYTES - 9].decode(errors="ignore")
        stem = f"{cut}-{_digest(name)}"
    return stem


def _fold(stem: str) -> str:
    """Stems that one file system may treat as the same file: case-insensitive (macOS,
    Windows) and Unicode-normalizing (macOS) ones."""
    return unicodedata.normalize("NFC", stem).casefold()


def file_stems(names: Sequence[str]) -> list[str]:
    """Unique file stems for `names`, in order: each `file_stem`, and when that stem (up to
    case and Unicode normalization) is already taken by an earlier name, `~2`, `~3`, ...
    (`~` never comes from `file_stem`, so the suffixed stems cannot be taken)."""
    taken: set[str] = set()
    stems = []
    for name in names:
        base = stem = file_stem(name)
        n = 1
        while _fold(stem) in taken:
            n += 1
            stem = f"{base}~{n}"
        taken.add(_fold(stem))
        stems.append(stem)
    return stems
