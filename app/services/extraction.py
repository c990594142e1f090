"""Text from files (plain text, Markdown, HTML, PDF), chunking with overlap, and the
lexicon sentiment score and extractive summary of the text-analysis workflow."""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

from pypdf import PdfReader
from pypdf.errors import PyPdfError

#: File kinds by extension.
KINDS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


class UnsupportedFile(ValueError):
    """The file is of a kind that cannot be read as text, or its content is broken."""


@dataclass(frozen=True)
class Extracted:
    """A file's text and title."""

    kind: str
    title: str
    text: str


def kind_of(path: str) -> str:
    """The kind of file ``path`` names, by its extension (UnsupportedFile when unknown)."""
    kind = KINDS.get(PurePath(path).suffix.lower())
    if kind is None:
        raise UnsupportedFile(f"{path}: only {', '.join(sorted(KINDS))} files are read")
    return kind


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _HtmlText(HTMLParser):
    """The visible text of an HTML page: no scripts, styles or templates; blocks on their own lines."""

    SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    BLOCKS = frozenset(
        [
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "tr",
            "td",
            "th",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "pre",
            "blockquote",
        ]
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


_BLANKS = re.compile(r"[ \t\f\v]+")
_MANY_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")
_MD_MARKUP = re.compile(r"^\s{0,3}(#{1,6}|[-*+]|>)\s+|!?\[([^\]]*)\]\([^)]*\)|[*_`]{1,3}", re.MULTILINE)


def _tidy(text: str) -> str:
    lines = (_BLANKS.sub(" ", line).strip() for line in text.splitlines())
    return _MANY_LINES.sub("\n\n", "\n".join(lines)).strip()


def extract(path: str, data: bytes) -> Extracted:
    """The text of a file's bytes, by the kind its name says."""
    kind = kind_of(path)
    title = PurePath(path).stem
    if kind == "pdf":
        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
            meta_title = reader.metadata.title if reader.metadata else None
        except (PyPdfError, ValueError, KeyError, TypeError) as exc:
            raise UnsupportedFile(f"{path}: not a readable PDF ({exc})") from None
        return Extracted(kind, str(meta_title or title), _tidy(text))
    source = _decode(data)
    if kind == "html":
        parser = _HtmlText()
        parser.feed(source)
        parser.close()
        found = _tidy(" ".join(parser.title))
        return Extracted(kind, found or title, _tidy("".join(parser.parts)))
    if kind == "markdown":
        first = next((ln for ln in source.splitlines() if ln.startswith("# ")), None)
        text = _MD_MARKUP.sub(lambda m: m.group(2) or "", source)
        return Extracted(kind, first[2:].strip() if first else title, _tidy(text))
    return Extracted(kind, title, _tidy(source))


def chunk(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """``text`` cut into pieces of at most ``size`` characters, each starting ``overlap``
    characters before the previous one ended, cut at white space where there is some;
    ``(start, piece)`` pairs."""
    if not 0 <= overlap < size:
        raise ValueError("overlap must be at least 0 and below size")
    out: list[tuple[int, str]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind(" ", start + size // 2, end)
            cut = max(cut, text.rfind("\n", start + size // 2, end))
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            out.append((start, piece))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        # begin the next piece at a word boundary inside the overlap
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 and space + 1 < end else nxt
    return out


# --- analysis ----------------------------------------------------------------------------------

#: A small sentiment lexicon (word -> weight in [-3, 3]), in the manner of AFINN.
LEXICON: dict[str, int] = {
    **dict.fromkeys(
        [
            "good",
            "nice",
            "fine",
            "happy",
            "glad",
            "like",
            "liked",
            "likes",
            "enjoy",
            "enjoyed",
            "pleased",
            "helpful",
            "clear",
        ],
        2,
    ),
    **dict.fromkeys(
        [
            "great",
            "excellent",
            "amazing",
            "wonderful",
            "love",
            "loved",
            "superb",
            "fantastic",
            "delighted",
            "perfect",
        ],
        3,
    ),
    **dict.fromkeys(
        [
            "ok",
            "okay",
            "useful",
            "easy",
            "fast",
            "better",
            "improve",
            "improved",
            "success",
            "successful",
            "win",
        ],
        1,
    ),
    **dict.fromkeys(
        [
            "bad",
            "poor",
            "sad",
            "slow",
            "hard",
            "wrong",
            "problem",
            "problems",
            "issue",
            "issues",
            "fail",
            "failed",
        ],
        -2,
    ),
    **dict.fromkeys(
        ["terrible", "awful", "horrible", "hate", "hated", "worst", "disaster", "broken", "useless", "angry"],
        -3,
    ),
    **dict.fromkeys(
        ["worse", "difficult", "confusing", "late", "delay", "delayed", "error", "errors", "bug", "bugs"], -1
    ),
}
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "n't",
        "isn't",
        "wasn't",
        "don't",
    ]
)
_WORD = re.compile(r"[a-z']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "them",
        "his",
        "her",
        "our",
        "your",
        "their",
        "my",
        "me",
        "us",
        "not",
        "no",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "into",
        "over",
        "under",
        "again",
        "then",
        "once",
    ]
)


def sentiment(text: str) -> dict[str, float | int | str]:
    """A lexicon score: the sum of word weights (a negation flips the next two), normalised to
    [-1, 1] by ``score / sqrt(score**2 + 15)`` (VADER's normalisation), and its label."""
    words = _WORD.findall(text.lower())
    total, hits, flip = 0, 0, 0
    for word in words:
        if word in _NEGATIONS or word.endswith("n't"):
            flip = 2
            continue
        weight = LEXICON.get(word)
        if weight is not None:
            total += -weight if flip else weight
            hits += 1
        if flip:
            flip -= 1
    score = total / math.sqrt(total * total + 15) if total else 0.0
    label = "positive" if score >= 0.05 else "negative" if score <= -0.05 else "neutral"
    return {"score": round(score, 4), "label": label, "words": len(words), "matched": hits}


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split after . ! ? before a capital or digit)."""
    flat = " ".join(text.split())
    return [s.strip() for s in _SENTENCE.split(flat) if s.strip()]


def summary(text: str, max_sentences: int = 3) -> str:
    """An extractive summary: the sentences whose words are most frequent in the text, in order."""
    found = sentences(text)
    if len(found) <= max_sentences:
        return " ".join(found)
    freq = Counter(w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2)
    if not freq:
        return " ".join(found[:max_sentences])
    top = max(freq.values())

    def score(sentence: str) -> float:
        words = [w for w in _WORD.findall(sentence.lower()) if w not in _STOP and len(w) > 2]
        return sum(freq[w] / top for w in words) / (len(words) ** 0.5) if words else 0.0

    best = sorted(range(len(found)), key=lambda i: (-score(found[i]), i))[:max_sentences]
    return " ".join(found[i] for i in sorted(best))
