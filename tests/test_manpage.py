"""helper/wire.h and man/brokerpkg-helper.8 name the same protocol words.

wire.h names every word of the protocol (``#define NAME "word"``, grouped by prefix:
CMD_ commands, ARG_ argument names, VALUE_ argument values, PROTO_ protocols, R_ replies,
RA_ reply argument names, TCP_FLAGS_ their values, REASON_ reasons, FEATURE_ features,
SUPPORT_ check-support values, HELPER_VERSION).  Checked here, with no compiler:

1. every word the helper can print is in the man page, where the page lists words of
   its kind (a reply among the replies, a reason among the reasons, ...);
2. every word the man page lists as a reply, reason, feature or argument is in wire.h;
3. no other source file of the helper spells a protocol word as a string literal of its
   own, so the words read from wire.h are all the words the helper has.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "helper"
MAN_PAGE = REPO / "man" / "brokerpkg-helper.8"
WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
# Lone lowercase words in the helper's sources that are not protocol words (file, literal).
NOT_PROTOCOL_WORDS = {
    ("main.c", "brokerpkg-helper"): "its own name, in its message on standard error",
    **{
        ("privilege.c", call): "a system call's name, in a failed drop's message on stderr"
        for call in ("setgroups", "setresgid", "setresuid", "capset")
    },
    **{
        ("ratestate.c", call): "a system call's name, in the rate-limit state's message on stderr"
        for call in ("open", "fstat", "ftruncate", "mmap")
    },
}


# --------------------------------------------------------------------------- wire.h


def wire_words() -> dict[str, str]:
    """wire.h's string constants, NAME -> word (aliases of other constants resolved).

    Raises:
        AssertionError: a constant names no string or an unknown constant.
    """
    raw: dict[str, str] = {}
    for line in (HELPER / "wire.h").read_text().splitlines():
        found = re.match(
            r"#define\s+([A-Z][A-Z0-9_]*)\s+(\"[^\"]*\"|[A-Z][A-Z0-9_]*)\s*(/\*|$)", line
        )
        if found:
            raw[found[1]] = found[2]
    words: dict[str, str] = {}
    for name, defined in raw.items():
        value, seen = defined, {name}
        while not value.startswith('"'):
            assert value in raw and value not in seen, f"wire.h: {name} -> {value}"
            seen.add(value)
            value = raw[value]
        words[name] = value.strip('"')
    return words


def by_prefix(words: dict[str, str], prefix: str) -> set[str]:
    return {word for name, word in words.items() if name.startswith(prefix)}


@pytest.fixture(scope="module")
def wire() -> dict[str, str]:
    return wire_words()


# --------------------------------------------------------------------------- the man page


def plain(roff: str) -> str:
    """Roff text with font changes and escapes taken out."""
    text = re.sub(r"\\f[BIRP]", "", roff)
    return text.replace("\\-", "-").replace("\\e", "\\").replace("\\(em", "-")


def sections(page: str) -> dict[str, list[str]]:
    """``.SH`` sections of the page: title -> its lines (roff, escapes taken out)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in plain(page).splitlines():
        if line.startswith(".SH "):
            current = found.setdefault(line[4:].strip().strip('"'), [])
        else:
            current.append(line)
    return found


def subsection(lines: list[str], title: str) -> list[str]:
    """The lines of ``.SS title`` up to the next ``.SS``."""
    start = lines.index(f".SS {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(".SS ")), len(lines))
    return lines[start:end]


def table_rows(lines: list[str]) -> list[list[str]]:
    """The rows (tab-separated cells) of the first table in ``lines``, header left out."""
    start = lines.index(".TS") + 1
    end = lines.index(".TE", start)
    rows = [line.split("\t") for line in lines[start:end] if "\t" in line]
    assert rows and rows[0][0] == "NAME", rows
    return rows[1:]


def bold_lines(lines: list[str]) -> list[str]:
    return [line[3:].strip() for line in lines if line.startswith(".B ")]


class ManPage:
    """The words man/brokerpkg-helper.8 lists, by kind."""

    def __init__(self, path: Path) -> None:
        self.text = plain(path.read_text())
        parts = sections(path.read_text())
        replies = parts["REQUEST FORMAT"] + parts["REPLIES"]
        # ".B TOKEN word [NAME VALUE]..." (and ".B 0 word"): a reply and its words
        tags = [line.split() for line in bold_lines(replies) if re.match(r"(TOKEN|0) ", line)]
        self.replies = {tag[1] for tag in tags}
        self.reply_arguments = {
            word for tag in tags for word in re.findall(WORD, " ".join(tag[2:]))
        }
        self.reasons = self._reasons(parts["REPLIES"])
        commands = parts["COMMANDS"]
        self.commands = {line[4:].strip() for line in commands if line.startswith(".SS ")}
        self.arguments = {row[0] for row in table_rows(subsection(commands, "send-probe"))}
        feature_rows = table_rows(subsection(commands, "check-support"))
        self.features = {name.strip() for row in feature_rows for name in row[0].split(",")} - {
            "anything else"
        }
        self.support_values = {
            word for row in feature_rows for word in re.findall(r"[\w.-]+", row[1])
        }
        self.check_support_lines = subsection(commands, "check-support")
        # EXTENSIONS, details: ".B reply-ttl N", ".B tcp-flags syn-ack|rst", ...
        pairs = [
            line.split()
            for line in bold_lines(parts["EXTENSIONS"])
            if re.fullmatch(rf"(?:{WORD} (?:N|{WORD}(?:\|{WORD})+) ?)+", line)
        ]
        self.detail_names = {pair[i] for pair in pairs for i in range(0, len(pair), 2)}
        self.detail_values = {
            value for pair in pairs for v in pair[1::2] if v != "N" for value in v.split("|")
        }

    @staticmethod
    def _reasons(lines: list[str]) -> set[str]:
        """The reasons REPLIES lists: the tags of its list of WHYs (.RS .. .RE), and
        the lists of hyphenated words after a colon ("it names the rule: a, b or c")."""
        start = lines.index(".RS")
        block = lines[start : lines.index(".RE", start)]
        tags = {line for line in bold_lines(block) if re.fullmatch(WORD, line)}
        prose = " ".join(line for line in lines if not line.startswith("."))
        listed = set()
        for found in re.finditer(rf": ((?:{WORD}(?:, | or ))+{WORD})", prose):
            listed |= {word for word in re.split(r", | or ", found[1]) if "-" in word}
        return tags | listed

    def has_word(self, word: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", self.text) is not None


@pytest.fixture(scope="module")
def page() -> ManPage:
    return ManPage(MAN_PAGE)


# --------------------------------------------------------------------------- 1 and 2


def test_the_replies_are_the_same(wire: dict[str, str], page: ManPage) -> None:
    assert by_prefix(wire, "R_") == page.replies


def test_the_reasons_are_the_same(wire: dict[str, str], page: ManPage) -> None:
    assert by_prefix(wire, "REASON_") == page.reasons


def test_the_features_are_the_same(wire: dict[str, str], page: ManPage) -> None:
    assert by_prefix(wire, "FEATURE_") | by_prefix(wire, "PROTO_") == page.features


def test_the_commands_and_arguments_are_the_same(wire: dict[str, str], page: ManPage) -> None:
    assert by_prefix(wire, "CMD_") == page.commands
    assert by_prefix(wire, "ARG_") - {wire["ARG_FEATURE"]} == page.arguments
    synopsis = f"TOKEN {wire['CMD_CHECK_SUPPORT']} {wire['ARG_FEATURE']} NAME"
    assert synopsis in page.check_support_lines
    assert all(
        page.has_word(word) for word in by_prefix(wire, "VALUE_") | by_prefix(wire, "PROTO_")
    )


def test_the_reply_arguments_are_the_same(wire: dict[str, str], page: ManPage) -> None:
    names = by_prefix(wire, "RA_")
    assert names == page.reply_arguments | page.detail_names
    assert by_prefix(wire, "TCP_FLAGS_") == page.detail_values


def test_every_check_support_value_is_in_the_table(wire: dict[str, str], page: ManPage) -> None:
    values = by_prefix(wire, "SUPPORT_") | {wire["HELPER_VERSION"]}
    assert values <= page.support_values, values - page.support_values


def test_the_page_holds_every_word_the_helper_can_print(
    wire: dict[str, str], page: ManPage
) -> None:
    printed = set()
    for prefix in ("R_", "RA_", "TCP_FLAGS_", "REASON_", "SUPPORT_"):
        printed |= by_prefix(wire, prefix)
    printed.add(wire["HELPER_VERSION"])
    assert printed and not {word for word in printed if not page.has_word(word)}


# --------------------------------------------------------------------------- 3


def string_literals(source: str) -> list[str]:
    """The string literals of C source (comments, #include lines and chars left out)."""
    source = re.sub(r"/\*.*?\*/|//[^\n]*", " ", source, flags=re.DOTALL)
    source = re.sub(r"^\s*#\s*include[^\n]*", " ", source, flags=re.MULTILINE)
    source = re.sub(r"'(?:[^'\\\n]|\\.)'", " ", source)
    return re.findall(r'"((?:[^"\\\n]|\\.)*)"', source)


def test_no_source_file_spells_a_protocol_word_of_its_own(wire: dict[str, str]) -> None:
    words = set(wire.values())
    found: dict[str, list[str]] = {}
    sources = sorted(HELPER.glob("*.c")) + sorted(
        path for path in HELPER.glob("*.h") if path.name != "wire.h"
    )
    assert len(sources) > 10
    for path in sources:
        for literal in string_literals(path.read_text()):
            lone_word = re.fullmatch(WORD, literal) is not None
            if (lone_word or literal in words) and (path.name, literal) not in NOT_PROTOCOL_WORDS:
                found.setdefault(path.name, []).append(literal)
    assert not found, f"protocol words spelt outside wire.h (name them there): {found}"


def test_the_literal_scan_sees_what_it_looks_for() -> None:
    sample = (
        '#include "wire.h"\n/* "comment" */ return "token-in-use"; x = \'"\';\n'
        'append(line, &used, "%d " R_REPLY, "a\\"b"); // "ignored"\n'
    )
    assert string_literals(sample) == ["token-in-use", "%d ", 'a\\"b']
