"""Token ids of the original open_clip tokenizer for a list of texts that exercise the
tokenizer's corners, written to tests/fixtures/tokenizer.json (the tokenizer test reads it).

    /tmp/torchenv/bin/python tests/reference/make_tokenizer_fixture.py
"""

import json
import os

import open_clip

TEXTS = [
    "motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
    "raindrop", "rainy", "shadowed", "snowy", "uncompleted",
    "A photo of a Cat.",
    "Hello, world! (test) [x] {y} <z> @#$%^&*_+=|\\/~`",
    "2024 3.14159 1,000,000 0.5x 16:9",
    "it's don't we'll I'm they're you've she'd O'Brien",
    "café naïve Ünïcödé façade 日本語のテキスト 😀 Ελληνικά",
    "\u201cquoted\u201d and \u2018single\u2019",
    "wait\u2026 what",
    "&amp; &lt;b&gt; &quot;x&quot; &#39;y&#39;",
    "  many   spaces\tand\nnewlines  ",
    "",
    " ".join(["a blurry photo of a rainy street at night with strong noise"] * 12),
]


def main():
    tokens = open_clip.tokenize(TEXTS)
    out = [{"text": t, "ids": ids.tolist()} for t, ids in zip(TEXTS, tokens)]
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(out)} texts to {path}")


if __name__ == "__main__":
    main()
