"""Token ids of the original open_clip tokenizer (ftfy.fix_text, HTML unescaping, whitespace
cleaning, CLIP's BPE) for a corpus of label-like strings, written to
tests/fixtures/tokenizer_corpus.json (read by tests/tokenizer.rs). Seeded: the same
corpus every run.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch open_clip_torch
    /tmp/torchenv/bin/python tests/reference/make_tokenizer_corpus.py

Each entry: {"kind", "text", "ids"} with the ids between the start and end tokens (no
padding, not truncated). Kinds "realistic" (what users type or paste, with UTF-8 misread
as Latin-1 or Windows-1252), "mojibake" (UTF-8 misread through the other eight codecs
ftfy knows: Cyrillic, Greek, Central European, Turkish, Baltic, Mac, DOS) and "stress"
(random mixes of Unicode blocks).
"""

import json
import os
import random
import unicodedata

import open_clip

NAMES = ["motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
         "raindrop", "rainy", "shadowed", "snowy", "uncompleted"]
WORDS = ["photo", "image", "picture", "street", "night", "sky", "face", "portrait", "old",
         "scan", "film", "grain", "fog", "mist", "smoke", "rain", "snow", "dust", "glare",
         "shadow", "blur", "shake", "noise", "compression", "artifacts", "dark", "bright",
         "overexposed", "underexposed", "cat", "dog", "tree", "car", "window", "glass"]
PHRASES = [
    "café au lait", "naïve façade", "Straße", "İstanbul", "ǅemal", "Ǉubljana", "ĳsselmeer",
    "crème brûlée", "jalapeño", "São Paulo", "Zürich", "Kraków", "Dvořák", "Ærøskøbing",
    "Łódź", "Reykjavík", "smörgåsbord", "Ελληνικά", "Москва", "Київ", "Беларусь",
    "日本語のテキスト", "東京の夜景", "中文标签", "繁體中文", "한국어 사진", "ภาษาไทย",
    "हिन्दी चित्र", "العربية", "עברית", "Tiếng Việt", "Türkçe ğüşıöç", "Português ção",
    "don't", "it's", "they're", "we'll", "I'm", "you've", "she'd", "O'Brien",
    "fiancée", "résumé", "coöperate", "Ångström", "Øresund", "ß and ẞ", "ﬁne ﬂour",
    "ﬀ ﬃ ﬄ ﬅ ﬆ", "ＦＵＬＬ　ＷＩＤＴＨ", "ｈａｌｆ", "ｶﾀｶﾅ", "№ 5", "½ cup", "x² + y³",
    "™ © ®", "€100 £5 ¥3", "°C", "µm", "Ω ohm", "ℌ ℍ ℕ", "①②③", "Ⅻ",
]
EMOJI = ["😀", "🌧️", "❄️", "🌫️", "📷", "👍🏽", "👩‍💻", "🇫🇷", "❤️", "✨", "🔥", "🐱", "☔", "⛈️"]
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&nbsp;", "&copy;",
            "&eacute;", "&hellip;", "&mdash;", "&rsquo;", "&ldquo;", "&euro;", "&frac12;",
            "&amp;amp;", "&#8217;", "&#x1F600;", "&Eacute;", "&AMP;", "&unknown;", "&", "&#;"]
PUNCT = ["\u2018", "\u2019", "\u201c", "\u201d", "\u201a", "\u201e", "\u2026", "\u2013",
         "\u2014", "\u00ab", "\u00bb", "\u2039", "\u203a", "\u02bc", "\u2032", "\u00b4", "`"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009", "\u3000", "\u200b", "\u2028",
          "\u202f", "\ufeff"]
# Single-byte codecs text is commonly mis-decoded with (UTF-8 bytes read as these).
MOJIBAKE_CODECS = ["latin-1", "windows-1252", "windows-1251", "windows-1250", "mac_roman",
                   "cp437", "iso-8859-2", "windows-1253", "windows-1254", "windows-1257"]
# Unicode blocks for the stress corpus: (first, last) code points.
BLOCKS = [(0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x250, 0x2AF),
          (0x2B0, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F),
          (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x10A0, 0x10FF),
          (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F),
          (0x2150, 0x218F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2500, 0x257F),
          (0x2600, 0x26FF), (0x2700, 0x27BF), (0x3000, 0x303F), (0x3040, 0x309F),
          (0x30A0, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAFFF), (0xFB00, 0xFB4F),
          (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F),
          (0x1F900, 0x1F9FF), (0x80, 0x9F), (0x0, 0x1F)]


def mojibake(rng, text):
    """`text` as UTF-8 bytes decoded with a wrong single-byte codec (once or twice), and
    whether only Latin-1 and Windows-1252 were used (the common case)."""
    western = True
    for _ in range(rng.choice([1, 1, 1, 2])):
        codec = rng.choice(MOJIBAKE_CODECS)
        try:
            text = text.encode("utf-8").decode(codec)
        except UnicodeDecodeError:
            codec = "latin-1"
            text = text.encode("utf-8").decode(codec)
        western &= codec in ("latin-1", "windows-1252")
    return text, western


def realistic(rng):
    out = []
    out += NAMES + [n.upper() for n in NAMES] + [n.replace("-", " ") for n in NAMES]
    out += PHRASES + EMOJI + ENTITIES + PUNCT
    for p in PHRASES:
        out.append(unicodedata.normalize("NFD", p))
        out.append(unicodedata.normalize("NFKD", p))
        out.append(p.upper())
    for _ in range(500):
        words = rng.sample(WORDS, rng.randint(1, 5))
        extra = rng.choice([[], [rng.choice(PHRASES)], [rng.choice(EMOJI)], [rng.choice(NAMES)]])
        parts = words + extra
        rng.shuffle(parts)
        text = ""
        for i, part in enumerate(parts):
            if i:
                text += rng.choice([" ", " ", " ", ", ", rng.choice(SPACES), rng.choice(PUNCT), " " + rng.choice(ENTITIES) + " "])
            text += part
        if rng.random() < 0.3:
            q = rng.choice(PUNCT)
            text = q + text + q
        if rng.random() < 0.1:
            text = rng.choice(SPACES) + text + rng.choice(SPACES)
        out.append(text)
    # Mojibake of phrases with accents, curly quotes, dashes and emoji.
    sources = PHRASES + [f"don\u2019t {w}" for w in WORDS[:10]] + [f"{w} \u2014 {p}" for w, p in zip(WORDS, PHRASES)] + EMOJI
    for _ in range(600):
        text = rng.choice(sources)
        if rng.random() < 0.5:
            text = f"{rng.choice(WORDS)} {text} {rng.choice(WORDS)}"
        text, western = mojibake(rng, text)
        out.append(text if western else ("mojibake", text))
    # Partly broken text: one mojibake word inside correct text.
    for _ in range(150):
        good = rng.choice(PHRASES)
        bad, western = mojibake(rng, rng.choice(PHRASES))
        text = f"{good} {bad}" if rng.random() < 0.5 else f"{bad} {rng.choice(WORDS)} {good}"
        out.append(text if western else ("mojibake", text))
    # Control characters, BOMs, terminal escapes, HTML-ish text, special-token look-alikes.
    for _ in range(100):
        w = rng.sample(WORDS, 3)
        c = rng.choice(["\x00", "\x07", "\x1b[31m", "\x1b[0m", "\ufeff", "\x7f", "\x85", "\x92", "\x96", "\u200e", "\u202e", "\ufffd", "\x1c", "\x0b", "\x0c"])
        out.append(f"{w[0]}{c}{w[1]} {w[2]}")
    out += ["<b>bold</b> &amp; text", "a < b &amp; c", "<start_of_text>", "<end_of_text> rainy",
            "hazy<|endoftext|>", "x" * 300, " ".join(["rainy"] * 100), "", " ", "\n\n",
            "I\u0307stanbul", "\u0130", "ΣΑΣ", "ὈΔΥΣΣΕΎΣ", "ﬅ", "ǈ", "Ǳ", "ŉ", "ẞ"]
    return out


def stress(rng):
    out = []
    for _ in range(1000):
        text = ""
        for _ in range(rng.randint(1, 4)):
            lo, hi = rng.choice(BLOCKS)
            text += "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))
            text += rng.choice(["", " ", " ", "-", "\n"])
        out.append(text)
    return out


def main():
    rng = random.Random(20261201)
    entries = [t if isinstance(t, tuple) else ("realistic", t) for t in realistic(rng)] + [("stress", t) for t in stress(rng)]
    tok = open_clip.get_tokenizer("ViT-B-32")
    out = []
    for kind, text in entries:
        # Surrogates cannot be stored as UTF-8 JSON (and no Rust string holds them).
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            continue
        ids = tok.encode(text)
        out.append({"kind": kind, "text": text, "ids": ids})
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizer_corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in out) + "\n]\n")
    kinds = {k: sum(e["kind"] == k for e in out) for k in ("realistic", "mojibake", "stress")}
    print(f"wrote {len(out)} texts ({kinds}) to {path}")


if __name__ == "__main__":
    main()
