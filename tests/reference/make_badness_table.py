"""When ftfy takes text for mojibake, as tables for src/models/clip/clean.rs, measured on
ftfy itself (its behaviour, not its source): written to src/models/clip/generated/badness.rs.

    python3 -m venv /tmp/ftfyenv && /tmp/ftfyenv/bin/pip install ftfy==6.3.1
    /tmp/ftfyenv/bin/python tests/reference/make_badness_table.py

About 20 minutes on 2 cores (most of it the third step). What it measures:

1. `ftfy.badness.is_bad` looks at a few neighbouring characters at a time. Characters are
   put in classes that behave alike: first by which two-character strings they make bad
   (against every character of the single-byte codecs ftfy knows, ASCII and the rest of
   Unicode), then split until every member of a class behaves as the class in every
   three-character context of class representatives (with and without a character
   before, since ftfy anchors some sequences at the start).
2. A table of every three-class window, at the start of a text and later in it (the end
   of the text is a class of its own): is a text with that window bad?
3. The character triples where the class table is wrong (literal sequences ftfy knows),
   as exceptions.
4. The characters after which ftfy leaves a UTF-8 fragment read as Latin-1 or
   Windows-1252 in a text it takes for bad (it decodes the fragment elsewhere).

It also writes tests/fixtures/ftfy_is_bad.json (`write_fixture`, seconds): 10,000 seeded
random strings, mostly of the codecs' characters, with ftfy's verdict on each, which
clean.rs's unit test compares its tables with.
"""

import itertools
import json
import multiprocessing
import random
import os
import re
import unicodedata

import ftfy
import ftfy.badness

is_bad = ftfy.badness.is_bad
CODECS = ["latin-1", "windows-1252", "windows-1251", "windows-1250", "windows-1253",
          "windows-1254", "windows-1257", "iso-8859-2", "mac_roman", "cp437"]
# The character before a window that is not at the start of the text.
BEFORE = "中"


def codec_alphabet():
    chars = set(chr(i) for i in range(0x20, 0x7F)) | set("\t\n")
    for codec in CODECS:
        for b in range(0x80, 0x100):
            try:
                chars.add(bytes([b]).decode(codec))
            except UnicodeDecodeError:
                chars.add(chr(b))
    return sorted(chars)


def pair_classes(alphabet):
    """Step 1a: classes by the bad pairs; every other character is tried against them."""
    matrix = {a: tuple(is_bad(a + b) for b in alphabet) for a in alphabet}
    column = {b: tuple(is_bad(a + b) for a in alphabet) for b in alphabet}
    by_signature = {}
    for c in alphabet:
        by_signature.setdefault((is_bad(c), matrix[c], column[c]), []).append(c)
    groups = list(by_signature.values())
    reps = [g[0] for g in groups]
    signature = [(is_bad(r), tuple(is_bad(r + q) for q in reps), tuple(is_bad(q + r) for q in reps)) for r in reps]
    members = {c: k for k, g in enumerate(groups) for c in g}
    for cp in range(0xA0, 0x30000):
        c = chr(cp)
        if c in members or unicodedata.category(c) in ("Cs", "Cn", "Co"):
            continue
        s = (is_bad(c), tuple(is_bad(c + q) for q in reps), tuple(is_bad(q + c) for q in reps))
        if s not in signature:
            signature.append(s)
            groups.append([])
        k = signature.index(s)
        if groups[k] and groups[k][0].isascii():
            continue  # behaves as an ASCII class: found by the fallback (see klass)
        groups[k].append(c)
        members[c] = k
    return groups, members


def refine(groups, members):
    """Step 1b: whitespace and word characters apart, then split until stable."""
    fallback = members["\t"]  # the class of ASCII punctuation and most of Unicode

    def start_key(c):
        k = members[c]
        if k == fallback:
            if c.isspace():
                return "space"
            if re.match(r"\w", c):
                return "word"
        return k
    current = {}
    for g in groups:
        for c in g:
            current.setdefault(start_key(c), []).append(c)
    current.setdefault("word", []).append(BEFORE)
    current = list(current.values())
    while True:
        reps = [g[0] for g in current] + [""]
        split = {}
        for k, g in enumerate(current):
            for c in g:
                sig = []
                for x, y in itertools.product(reps, repeat=2):
                    for text in (c + x + y, x + c + y, x + y + c):
                        sig.append(is_bad(text))
                        sig.append(is_bad(BEFORE + text))
                split.setdefault((k, tuple(sig)), []).append(c)
        if len(split) == len(current):
            return current
        current = list(split.values())


def window_tables(reps):
    """Step 2: bad windows of three classes (the last, END, is the end of the text)."""
    end = len(reps)
    text_of = reps + [""]
    first, later = set(), set()
    for a, b, c in itertools.product(range(end + 1), repeat=3):
        if (a == end and b != end) or (b == end and c != end):
            continue
        s = text_of[a] + text_of[b] + text_of[c]
        if is_bad(s):
            first.add((a, b, c))
        if is_bad(BEFORE + s):
            later.add((a, b, c))
    return first, later


# What the exception search reads, set before its worker processes fork.
SEARCH = {}


def klass(c):
    """A character's class as clean.rs finds it ("" is the end of the text)."""
    member, end, space, word, other = SEARCH["member"], SEARCH["end"], SEARCH["space"], SEARCH["word"], SEARCH["other"]
    if c == "":
        return end
    if c in member:
        return member[c]
    if c.isspace():
        return space
    return word if re.match(r"\w", c) else other


def exceptions_after(a):
    alphabet, first, later = SEARCH["distinct"], SEARCH["first"], SEARCH["later"]
    found = []
    for later_window, table in ((False, first), (True, later)):
        prefix = (BEFORE if later_window else "") + a
        for b in alphabet + [""]:
            for c in (alphabet + [""]) if b else [""]:
                v = is_bad(prefix + b + c)
                if v != ((klass(a), klass(b), klass(c)) in table):
                    found.append((later_window, a, b, c, v))
    return found


def main():
    alphabet = codec_alphabet()
    groups, members = pair_classes(alphabet)
    classes = refine(groups, members)
    reps = [g[0] for g in classes]
    end = len(reps)
    member = {c: k for k, g in enumerate(classes) for c in g}
    space, word, other = member["\t"], member[BEFORE], member["#"]
    first, later = window_tables(reps)
    # Step 3: exceptions. Characters outside the classes' members stand for their class,
    # as clean.rs looks them up (ASCII by its class's representative).
    distinct = sorted({c for c in member if not c.isascii()} | {r for r in reps if r.isascii()})
    SEARCH.update(member=member, end=end, space=space, word=word, other=other, distinct=distinct, first=first, later=later)
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        found = pool.map(exceptions_after, distinct)
    exceptions = sorted(e for f in found for e in f)

    # Step 4: predecessors after which a fragment stays, for every fragment tried.
    fragments = [("Ã§", "ç"), ("â€™", "’"), ("Ðª", "Ъ"), ("Ã©Ã©", "éé")]
    blockers = "".join(c for c in sorted(member) if all(good not in ftfy.fix_encoding("x" + c + frag + " x") for frag, good in fragments))

    write(classes, member, reps, space, word, other, first, later, exceptions, blockers)


def rust_char(c):
    return "'\\u{%x}'" % ord(c)


def bits(table, end):
    n = (end + 1) ** 3
    words = [0] * ((n + 63) // 64)
    for a, b, c in table:
        i = (a * (end + 1) + b) * (end + 1) + c
        words[i // 64] |= 1 << (i % 64)
    return words


def write(classes, member, reps, space, word, other, first, later, exceptions, blockers):
    end = len(reps)
    out = ["//! Generated by tests/reference/make_badness_table.py from the behaviour of ftfy",
           f"//! {ftfy.__version__}'s `is_bad`: do not edit. See ../clean.rs for how it is read.",
           "",
           f"/// Classes of characters; `END` is the end of the text.",
           f"pub(crate) const END: u8 = {end};",
           f"/// The classes of characters not listed: whitespace, word characters, the rest.",
           f"pub(crate) const SPACE: u8 = {space};",
           f"pub(crate) const WORD: u8 = {word};",
           f"pub(crate) const OTHER: u8 = {other};",
           "",
           "/// The characters with a class of their own, sorted, and each class's representative.",
           "pub(crate) static CLASS_OF: &[(char, u8)] = &["]
    listed = sorted(member)
    for i in range(0, len(listed), 8):
        out.append("    " + " ".join(f"({rust_char(c)}, {member[c]})," for c in listed[i:i + 8]))
    out.append("];")
    out.append(f"pub(crate) static REPRESENTATIVE: [char; {end}] = [" + ", ".join(rust_char(r) for r in reps) + "];")
    for name, table, doc in (("BAD_FIRST", first, "at the start of a text"), ("BAD_LATER", later, "later in a text")):
        words = bits(table, end)
        out.append("")
        out.append(f"/// Bit `(a * (END + 1) + b) * (END + 1) + c`: is a text bad with classes a, b, c {doc}?")
        out.append(f"pub(crate) static {name}: [u64; {len(words)}] = [")
        for i in range(0, len(words), 6):
            out.append("    " + " ".join(f"0x{w:016x}," for w in words[i:i + 6]))
        out.append("];")
    out.append("")
    out.append("/// Windows of characters where the class table is wrong: (later in the text, a, b, c,")
    out.append("/// bad); '\\0' is the end of the text. Sorted.")
    out.append("pub(crate) static EXCEPTIONS: &[(bool, char, char, char, bool)] = &[")
    for later_window, a, b, c, v in exceptions:
        out.append(f"    ({str(later_window).lower()}, {rust_char(a)}, {rust_char(b or chr(0))}, {rust_char(c or chr(0))}, {str(v).lower()}),")
    out.append("];")
    out.append("")
    out.append("/// The characters after which a UTF-8 fragment read as Latin-1 or Windows-1252 stays.")
    out.append('pub(crate) static FRAGMENT_BLOCKERS: &str = "' + "".join(c if c.isalnum() and not c.isascii() else "\\u{%x}" % ord(c) for c in blockers) + '";')
    path = os.path.join(os.path.dirname(__file__), "../../src/models/clip/generated/badness.rs")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(classes)} classes, {len(first)} + {len(later)} bad windows, {len(exceptions)} exceptions, {len(blockers)} fragment blockers to {path}")


def write_fixture():
    rng = random.Random(17)
    alphabet = codec_alphabet()
    anything = [chr(i) for i in range(0x20, 0x30000) if not 0xD800 <= i < 0xE000]
    cases = []
    for _ in range(10000):
        n = rng.randint(1, 12)
        text = "".join(rng.choice(alphabet) if rng.random() < 0.8 else rng.choice(anything) for _ in range(n))
        cases.append([text, is_bad(text)])
    path = os.path.join(os.path.dirname(__file__), "../fixtures/ftfy_is_bad.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"ftfy": ftfy.__version__, "cases": cases}, f, ensure_ascii=False)
    print(f"wrote {len(cases)} strings ({sum(b for _, b in cases)} bad) to {path}")


if __name__ == "__main__":
    main()
    write_fixture()
